#!/usr/bin/env bash
# Builds dist/MedFedChain.app from packaging/medfedchain.spec and packs it into
# dist/medfedchain-VERSION-macos-ARCH.dmg (drag the app onto the Applications link). macOS only.
#   bash packaging/macos/build-dmg.sh        with .venv/bin/python (or $PYTHON)
# The data directory (~/Library/Application Support/MedFedChain) is outside the app: deleting the
# app leaves it.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
PYTHON="${PYTHON:-$root/.venv/bin/python}"
version="$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
name="medfedchain-$version-macos-$(uname -m)"

"$PYTHON" -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
  packaging/medfedchain.spec

stage="build/dmg"
rm -rf "$stage"
mkdir -p "$stage"
cp -R dist/MedFedChain.app "$stage/"
ln -s /Applications "$stage/Applications"
rm -f "dist/$name.dmg"
hdiutil create -volname "MedFedChain $version" -srcfolder "$stage" -ov -format UDZO "dist/$name.dmg"
rm -rf "$stage"
echo "dist/$name.dmg" >&2
