#!/usr/bin/env bash
# Quick start 1: install, then edit the bundled example photo with the bundled model → demo.png
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1
"${PYTHON:-python3}" -m cli.main demo -o demo.png --force
