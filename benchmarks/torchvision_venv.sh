#!/usr/bin/env bash
# A separate venv where torchvision imports, for the side-by-side figures of
# benchmarks/int8_study.py --compare-torchvision. Never a dependency of effseg: the package's
# own venv (.venv) stays without torchvision.
#
#   bash benchmarks/torchvision_venv.sh [VENV]        # default VENV: /tmp/effseg-tv-venv
#   VENV/bin/python benchmarks/int8_study.py --compare-torchvision
#
# pip takes torch 2.14.1 and torchvision 0.29.1 from this machine's package index (on disk).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/effseg-tv-venv}
PYTHON=${PYTHON:-python3}
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
# effseg itself (editable) with its deploy, int8-torch and openvino extras; torch is already satisfied above.
"$VENV/bin/python" -m pip install -q -e ".[deploy,int8-torch,openvino]"
"$VENV/bin/python" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
