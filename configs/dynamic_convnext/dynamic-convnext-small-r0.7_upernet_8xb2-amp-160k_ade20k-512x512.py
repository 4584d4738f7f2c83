# UPerNet + DynamicConvNeXt-S, rho 0.7 (keep ratios 0.7, 0.5, 0.3) on ADE20K: mmseg's ConvNeXt-S
# recipe (drop path 0.3, 12 decay layers); predictors before stage-2 blocks 3, 6, 9 (of 27).
# Local weights: checkpoints/convnext-small_in1k.pth (ImageNet-1k ConvNeXt-S),
# checkpoints/upernet_convnext-s_ade20k.pth (dense UPerNet ConvNeXt-S, teacher).
_base_ = '../upernet_dvit_convnext.py'

model = dict(
    student=dict(
        backbone=dict(
            arch='small',
            drop_path_rate=0.3,
            keep_ratios=(0.7, 0.5, 0.3),
            init_cfg=dict(checkpoint='checkpoints/convnext-small_in1k.pth'))),
    teacher=dict(checkpoint='checkpoints/upernet_convnext-s_ade20k.pth'))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
