#!/usr/bin/env bash
# The main demo job on a fresh machine (CPU is enough):
#   1. set up .venv/ (tools/setup_env.sh; a no-op when up to date);
#   2. write the demo ADE20K-layout and COCO-format data under data/demo/ if missing;
#   3. train the dense teacher, UPerNet + Swin (configs/demo/upernet_swin_dense_demo.py);
#   4. train UPerNet + DynamicSwin with sparsity training and distillation from that teacher
#      (configs/demo/upernet_dvit_swin_demo.py, which inherits configs/upernet_dvit_swin.py);
#   5. evaluate the saved checkpoint with tools/test.py, count dense vs dynamic backbone FLOPs on
#      the validation images;
#   6. whole-model sparsity: start from the dense teacher, make the decode head sparse too and
#      train it with sparsity losses (configs/demo/upernet_dvit_swin_whole_demo.py), evaluate it,
#      count its FLOPs, and print where everything is.
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
WHOLE=configs/demo/upernet_dvit_swin_whole_demo.py
WHOLE_DIR=work_dirs/upernet_dvit_swin_whole_demo
start=$(date +%s)

if [ ! -d data/demo/ade20k/images/training ] || [ ! -f data/demo/coco/annotations/instances_val2017.json ]; then
  "$PYTHON" tools/dataset_converters/make_demo_data.py --out data/demo
fi

echo "==> [1/4] dense teacher: $DENSE"
"$PYTHON" tools/train.py "$DENSE" --work-dir "$DENSE_DIR"
echo "==> [2/4] dynamic backbone with sparsity training: $CONFIG"
"$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
checkpoint=$(cat "$WORK_DIR/last_checkpoint")
echo "==> [3/4] evaluation of $checkpoint"
"$PYTHON" tools/test.py "$CONFIG" "$checkpoint" --work-dir "$WORK_DIR/test" | tee "$WORK_DIR/test.log"
"$PYTHON" tools/analysis_tools/get_flops.py "$CONFIG" --checkpoint "$checkpoint" --shape 128 128 \
  --images $(ls data/demo/ade20k/images/validation/*.jpg | head -n 4) --out "$WORK_DIR/flops.json" \
  | tee "$WORK_DIR/flops.log"

echo "==> [4/4] whole-model sparsity (sparse decode head too), from the dense teacher: $WHOLE"
"$PYTHON" tools/train.py "$WHOLE" --work-dir "$WHOLE_DIR"
whole_checkpoint=$(cat "$WHOLE_DIR/last_checkpoint")
"$PYTHON" tools/test.py "$WHOLE" "$whole_checkpoint" --work-dir "$WHOLE_DIR/test" | tee "$WHOLE_DIR/test.log"
"$PYTHON" tools/analysis_tools/get_flops.py "$WHOLE" --checkpoint "$whole_checkpoint" --shape 128 128 \
  --images $(ls data/demo/ade20k/images/validation/*.jpg | head -n 4) --out "$WHOLE_DIR/flops.json" \
  | tee "$WHOLE_DIR/flops.log"

dense_miou=$(grep -ho 'mIoU: [0-9.]*' "$(ls -d "$DENSE_DIR"/2*/ | tail -n 1)"*.log | tail -n 1)
metrics=$(grep '^metrics: ' "$WORK_DIR/test.log" | tail -n 1)
whole_metrics=$(grep '^metrics: ' "$WHOLE_DIR/test.log" | tail -n 1)
whole_flops=$(grep '^model ' "$WHOLE_DIR/flops.log" | head -n 1)
logs=$(ls -d "$WORK_DIR"/2*/ | tail -n 1)
cat <<SUMMARY

==> Demo done in $(( $(date +%s) - start )) s.
    dense teacher:   ${dense_miou}  ($DENSE_DIR)
    dynamic model:   ${metrics#metrics: }
    checkpoint:      $checkpoint
    training log:    ${logs}$(basename "$logs").log (scalars for TensorBoard-style tools: ${logs}vis_data/)
    FLOPs:           $WORK_DIR/flops.json
    evaluate again:  $PYTHON tools/test.py $CONFIG $checkpoint
    whole model:     ${whole_metrics#metrics: }  (sparse backbone and decode head, $WHOLE_DIR)
    whole GFLOPs:    ${whole_flops}  (dense, dynamic, ratio at 128x128: $WHOLE_DIR/flops.json)
SUMMARY
