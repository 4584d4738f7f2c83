# UPerNet + DynamicSwin-S, rho 0.9 (keep ratios 0.9, 0.7, 0.5) on ADE20K: mmseg's Swin-S
# recipe; predictors before stage-2 blocks 2, 4, 6 (of 18).
# Local weights: checkpoints/swin_small_patch4_window7_224.pth (ImageNet-1k Swin-S),
# checkpoints/upernet_swin-s_ade20k.pth (dense UPerNet Swin-S, teacher).
_base_ = '../upernet_dvit_swin.py'

model = dict(
    student=dict(
        backbone=dict(
            depths=[2, 2, 18, 2],
            keep_ratios=(0.9, 0.7, 0.5),
            init_cfg=dict(checkpoint='checkpoints/swin_small_patch4_window7_224.pth'))),
    teacher=dict(checkpoint='checkpoints/upernet_swin-s_ade20k.pth'))
