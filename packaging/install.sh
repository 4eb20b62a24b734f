#!/usr/bin/env bash
# Installs MedFedChain into ./.venv with the locked versions of packaging/constraints.txt.
#   bash packaging/install.sh          the app
#   bash packaging/install.sh --test   the app, the test tools, PyInstaller and the anvil node for ledger tests
# Re-running it is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && \
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
      PYTHON="$candidate"; break
    fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "MedFedChain needs Python 3.11 (TensorFlow 2.21 and tf-encrypted 0.9.1 are built for it)." >&2
  exit 2
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"

extras=""
if [ "${1:-}" = "--test" ]; then
  extras="[test,bundle]"  # the tests build and smoke-test the Linux bundle too (tests/test_bundle.py)
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c packaging/constraints.txt -e ".${extras}"

if [ "${1:-}" = "--test" ]; then
  # The ledger's client tests also run against a real JSON-RPC node: anvil, from the npm registry.
  .venv/bin/python -c "from ledger.anvil import ensure_anvil; print(ensure_anvil())" >/dev/null
fi
echo "MedFedChain is installed in $(pwd)/.venv" >&2
