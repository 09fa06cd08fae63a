#!/usr/bin/env bash
# Create .venv/ in the checkout with polypot, every backend and the test tools installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c requirements/constraints.txt -e ".[all,test]"
echo "polypot installed in $(pwd)/.venv with backends:"
.venv/bin/python -c "from polypot.backend.registry import available; print('  ' + ', '.join(available()))"
