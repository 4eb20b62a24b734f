#!/usr/bin/env bash
# Installs MedFedChain (packaging/install.sh) and adds it to the desktop's application menu.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bash "$root/packaging/install.sh"
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
mkdir -p "$apps"
sed -e "s#@ROOT@#$root#g" "$root/packaging/linux/medfedchain.desktop.in" > "$apps/medfedchain.desktop.tmp"
mv "$apps/medfedchain.desktop.tmp" "$apps/medfedchain.desktop"
echo "MedFedChain added to the application menu ($apps/medfedchain.desktop)."
