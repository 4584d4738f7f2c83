# configs/upernet_dvit_convnext_whole.py on the demo data:
# configs/demo/upernet_dvit_convnext_demo.py
# (random initialisation, no teacher) with the whole-model change: a spatially sparse decode head
# (mmdvit.DynamicUPerHead; 4x4 tiles of the 32x32 1/4-scale map of a 128x128 crop).
_base_ = './upernet_dvit_convnext_demo.py'

model = dict(
    student=dict(
        decode_head=dict(
            type='mmdvit.DynamicUPerHead',
            sparse_convs=('fpn_convs.0', 'fpn_convs.1', 'fpn_bottleneck'),
            keep_ratios=(0.4, 0.4, 0.35),
            block_size=4)))
