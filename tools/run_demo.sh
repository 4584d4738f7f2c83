#!/usr/bin/env bash
# The main demo job on a fresh machine (CPU is enough): set up .venv/ (tools/setup_env.sh; a
# no-op when up to date), then run tools/run_demo.py, which writes the demo data under data/demo/
# if it is missing and runs four stages, one line each with its time and result:
#   [1/4] dense teacher: UPerNet + Swin (configs/demo/upernet_swin_dense_demo.py);
#   [2/4] dynamic backbone: UPerNet + DynamicSwin with sparsity training and distillation from
#         the teacher (configs/demo/upernet_dvit_swin_demo.py), its dense vs dynamic FLOPs;
#   [3/4] dense reference: the teacher trained as long again (as long as the whole model);
#   [4/4] whole model: the decode head sparse too, started from the teacher and distilled from
#         the dense reference (configs/demo/upernet_dvit_swin_whole_demo.py), its FLOPs;
# each trained, then evaluated with tools/test.py; then a summary. Run again, it skips finished
# stages and resumes an interrupted one from its last checkpoint; --fresh redoes every stage.
# Other arguments go to the dynamic model's tools/train.py, e.g. --cfg-options
# model.student.backbone.keep_ratios="(0.9,0.7,0.5)" (tools/run_demo.py --help: --iters, --out).
# Threads: OMP_NUM_THREADS if set, torch's default (one per core) otherwise; on a machine busy
# with other work fewer threads can be much faster (README.md, Quick start).
# PYTHON=/path/to/python runs the job with that interpreter instead of setting up .venv/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  bash "$ROOT/tools/setup_env.sh"
  PYTHON=$ROOT/.venv/bin/python
fi
exec "$PYTHON" "$ROOT/tools/run_demo.py" "$@"
