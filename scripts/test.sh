#!/usr/bin/env bash
# Quick start 2: install with test extras, then run the fast test suite (CPU, a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1
"${PYTHON:-python3}" -m pytest -q "$@"
