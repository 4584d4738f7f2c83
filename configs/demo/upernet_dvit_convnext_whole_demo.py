# configs/upernet_dvit_convnext_whole.py on the demo data:
# configs/demo/upernet_dvit_convnext_demo.py
# (random initialisation, no teacher) with the whole-model change: a spatially sparse decode head
# (mmdvit.DynamicUPerHead; 4x4 tiles of the 32x32 1/4-scale map of a 128x128 crop).
# The backbone splits the pointwise MLPs of stages 0-2 (the full config stage 3 too).
_base_ = './upernet_dvit_convnext_demo.py'

model = dict(
    student=dict(
        backbone=dict(sparse_stages=(0, 1, 2), pruning_locs=((0, ), (0, ), (0, 1, 2)),
                      keep_ratios=(0.5, 0.5, 0.6, 0.5, 0.4)),
        decode_head=dict(
            type='mmdvit.DynamicUPerHead',
            sparse_convs=('fpn_convs.0', 'fpn_convs.1', 'fpn_bottleneck'),
            keep_ratios=(0.4, 0.4, 0.35),
            block_size=4)))
