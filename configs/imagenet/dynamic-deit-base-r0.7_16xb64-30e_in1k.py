# DynamicViT DeiT-B (rho 0.7: keeps 0.7, 0.49, 0.343 of the patch tokens before blocks 3, 6, 9) on
# ImageNet-1k: configs/imagenet_dvit_deit.py with the DeiT-B backbone (the authors' drop path 0.2:
# README `--drop_path 0.2`, where mmpretrain's DeiT-B uses 0.1; 16 GPUs x 64 images, the authors'
# total 1024), its dense teacher and keep-ratio loss weight 5.0 (README `--ratio_weight 5.0`).
# Published: 81.43 top-1.
# Optimisation as the authors' script (README's DeiT-B command), and its remaining differences
# (frozen weights without AdamW moments until epoch 5, warm-up from 1e-6 x the rate instead of 0,
# EMA-only validation, mmpretrain's augmentations, cls_token / pos_embed at lr 0 in the optimizer):
# configs/imagenet_dvit_deit.py.
#   checkpoints/deit-base_in1k_mmdvit.pth
#       python tools/model_converters/dynamicvit2mmdvit.py \
#           deit_base_patch16_224-b5f2ef4d.pth checkpoints/deit-base_in1k_mmdvit.pth
_base_ = '../imagenet_dvit_deit.py'

pretrained = 'checkpoints/deit-base_in1k_mmdvit.pth'
init = dict(type='Pretrained', checkpoint=pretrained)

model = dict(
    student=dict(
        backbone=dict(arch='deit-base', drop_path_rate=0.2,
                      init_cfg=dict(init, prefix='backbone.')),
        head=dict(in_channels=768, init_cfg=dict(init, prefix='head.'))),
    teacher=dict(checkpoint=pretrained),
    ratio_loss_weight=5.0)
train_dataloader = dict(batch_size=64)
