# configs/upernet_dvit_swin_whole.py on the demo data: the main demo job's model
# (configs/demo/upernet_dvit_swin_demo.py) with the same whole-model changes: a spatially sparse
# decode head (mmdvit.DynamicUPerHead; 4x4 tiles of the 32x32 1/4-scale map of a 128x128 crop),
# the student started from the dense demo teacher (300 iterations) and distilled from the dense
# reference: the teacher trained 300 iterations more, as long as the student in total, so the
# student never imitates a model it could pass. tools/run_demo.sh trains both; by hand:
#   python tools/train.py configs/demo/upernet_swin_dense_demo.py
#   python tools/train.py configs/demo/upernet_swin_dense_demo.py \
#       --work-dir work_dirs/upernet_swin_dense_long_demo \
#       --cfg-options load_from=work_dirs/upernet_swin_dense_demo/iter_300.pth
#   python tools/train.py configs/demo/upernet_dvit_swin_whole_demo.py
# The backbone prunes 4x4 attention windows in stages 0-2 (window granularity; the full config
# prunes stage 3 too).
_base_ = './upernet_dvit_swin_demo.py'

model = dict(
    student=dict(
        backbone=dict(granularity='window', sparse_stages=(0, 1, 2),
                      pruning_locs=((0, ), (0, ), (0, 1, 2)),
                      keep_ratios=(0.6, 0.6, 0.6, 0.5, 0.4)),
        decode_head=dict(
            type='mmdvit.DynamicUPerHead',
            sparse_convs=('fpn_convs.0', 'fpn_convs.1', 'fpn_bottleneck'),
            keep_ratios=(0.4, 0.4, 0.35),
            block_size=4)),
    teacher=dict(checkpoint='work_dirs/upernet_swin_dense_long_demo/iter_300.pth'),
    student_checkpoint=_base_.model.teacher.checkpoint,
    logit_distill_weight=0.5)
