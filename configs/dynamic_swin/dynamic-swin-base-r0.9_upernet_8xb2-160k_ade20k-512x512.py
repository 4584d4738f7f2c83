# UPerNet + DynamicSwin-B, rho 0.9 (keep ratios 0.9, 0.7, 0.5) on ADE20K: mmseg's Swin-B
# (ImageNet-1k) recipe; predictors before stage-2 blocks 2, 4, 6 (of 18).
# Local weights: checkpoints/swin_base_patch4_window7_224.pth (ImageNet-1k Swin-B),
# checkpoints/upernet_swin-b_ade20k.pth (dense UPerNet Swin-B, teacher).
_base_ = '../upernet_dvit_swin.py'

model = dict(
    student=dict(
        backbone=dict(
            embed_dims=128,
            depths=[2, 2, 18, 2],
            num_heads=[4, 8, 16, 32],
            keep_ratios=(0.9, 0.7, 0.5),
            init_cfg=dict(checkpoint='checkpoints/swin_base_patch4_window7_224.pth')),
        decode_head=dict(in_channels=[128, 256, 512, 1024]),
        auxiliary_head=dict(in_channels=512)),
    teacher=dict(checkpoint='checkpoints/upernet_swin-b_ade20k.pth'))
