#!/usr/bin/env bash
# Installs MedFedChain (packaging/install.sh) and creates ~/Applications/MedFedChain.app, a
# launcher for the virtual environment. Double-click in Finder or run from a terminal.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bash "$root/packaging/install.sh"
app="$HOME/Applications/MedFedChain.app"
mkdir -p "$app/Contents/MacOS"
cat > "$app/Contents/MacOS/MedFedChain" <<LAUNCH
#!/usr/bin/env bash
cd "$root" && exec "$root/.venv/bin/python" "$root/main.py" gui
LAUNCH
chmod +x "$app/Contents/MacOS/MedFedChain"
cat > "$app/Contents/Info.plist" <<PLIST
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
  <key>CFBundleName</key><string>MedFedChain</string>
  <key>CFBundleExecutable</key><string>MedFedChain</string>
  <key>CFBundleIdentifier</key><string>org.medfedchain.app</string>
  <key>CFBundlePackageType</key><string>APPL</string>
</dict></plist>
PLIST
echo "MedFedChain installed: $app"
