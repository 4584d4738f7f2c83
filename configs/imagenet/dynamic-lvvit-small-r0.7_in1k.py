# DynamicViT LV-ViT-S (rho 0.7: keeps 0.7, 0.49, 0.343 of the patch tokens before blocks 4, 8, 12)
# on ImageNet-1k, 30 epochs from the dense LV-ViT-S, 8 GPUs x 128 images (the authors' batch),
# mmpretrain's DeiT-S data pipeline (Mixup / CutMix, label smoothing). Published: 83.08 top-1,
# 4.6 GFLOPs (docs/lvvit.md). Inference as the releases: class-token logits + 0.5 x the maximum
# over the kept tokens of the token-labelling auxiliary logits (mmdvit.LVViTClsHead).
# Losses as the authors' LV-ViT recipe (their main.py): classification on the class-token
# logits, keep-ratio loss 2.0, KL to the dense teacher's class-token logits 0.5. Difference: their
# second distillation term (KL between the auxiliary-head token logits of student and teacher at
# the tokens kept last, weight 0.5) is mmdvit.SparsityTrainer's token term here, the MSE of the
# final tokens kept last (weight 0.5). Optimizer and schedule as configs/imagenet_dvit_deit.py.
# Local weights (nothing is downloaded; docs/lvvit.md, 'Checkpoints', says how to make the file):
#   checkpoints/lvvit-small_in1k_mmdvit.pth   TokenLabeling's lvvit_s-26M-224-83.3.pth.tar,
#       converted with mmdvit.models.backbones.dynamic_lvvit.convert_lvvit_classifier_checkpoint
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'

pretrained = 'checkpoints/lvvit-small_in1k_mmdvit.pth'
rho = 0.7
lr = 1e-3  # the new modules' rate for a total batch of 1024; pretrained weights get 0.01x

# Student: an mmpretrain ImageClassifier with the dynamic LV-ViT (the releases' key layout) and
# LV-ViT's two classifiers, initialised from the converted dense LV-ViT-S; the teacher is that
# dense model (the student's dense twin).
model = dict(
    _delete_=True,
    type='mmdvit.SparsityTrainer',
    student=dict(
        _base_.model,
        backbone=dict(
            type='mmdvit.DynamicLVViT',
            arch='lvvit-s',
            img_size=224,
            out_type='raw',
            keep_ratios=(rho, rho**2, rho**3),
            distill_tokens=True,
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
        head=dict(
            type='mmdvit.LVViTClsHead',
            num_classes=1000,
            in_channels=384,
            loss=_base_.model.head.loss,
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='head.'))),
    teacher=dict(model=None, checkpoint=pretrained),
    ratio_loss_weight=2.0,
    feature_distill_weight=0.5,
    logit_distill_weight=0.5)
train_dataloader = dict(batch_size=128)

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
