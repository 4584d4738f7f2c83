# DynamicViT DeiT-256 (embed 256, 12 blocks, 4 heads; rho 0.7: keeps 0.7, 0.49, 0.343 of the patch
# tokens before blocks 3, 6, 9) on ImageNet-1k: configs/imagenet_dvit_deit.py with the DeiT-256
# backbone of the DynamicViT paper (keep-ratio loss weight 2.0, as DeiT-S). Published: 76.53 top-1,
# 1.3 GFLOPs.
# The authors' training script has no DeiT-256 (main.py builds deit-s and deit-b; only infer.py
# defines deit-256), so it gets the DeiT-S recipe of their README, as configs/imagenet_dvit_deit.py
# (no drop path, keep-ratio weight 2.0), with that config's remaining differences (frozen weights
# without AdamW moments until epoch 5, warm-up from 1e-6 x the rate instead of 0, EMA-only
# validation, mmpretrain's augmentations, cls_token / pos_embed at lr 0 in the optimizer), and
# starts from their DynamicViT-DeiT-256 release instead of a dense model.
# No dense DeiT-256 ImageNet checkpoint is published, so this config evaluates (and fine-tunes) the
# authors' DynamicViT-DeiT-256/0.7 release; its dense twin is the teacher:
#   checkpoints/dynamicvit-deit-256_in1k_mmdvit.pth
#       python tools/model_converters/dynamicvit2mmdvit.py \
#           <authors' DynamicViT-DeiT-256/0.7 file> checkpoints/dynamicvit-deit-256_in1k_mmdvit.pth
_base_ = '../imagenet_dvit_deit.py'

pretrained = 'checkpoints/dynamicvit-deit-256_in1k_mmdvit.pth'
init = dict(type='Pretrained', checkpoint=pretrained)

model = dict(
    student=dict(
        backbone=dict(arch='deit-256', init_cfg=dict(init, prefix='backbone.')),
        head=dict(in_channels=256, init_cfg=dict(init, prefix='head.'))),
    teacher=dict(checkpoint=pretrained))
