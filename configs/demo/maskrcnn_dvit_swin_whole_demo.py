# configs/maskrcnn_dvit_swin_whole.py on the demo data: configs/demo/maskrcnn_dvit_swin_demo.py
# (random initialisation, no teacher) with the whole-model change: a spatially sparse FPN and
# RPN head at P2 / P3 (4x4 and 2x2 tiles of the 1/4- and 1/8-scale maps of a 256x160 image).
# The backbone prunes 4x4 attention windows in stages 0-2 (window granularity; the full config
# prunes stage 3 too).
_base_ = './maskrcnn_dvit_swin_demo.py'

model = dict(
    student=dict(
        backbone=dict(granularity='window', sparse_stages=(0, 1, 2),
                      pruning_locs=((0, ), (0, ), (0, 1, 2)),
                      keep_ratios=(0.6, 0.6, 0.6, 0.5, 0.4)),
        neck=dict(type='mmdvit.DynamicFPN', sparse_levels=(0, 1), keep_ratios=(0.3, 0.4),
                  block_size=4),
        rpn_head=dict(type='mmdvit.DynamicRPNHead', sparse_levels=(0, 1), keep_ratios=(0.3, 0.4),
                      block_size=4)))
