# DynamicCNN-B (ConvNeXt-B, rho 0.7: predictors before stage-2 blocks 3, 6, 9 keep 0.7, 0.5, 0.3) on
# ImageNet-1k: configs/imagenet_dvit_convnext.py with the ConvNeXt-B backbone, the authors' drop
# path 0.5 (README `--drop_path 0.5`, as mmpretrain's ConvNeXt-B) and its dense teacher. Published:
# 83.45 top-1.
# Optimisation as the authors' script, and its remaining differences (frozen weights without AdamW
# moments until epoch 5, warm-up from 1e-6 x the rate instead of 0, EMA-only validation,
# mmpretrain's augmentations): configs/imagenet_dvit_convnext.py.
#   checkpoints/convnext-base_in1k_mmdvit.pth
#       python tools/model_converters/dynamicvit2mmdvit.py \
#           convnext_base_1k_224_ema.pth checkpoints/convnext-base_in1k_mmdvit.pth
_base_ = '../imagenet_dvit_convnext.py'

pretrained = 'checkpoints/convnext-base_in1k_mmdvit.pth'
init = dict(type='Pretrained', checkpoint=pretrained)
rho = 0.7

model = dict(
    student=dict(
        backbone=dict(arch='base', drop_path_rate=0.5, keep_ratios=(rho, rho - 0.2, rho - 0.4),
                      init_cfg=dict(init, prefix='backbone.')),
        head=dict(in_channels=1024, init_cfg=dict(init, prefix='head.'))),
    teacher=dict(checkpoint=pretrained))
