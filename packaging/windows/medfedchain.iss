; Inno Setup script of the MedFedChain installer for Windows (Inno Setup 6).
;   pyinstaller --noconfirm --distpath dist --workpath build\pyinstaller packaging\medfedchain.spec
;   iscc /DVersion=0.1.0 packaging\windows\medfedchain.iss
; Installs the one-folder bundle dist\medfedchain\ per user (no administrator rights) into
; %LOCALAPPDATA%\Programs\MedFedChain, with a Start-menu entry and an uninstaller. The data directory
; (%LOCALAPPDATA%\MedFedChain: database, keys, ledger, models) is not the install folder
; and the uninstaller never touches it.

#ifndef Version
  #define Version "0.1.0"
#endif

[Setup]
AppId={{6C1B3F0E-5E1A-4C43-9B8B-2E0A6D6F1C11}
AppName=MedFedChain
AppVersion={#Version}
AppPublisher=MedFedChain
DefaultDirName={localappdata}\Programs\MedFedChain
DefaultGroupName=MedFedChain
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=medfedchain-{#Version}-windows-x86_64-setup
SetupIconFile=..\..\build\medfedchain.ico
UninstallDisplayIcon={app}\medfedchain.exe
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern

[Files]
Source: "..\..\dist\medfedchain\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{userprograms}\MedFedChain"; Filename: "{app}\medfedchainw.exe"; Parameters: "gui"; WorkingDir: "{app}"; Comment: "Federated medical AI with SMPC verification and a permissioned ledger"
Name: "{userprograms}\Uninstall MedFedChain"; Filename: "{uninstallexe}"

[Run]
Filename: "{app}\medfedchainw.exe"; Parameters: "gui"; Description: "Start MedFedChain"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; Only the install folder: the bundle may leave __pycache__ or the compiled loopback shim there.
Type: filesandordirs; Name: "{app}"
