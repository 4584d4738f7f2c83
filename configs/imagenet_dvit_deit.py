# DynamicViT DeiT-S (rho 0.7: keeps 0.7, 0.49, 0.343 of the patch tokens before blocks 3, 6, 9)
# on ImageNet-1k, 30 epochs, 4 GPUs x 256 images (mmpretrain's DeiT-S data pipeline, Mixup /
# CutMix, label smoothing). Published recipe (docs/method.md): the dense DeiT-S is the
# frozen teacher (logit KL 0.5, MSE 0.5 on the patch tokens kept by the last predictor),
# keep-ratio loss weight 2.0, AdamW (weight decay 0.05), predictors at the full learning rate
# and every pretrained weight at 0.01x, frozen for the first 5 epochs.
# Optimisation as the authors' script (raoyongming/DynamicViT main.py, optim_factory.py,
# engine.py and the README's DeiT-S command; docs/classification.md, 'The authors' recipe'):
# total batch 1024, lr 1e-3, 5 warm-up epochs then cosine to 1e-6 per iteration (pretrained
# weights: 0.01x throughout), no gradient clipping, EMA (decay 0.9999 per step, buffers too)
# evaluated each epoch, no drop path, cls_token / pos_embed never updated, no weight decay on
# any 1-D parameter or bias (the predictors' included).
# Remaining differences, each because a config cannot express it in mmengine:
#  - the pretrained weights are frozen by FreezePretrainedHook (no gradient) where the authors set
#    their lr to 0, so their AdamW moments start at epoch 5 instead of step 0 (mmengine's
#    schedulers scale every parameter group alike);
#  - warm-up starts at 1e-6 x the rate, not 0 (the chainable LinearLR needs a factor > 0);
#  - validation sees the EMA weights only (EMAHook swaps them in; the authors evaluate both), and
#    checkpoints hold the EMA weights in `state_dict`, the live ones in `ema_state_dict`;
#  - cls_token / pos_embed stay in the optimizer with lr 0 (never changed: AdamW's step and
#    decay scale with lr) where the authors leave them out; mmengine logs this first group's rate
#    as `lr` (0); `base_lr`, the pretrained weights' scheduled rate, is the one to watch;
#  - mmpretrain's RandAugment / RandomErasing / Mixup / CutMix / label smoothing (the same
#    settings by name) instead of timm's.
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
            drop_path_rate=0.0,  # main.py builds DeiT-S without drop_path_rate
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
        head=dict(
            _base_.model.head,
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='head.'))),
    teacher=dict(model=None, checkpoint=pretrained),
    ratio_loss_weight=2.0,
    feature_distill_weight=0.5,
    logit_distill_weight=0.5)

# The authors' parameter groups (optim_factory.py): predictors at lr, every other weight at
# 0.01 lr (lr_mult 100 on a base rate of 0.01 lr); no weight decay on 1-D parameters and biases;
# cls_token / pos_embed not trained. mmengine applies the longest matching custom key and then
# ignores norm_ / bias_ / flat_decay_mult, so the predictors' LayerNorm and biases get their own.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr * 0.01, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={
            'predictors': dict(lr_mult=100.0),  # backbone.score_predictors.*
            **{key: dict(lr_mult=100.0, decay_mult=0.0)
               for key in ('.in_conv.0.', '.in_conv.1.bias', '.out_conv.0.bias',
                           '.out_conv.2.bias', '.out_conv.4.bias')},
            '.cls_token': dict(lr_mult=0.0, decay_mult=0.0),
            '.pos_embed': dict(lr_mult=0.0, decay_mult=0.0),
        }))
# No clip_grad: the authors' --clip_grad defaults to None.
max_epochs = 30
warmup_epochs = 5  # README: --warmup_epochs 5
min_lr = 1e-6  # main.py --min_lr; eta_min_ratio makes it the predictors' final rate and
# 1e-6 x 0.01 the pretrained weights', as the authors scale the scheduled value per group
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=warmup_epochs, end=max_epochs,
         T_max=max_epochs - warmup_epochs, eta_min_ratio=min_lr / lr,
         convert_to_iter_based=True)
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
custom_hooks = [
    dict(type='mmdvit.FreezePretrainedHook', epochs=5),
    # timm's ModelEma(decay=0.9999) averages the whole state dict after every optimizer step;
    # mmengine's momentum is 1 - decay. Validation and test use the EMA weights.
    dict(type='EMAHook', momentum=1e-4, update_buffers=True, priority='ABOVE_NORMAL'),
]
# Frozen weights get no gradient in the first epochs.
find_unused_parameters = True
