#!/usr/bin/env bash
# Create .venv/ in the checkout with polypot, every backend and the test tools installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# The installed backends take about 4.1 GB; pip's download cache would hold another copy
# of every wheel it fetches, so it is off.
free_mb=$(df -Pm . | awk 'NR == 2 {print $4}')
if [ "${free_mb:-0}" -lt 6000 ]; then
    echo "scripts/setup.sh: only ${free_mb} MB free in $(pwd); installing every backend" \
        "needs about 6000 MB (4.1 GB in .venv/ plus downloads)" >&2
fi
.venv/bin/python -m pip install --quiet --no-cache-dir --upgrade pip
.venv/bin/python -m pip install --quiet --no-cache-dir -c requirements/constraints.txt \
    -e ".[all,test]"
echo "polypot installed in $(pwd)/.venv with backends:"
.venv/bin/python -c "from polypot.backend.registry import available; print('  ' + ', '.join(available()))"
