# configs/upernet_dvit_swin_whole_fine.py on the demo data: the main demo job's model
# (configs/demo/upernet_dvit_swin_demo.py) with the whole-model changes of
# configs/demo/upernet_dvit_swin_whole_demo.py and the decode head that keeps small and thin
# things: 2x2 tiles of the 1/4-scale map (8x8 pixels of a 128x128 crop), a depthwise 3x3 + 1x1
# fast path, the predictors' detail cue, keep ratios (0.5, 0.5, 0.45) for fpn_convs.0,
# fpn_convs.1 and fpn_bottleneck, and the dense path trained at every step
# (dense_path_weight=2.0). It starts from the demo's dense teacher and does not distil:
# the demo's dense models train for minutes and are far from converged, and on the
# fine-structure benchmark (tools/analysis_tools/quality_benchmark.py, docs/whole_model.md)
# distilling from them gained nothing or harmed; the full-size config distils from the
# converged dense model.
#   python tools/train.py configs/demo/upernet_swin_dense_demo.py
#   python tools/train.py configs/demo/upernet_dvit_swin_whole_fine_demo.py
_base_ = './upernet_dvit_swin_demo.py'

model = dict(
    student=dict(
        backbone=dict(granularity='window', sparse_stages=(0, 1, 2),
                      pruning_locs=((0, ), (0, ), (0, 1, 2)),
                      keep_ratios=(0.6, 0.6, 0.6, 0.5, 0.4)),
        decode_head=dict(
            type='mmdvit.DynamicUPerHead',
            sparse_convs=('fpn_convs.0', 'fpn_convs.1', 'fpn_bottleneck'),
            keep_ratios=(0.5, 0.5, 0.45),
            block_size=2,
            fast_path_kind='dw3x3',
            detail_cue=True)),
    teacher=None,
    student_checkpoint=_base_.model.teacher.checkpoint,
    logit_distill_weight=0,
    feature_distill_weight=0,
    dense_path_weight=2.0)
