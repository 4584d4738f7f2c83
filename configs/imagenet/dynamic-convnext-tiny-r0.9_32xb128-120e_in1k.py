# DynamicCNN-T (ConvNeXt-T, rho 0.9: predictors before stage-2 blocks 1, 2, 3 keep 0.9, 0.7, 0.5) on
# ImageNet-1k: configs/imagenet_dvit_convnext.py with the ConvNeXt-T backbone, the authors' drop
# path 0.2 (README `--drop_path 0.2`; mmpretrain's ConvNeXt-T uses 0.1) and its dense teacher.
# Published: 82.06 top-1.
# Optimisation as the authors' script, and its remaining differences (frozen weights without AdamW
# moments until epoch 5, warm-up from 1e-6 x the rate instead of 0, EMA-only validation,
# mmpretrain's augmentations): configs/imagenet_dvit_convnext.py.
#   checkpoints/convnext-tiny_in1k_mmdvit.pth
#       python tools/model_converters/dynamicvit2mmdvit.py \
#           convnext_tiny_1k_224_ema.pth checkpoints/convnext-tiny_in1k_mmdvit.pth
_base_ = '../imagenet_dvit_convnext.py'

pretrained = 'checkpoints/convnext-tiny_in1k_mmdvit.pth'
init = dict(type='Pretrained', checkpoint=pretrained)
rho = 0.9

model = dict(
    student=dict(
        backbone=dict(arch='tiny', drop_path_rate=0.2, keep_ratios=(rho, rho - 0.2, rho - 0.4),
                      init_cfg=dict(init, prefix='backbone.')),
        head=dict(in_channels=768, init_cfg=dict(init, prefix='head.'))),
    teacher=dict(checkpoint=pretrained))
