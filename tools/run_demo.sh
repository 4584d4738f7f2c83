#!/usr/bin/env bash
# The main demo job on a fresh machine (CPU is enough):
#   1. set up .venv/ (tools/setup_env.sh; a no-op when up to date);
#   2. write the demo ADE20K-layout and COCO-format data under data/demo/ if missing;
#   3. train the dense teacher, UPerNet + Swin (configs/demo/upernet_swin_dense_demo.py);
#   4. train UPerNet + DynamicSwin with sparsity training and distillation from that teacher
#      (configs/demo/upernet_dvit_swin_demo.py, which inherits configs/upernet_dvit_swin.py);
#   5. evaluate the saved checkpoint with tools/test.py, count dense vs dynamic backbone FLOPs on
#      the validation images, and print where everything is.
# Extra arguments go to the dynamic model's tools/train.py, e.g. --cfg-options
# model.student.backbone.keep_ratios="(0.9,0.7,0.5)".
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONWARNINGS=ignore::UserWarning
PYTHON=.venv/bin/python
DENSE=configs/demo/upernet_swin_dense_demo.py
CONFIG=configs/demo/upernet_dvit_swin_demo.py
DENSE_DIR=work_dirs/upernet_swin_dense_demo     # the teacher path the demo config names
WORK_DIR=work_dirs/upernet_dvit_swin_demo
start=$(date +%s)

if [ ! -d data/demo/ade20k/images/training ] || [ ! -f data/demo/coco/annotations/instances_val2017.json ]; then
  "$PYTHON" tools/dataset_converters/make_demo_data.py --out data/demo
fi

echo "==> [1/3] dense teacher: $DENSE"
"$PYTHON" tools/train.py "$DENSE" --work-dir "$DENSE_DIR"
echo "==> [2/3] dynamic model with sparsity training: $CONFIG"
"$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
checkpoint=$(cat "$WORK_DIR/last_checkpoint")
echo "==> [3/3] evaluation of $checkpoint"
"$PYTHON" tools/test.py "$CONFIG" "$checkpoint" --work-dir "$WORK_DIR/test" | tee "$WORK_DIR/test.log"
"$PYTHON" tools/analysis_tools/get_flops.py "$CONFIG" --checkpoint "$checkpoint" --shape 128 128 \
  --images $(ls data/demo/ade20k/images/validation/*.jpg | head -n 4) --out "$WORK_DIR/flops.json" \
  | tee "$WORK_DIR/flops.log"

dense_miou=$(grep -ho 'mIoU: [0-9.]*' "$(ls -d "$DENSE_DIR"/2*/ | tail -n 1)"*.log | tail -n 1)
metrics=$(grep '^metrics: ' "$WORK_DIR/test.log" | tail -n 1)
logs=$(ls -d "$WORK_DIR"/2*/ | tail -n 1)
cat <<SUMMARY

==> Demo done in $(( $(date +%s) - start )) s.
    dense teacher:   ${dense_miou}  ($DENSE_DIR)
    dynamic model:   ${metrics#metrics: }
    checkpoint:      $checkpoint
    training log:    ${logs}$(basename "$logs").log (scalars for TensorBoard-style tools: ${logs}vis_data/)
    FLOPs:           $WORK_DIR/flops.json
    evaluate again:  $PYTHON tools/test.py $CONFIG $checkpoint
SUMMARY
