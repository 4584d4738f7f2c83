# DynamicSwin-T (rho 0.7: predictors before stage-3 blocks 1, 2, 3 keep 0.7, 0.5, 0.3) on
# ImageNet-1k, 120 epochs, 16 GPUs x 64 images (mmpretrain's Swin-T data pipeline, Mixup /
# CutMix, label smoothing). Published recipe (docs/method.md): the dense Swin-T is the
# frozen teacher (logit KL 0.5, MSE 0.5 on the final feature map), keep-ratio loss weight 10,
# AdamW (weight decay 0.05), predictors and fast paths at the full learning rate and every
# pretrained weight at 0.2x, frozen for the first 5 epochs.
# Local weights (nothing is downloaded; docs/classification.md says how to make the file):
#   checkpoints/swin-tiny_in1k_mmdvit.pth
#       python tools/model_converters/dynamicvit2mmdvit.py \
#           swin_tiny_patch4_window7_224.pth checkpoints/swin-tiny_in1k_mmdvit.pth
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'

pretrained = 'checkpoints/swin-tiny_in1k_mmdvit.pth'
rho = 0.7
lr = 1e-3  # the new modules' rate for a total batch of 1024; pretrained weights get 0.2x

# mmpretrain's SwinTransformer arguments differ from mmseg's, which mmdvit follows: the
# backbone is spelled out. pad_small_map=False: no shifted windows on a window-sized map (stage 4
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
            drop_path_rate=0.2,
            out_indices=(3, ),
            pad_small_map=False,
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

# Base lr = the pretrained weights' rate; the new modules get lr_mult 5 (= 1 / 0.2). Norms,
# biases and position-bias tables of the pretrained model keep mmpretrain's zero weight decay.
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
custom_hooks = [dict(type='mmdvit.FreezePretrainedHook', epochs=5)]
# Frozen weights get no gradient in the first epochs.
find_unused_parameters = True
