#!/usr/bin/env bash
# Builds the Linux bundle dist/medfedchain/ from packaging/medfedchain.spec and packs it, with the
# per-user desktop entry, into dist/medfedchain-VERSION-linux-x86_64.tar.gz.
#   bash packaging/linux/build.sh            build with .venv/bin/python (or $PYTHON)
# Needs the `bundle` extra: pip install -c packaging/constraints.txt -e ".[bundle]"
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
PYTHON="${PYTHON:-$root/.venv/bin/python}"
version="$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
name="medfedchain-$version-linux-x86_64"

"$PYTHON" -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
  packaging/medfedchain.spec

# TensorFlow's libraries carry about 220 MB of symbol tables; the dynamic symbols it links by stay.
# (Not every library: strip breaks the auditwheel-patched ones of numpy and scipy.)
strip --strip-unneeded dist/medfedchain/_internal/tensorflow/libtensorflow_cc.so.* \
  dist/medfedchain/_internal/tensorflow/libtensorflow_framework.so.*

stage="build/$name"
rm -rf "$stage"
mkdir -p "$stage"
cp -a dist/medfedchain "$stage/medfedchain"
cp packaging/linux/install-desktop-entry.sh packaging/linux/medfedchain.desktop.in "$stage/"
cp resources/icons/app.svg "$stage/medfedchain.svg"
tar -C build -czf "dist/$name.tar.gz.tmp" "$name"
mv "dist/$name.tar.gz.tmp" "dist/$name.tar.gz"
rm -rf "$stage"
echo "dist/$name.tar.gz" >&2
