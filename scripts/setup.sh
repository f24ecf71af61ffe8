#!/usr/bin/env bash
# Create .venv at the repository root and install gapbench with its dev tools.
# torch==2.13.0 first: a CPU wheel that lies on this machine's disk (a bare `torch`
# requirement would pull a multi-GB CUDA build). Idempotent: re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[dev,ray]"
