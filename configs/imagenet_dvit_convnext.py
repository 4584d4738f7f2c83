# DynamicConvNeXt-T (DynamicCNN-T, rho 0.7: predictors before stage-3 blocks 1, 2, 3 keep 0.7,
# 0.5, 0.3) on ImageNet-1k, 120 epochs, 32 GPUs x 128 images (mmpretrain's ConvNeXt-T data
# pipeline, Mixup / CutMix, label smoothing). Published recipe (docs/method.md): the dense
# ConvNeXt-T is the frozen teacher (logit KL 0.5, MSE 0.5 on the final features), keep-ratio
# loss weight 10, AdamW (weight decay 0.05), predictors and fast paths at the full learning rate
# and every pretrained weight at 0.2x, frozen for the first 5 epochs.
# Local weights (nothing is downloaded; docs/classification.md says how to make the file):
#   checkpoints/convnext-tiny_in1k_mmdvit.pth
#       python tools/model_converters/dynamicvit2mmdvit.py \
#           convnext_tiny_1k_224_ema.pth checkpoints/convnext-tiny_in1k_mmdvit.pth
_base_ = 'mmpretrain::convnext/convnext-tiny_32xb128_in1k.py'

pretrained = 'checkpoints/convnext-tiny_in1k_mmdvit.pth'
rho = 0.7
lr = 4e-3  # the new modules' rate for a total batch of 4096; pretrained weights get 0.2x

model = dict(
    _delete_=True,
    type='mmdvit.SparsityTrainer',
    student=dict(
        _base_.model,
        backbone=dict(
            _base_.model.backbone,
            type='mmdvit.DynamicConvNeXt',
            # As the authors' code computes them: 0.7 - 0.2 = 0.49999999999999994 keeps
            # int(196 * r) = 97 of the 196 stage-3 positions at 224, like the released models.
            keep_ratios=(rho, rho - 0.2, rho - 0.4),
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
        head=dict(
            _base_.model.head,
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='head.'))),
    teacher=dict(model=None, checkpoint=pretrained),
    ratio_loss_weight=10.0,
    feature_distill_weight=0.5,
    logit_distill_weight=0.5)

# Base lr = the pretrained weights' rate; the new modules get lr_mult 5 (= 1 / 0.2).
optim_wrapper = dict(
    optimizer=dict(lr=lr * 0.2),
    paramwise_cfg=dict(custom_keys={
        'score_predictors': dict(lr_mult=5.0),
        'fast_path': dict(lr_mult=5.0)
    }))
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, T_max=120, eta_min_ratio=1e-2,
         convert_to_iter_based=True)
]
train_cfg = dict(by_epoch=True, max_epochs=120, val_interval=1)
# No EMA (mmpretrain's ConvNeXt recipe has one): a fine-tune of a converged model.
custom_hooks = [dict(type='mmdvit.FreezePretrainedHook', epochs=5)]
# Frozen weights get no gradient in the first epochs.
find_unused_parameters = True
