# DynamicSwin-B (rho 0.7: predictors before stage-2 blocks 2, 4, 6 keep 0.7, 0.5, 0.3) on
# ImageNet-1k: configs/imagenet_dvit_swin.py with the Swin-B backbone, the authors' drop path 0.5
# (README `--drop_path 0.5`, as mmpretrain's Swin-B) and its dense teacher. Published: 83.43 top-1.
# Optimisation as the authors' script, and its remaining differences (total batch 1024 with the rate
# scaled linearly instead of 4096, frozen weights without AdamW moments until epoch 5, warm-up from
# 1e-6 x the rate instead of 0, EMA-only validation, mmpretrain's augmentations):
# configs/imagenet_dvit_swin.py.
#   checkpoints/swin-base_in1k_mmdvit.pth
#       python tools/model_converters/dynamicvit2mmdvit.py \
#           swin_base_patch4_window7_224.pth checkpoints/swin-base_in1k_mmdvit.pth
_base_ = '../imagenet_dvit_swin.py'

pretrained = 'checkpoints/swin-base_in1k_mmdvit.pth'
init = dict(type='Pretrained', checkpoint=pretrained)

model = dict(
    student=dict(
        backbone=dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                      drop_path_rate=0.5, init_cfg=dict(init, prefix='backbone.')),
        head=dict(in_channels=1024, init_cfg=dict(init, prefix='head.'))),
    teacher=dict(checkpoint=pretrained))
