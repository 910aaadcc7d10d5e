#!/usr/bin/env bash
# Install ddim-edit (editable, with the test, web, browser and docs extras) into the current Python.
# torch: an installed one is kept; where an NVIDIA GPU is visible the normal (CUDA) build is
# installed; otherwise the CPU build, so a CPU machine never downloads GBs of CUDA libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "torch>=2.1"
  else
    "$PY" -m pip install --quiet "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu --retries 1 --timeout 30 \
      || "$PY" -m pip install --quiet "torch==2.13.0"
  fi
fi
# web: `ddim-edit serve` and its tests (gradio, gradio_client); browser: playwright for the
# real-browser test (it drives the system's Chromium; `playwright install` is never run);
# docs: MkDocs with Material, mkdocstrings and mkdocs-click (the docs site and its build test).
"$PY" -m pip install --quiet -e ".[test,web,browser,docs]"
