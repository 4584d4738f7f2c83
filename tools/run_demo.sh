#!/usr/bin/env bash
# Set up .venv/ (tools/setup_env.sh; a no-op when up to date) and run the main demo job.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONWARNINGS=ignore::UserWarning
exec .venv/bin/python demo/backbone_demo.py "$@"
