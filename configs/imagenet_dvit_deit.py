# DynamicViT DeiT-S (rho 0.7: keeps 0.7, 0.49, 0.343 of the patch tokens before blocks 3, 6, 9)
# on ImageNet-1k, 30 epochs, 4 GPUs x 256 images (mmpretrain's DeiT-S data pipeline, Mixup /
# CutMix, label smoothing). Published recipe (docs/method.md): the dense DeiT-S is the
# frozen teacher (logit KL 0.5, MSE 0.5 on the patch tokens kept by the last predictor),
# keep-ratio loss weight 2.0, AdamW (weight decay 0.05), predictors at the full learning rate
# and every pretrained weight at 0.01x, frozen for the first 5 epochs.
# Local weights (nothing is downloaded; docs/classification.md says how to make the file):
#   checkpoints/deit-small_in1k_mmdvit.pth
#       python tools/model_converters/dynamicvit2mmdvit.py \
#           deit_small_patch16_224-cd65a155.pth checkpoints/deit-small_in1k_mmdvit.pth
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'

pretrained = 'checkpoints/deit-small_in1k_mmdvit.pth'
rho = 0.7
lr = 1e-3  # the new modules' rate for a total batch of 1024; pretrained weights get 0.01x

# Student: the upstream DeiT-S classifier with the dynamic ViT (timm key layout), initialised
# (backbone and head) from the converted dense DeiT-S; the teacher is that dense model.
model = dict(
    _delete_=True,
    type='mmdvit.SparsityTrainer',
    student=dict(
        _base_.model,
        backbone=dict(
            _base_.model.backbone,
            type='mmdvit.DynamicViT',
            keep_ratios=(rho, rho**2, rho**3),
            distill_tokens=True,
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
        head=dict(
            _base_.model.head,
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='head.'))),
    teacher=dict(model=None, checkpoint=pretrained),
    ratio_loss_weight=2.0,
    feature_distill_weight=0.5,
    logit_distill_weight=0.5)

# Base lr = the pretrained weights' rate; the predictors get lr_mult 100 (= 1 / 0.01). Norms,
# biases, cls_token and pos_embed keep mmpretrain's zero weight decay.
optim_wrapper = dict(
    optimizer=dict(lr=lr * 0.01),
    paramwise_cfg=dict(custom_keys={'score_predictors': dict(lr_mult=100.0)}))
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, T_max=30, eta_min_ratio=1e-2,
         convert_to_iter_based=True)
]
train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=1)
custom_hooks = [dict(type='mmdvit.FreezePretrainedHook', epochs=5)]
# Frozen weights get no gradient in the first epochs.
find_unused_parameters = True
