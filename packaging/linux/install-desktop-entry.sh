#!/usr/bin/env bash
# Adds MedFedChain to this user's application menu (no root needed).
#   in an unpacked release (beside medfedchain/medfedchain): the bundle is used where it lies;
#   in a source checkout: packaging/install.sh first, then .venv/bin/python main.py.
#   --uninstall removes the menu entry and icon (the data directory is left alone).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
apps="$data/applications"
icons="$data/icons/hicolor/scalable/apps"
if [ "${1:-}" = "--uninstall" ]; then
  rm -f "$apps/medfedchain.desktop" "$icons/medfedchain.svg"
  echo "MedFedChain removed from the application menu."
  exit 0
fi
if [ -x "$here/medfedchain/medfedchain" ]; then
  exec_cmd="$here/medfedchain/medfedchain"; dir="$here"; icon_src="$here/medfedchain.svg"
  template="$here/medfedchain.desktop.in"
else
  root="$(cd "$here/../.." && pwd)"
  bash "$root/packaging/install.sh"
  exec_cmd="$root/.venv/bin/python $root/main.py"; dir="$root"; icon_src="$root/resources/icons/app.svg"
  template="$root/packaging/linux/medfedchain.desktop.in"
fi
mkdir -p "$apps" "$icons"
cp "$icon_src" "$icons/medfedchain.svg"
sed -e "s#@EXEC@#$exec_cmd#g" -e "s#@DIR@#$dir#g" -e "s#@ICON@#$icons/medfedchain.svg#g" \
  "$template" > "$apps/medfedchain.desktop.tmp"
mv "$apps/medfedchain.desktop.tmp" "$apps/medfedchain.desktop"
echo "MedFedChain added to the application menu ($apps/medfedchain.desktop)."
