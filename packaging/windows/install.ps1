# Installs MedFedChain into .venv (Python 3.11 via the py launcher) and adds a Start Menu shortcut.
#   powershell -ExecutionPolicy Bypass -File packaging\windows\install.ps1 [-Test]
param([switch]$Test)
$ErrorActionPreference = "Stop"
$Root = Resolve-Path (Join-Path $PSScriptRoot "..\..")
Set-Location $Root

& py -3.11 -c "import sys" 2>$null
if ($LASTEXITCODE -ne 0) { Write-Error "MedFedChain needs Python 3.11 (install it from python.org)."; exit 2 }
if (-not (Test-Path ".venv\Scripts\python.exe")) { & py -3.11 -m venv .venv }
& .venv\Scripts\python.exe -m pip install --quiet --upgrade "pip>=24"
$Target = if ($Test) { ".[test]" } else { "." }
& .venv\Scripts\python.exe -m pip install --quiet -c packaging\constraints.txt -e $Target
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }

$Shell = New-Object -ComObject WScript.Shell
$Link = $Shell.CreateShortcut((Join-Path ([Environment]::GetFolderPath("Programs")) "MedFedChain.lnk"))
$Link.TargetPath = (Join-Path $Root ".venv\Scripts\pythonw.exe")
$Link.Arguments = "`"$(Join-Path $Root 'main.py')`" gui"
$Link.WorkingDirectory = "$Root"
$Link.Description = "Federated medical AI with SMPC verification and a permissioned ledger"
$Link.Save()
Write-Host "MedFedChain installed; start it from the Start Menu."
