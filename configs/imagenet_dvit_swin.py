# DynamicSwin-T (rho 0.7: predictors before stage-2 blocks 1, 2, 3 keep 0.7, 0.5, 0.3) on
# ImageNet-1k, 120 epochs, 16 GPUs x 64 images (mmpretrain's Swin-T data pipeline, Mixup /
# CutMix, label smoothing). Published recipe (docs/method.md): the dense Swin-T is the
# frozen teacher (logit KL 0.5, MSE 0.5 on the final feature map), keep-ratio loss weight 10,
# AdamW (weight decay 0.05), predictors and fast paths at the full learning rate and every
# pretrained weight at 0.2x, frozen for the first 5 epochs.
# Optimisation as the authors' script (raoyongming/DynamicViT main.py, optim_factory.py,
# engine.py and the README's Swin-T command; docs/classification.md, 'The authors' recipe'):
# lr 4e-3 per 4096 images (here 1e-3 per 1024), 20 warm-up epochs then cosine to 1e-6 per
# iteration (pretrained weights: 0.2x throughout), no gradient clipping, EMA (decay 0.9999 per
# step, buffers too) evaluated each epoch, drop path 0.2, weight decay on every weight of 2 or
# more dimensions (the relative position bias tables included) and on no 1-D parameter or
# bias (the new modules' included).
# Remaining differences:
#  - total batch 1024 (mmpretrain's Swin batch, the file name's 16 x 64) with the rate scaled
#    linearly, not the authors' 4096 (8 GPUs x 128 x 4 accumulation steps): 4x the steps, so
#    EMA 0.9999 per step averages over a quarter of the epochs (train_dataloader.batch_size=128
#    on 32 GPUs with lr = 4e-3 restores theirs);
#  - the pretrained weights are frozen by FreezePretrainedHook (no gradient) where the authors set
#    their lr to 0, so their AdamW moments start at epoch 5 instead of step 0 (mmengine's
#    schedulers scale every parameter group alike, so a config cannot zero one group);
#  - warm-up starts at 1e-6 x the rate, not 0 (the chainable LinearLR needs a factor > 0);
#  - validation sees the EMA weights only (EMAHook swaps them in; the authors evaluate both), and
#    checkpoints hold the EMA weights in `state_dict`, the live ones in `ema_state_dict`;
#  - mmpretrain's RandAugment / RandomErasing / Mixup / CutMix / label smoothing (the same
#    settings by name) instead of timm's.
# Local weights (nothing is downloaded; docs/classification.md says how to make the file):
#   checkpoints/swin-tiny_in1k_mmdvit.pth
#       python tools/model_converters/dynamicvit2mmdvit.py \
#           swin_tiny_patch4_window7_224.pth checkpoints/swin-tiny_in1k_mmdvit.pth
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'

pretrained = 'checkpoints/swin-tiny_in1k_mmdvit.pth'
rho = 0.7
lr = 1e-3  # the new modules' rate for a total batch of 1024; pretrained weights get 0.2x

# mmpretrain's SwinTransformer arguments differ from mmseg's, which mmdvit follows: the
# backbone is spelled out. pad_small_map=False: no shifted windows on a window-sized map (stage 3
# at 224), as the official / mmpretrain Swin classify.
model = dict(
    _delete_=True,
    type='mmdvit.SparsityTrainer',
    student=dict(
        _base_.model,
        backbone=dict(
            type='mmdvit.DynamicSwinTransformer',
            embed_dims=96,
            depths=(2, 2, 6, 2),
            num_heads=(3, 6, 12, 24),
            window_size=7,
            drop_path_rate=0.2,  # README: --drop_path 0.2
            out_indices=(3, ),
            pad_small_map=False,
            # As the authors' code computes them: 0.7 - 0.2 = 0.49999999999999994 keeps
            # int(196 * r) = 97 of the 196 stage-2 positions at 224, like the released models.
            keep_ratios=(rho, rho - 0.2, rho - 0.4),
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
        head=dict(
            _base_.model.head,
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='head.'))),
    teacher=dict(model=None, checkpoint=pretrained),
    ratio_loss_weight=10.0,
    feature_distill_weight=0.5,
    logit_distill_weight=0.5)

# The authors' parameter groups (optim_factory.py): predictors and fast paths at lr, every
# other weight at 0.2 lr (lr_mult 5 on a base rate of 0.2 lr); no weight decay on 1-D parameters
# and biases, weight decay on the relative position bias tables (mmpretrain exempts them).
# mmengine applies the longest matching custom key and then ignores norm_ / bias_ /
# flat_decay_mult, so the new modules' LayerNorms and biases get keys of their own.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr * 0.2, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={
            'predictors': dict(lr_mult=5.0),  # backbone.score_predictors.*
            'fast_path': dict(lr_mult=5.0),
            **{key: dict(lr_mult=5.0, decay_mult=0.0)
               for key in ('.in_conv.0.', '.in_conv.1.bias', '.out_conv.0.bias',
                           '.out_conv.2.bias', '.out_conv.4.bias', 'fast_path.0.',
                           'fast_path.1.bias')},
            '.relative_position_bias_table': dict(decay_mult=1.0),
        }))
# No clip_grad: the authors' --clip_grad defaults to None.
max_epochs = 120
warmup_epochs = 20  # main.py --warmup_epochs default (the README's Swin commands keep it)
min_lr = 1e-6  # main.py --min_lr; eta_min_ratio makes it the new modules' final rate and
# 1e-6 x 0.2 the pretrained weights', as the authors scale the scheduled value per group
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
