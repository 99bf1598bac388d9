#!/usr/bin/env bash
# Build the project's virtualenv from scratch: torch==2.13.0 first (a CPU wheel here; a bare "torch"
# would pull a multi-GB CUDA build), then vqaudio with its dev extras.
#   bash tools/venv.sh [VENV_DIR]       (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
python3 -m venv --clear "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q torch==2.13.0
"$venv/bin/python" -m pip install -q -e ".[dev]"
echo "virtualenv ready: $venv"
