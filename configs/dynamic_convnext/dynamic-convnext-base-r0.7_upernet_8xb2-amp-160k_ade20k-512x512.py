# UPerNet + DynamicConvNeXt-B, rho 0.7 (keep ratios 0.7, 0.5, 0.3) on ADE20K: mmseg's ConvNeXt-B
# recipe (drop path 0.4, 12 decay layers); predictors before stage-2 blocks 3, 6, 9 (of 27).
# Local weights: checkpoints/convnext-base_in1k.pth (ImageNet-1k ConvNeXt-B),
# checkpoints/upernet_convnext-b_ade20k.pth (dense UPerNet ConvNeXt-B, teacher).
_base_ = '../upernet_dvit_convnext.py'

model = dict(
    student=dict(
        backbone=dict(
            arch='base',
            keep_ratios=(0.7, 0.5, 0.3),
            init_cfg=dict(checkpoint='checkpoints/convnext-base_in1k.pth')),
        decode_head=dict(in_channels=[128, 256, 512, 1024]),
        auxiliary_head=dict(in_channels=512)),
    teacher=dict(checkpoint='checkpoints/upernet_convnext-b_ade20k.pth'))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
