# DynamicViT LV-ViT-S (rho 0.7: keeps 0.7, 0.49, 0.343 of the patch tokens before blocks 4, 8, 12)
# on ImageNet-1k, 30 epochs from the dense LV-ViT-S, 8 GPUs x 128 images (the authors' batch),
# mmpretrain's DeiT-S data pipeline (Mixup / CutMix, label smoothing). Published: 83.08 top-1,
# 4.6 GFLOPs (docs/lvvit.md). Inference as the releases: class-token logits + 0.5 x the maximum
# over the kept tokens of the token-labelling auxiliary logits (mmdvit.LVViTClsHead).
# Losses as the authors' LV-ViT recipe (their main.py): classification on the class-token
# logits, keep-ratio loss 2.0, KL to the dense teacher's class-token logits 0.5. Difference: their
# second distillation term (KL between the auxiliary-head token logits of student and teacher at
# the tokens kept last, weight 0.5) is mmdvit.SparsityTrainer's token term here, the MSE of the
# final tokens kept last (weight 0.5).
# Optimisation as the authors' script (main.py, optim_factory.py, engine.py, the README's
# LV-ViT-S command), as configs/imagenet_dvit_deit.py: total batch 1024, lr 1e-3, pretrained
# weights at 0.01x and frozen for 5 epochs, 5 warm-up epochs then cosine to 1e-6 per iteration,
# no gradient clipping, EMA (decay 0.9999 per step; the stem's BatchNorm statistics averaged
# too, as timm's ModelEma) evaluated each epoch, no drop path (main.py builds LV-ViT without
# it), cls_token / pos_embed never updated, no weight decay on 1-D parameters and biases.
# Remaining differences (those of configs/imagenet_dvit_deit.py; a config cannot express them):
# frozen weights get no gradient instead of lr 0 (their AdamW moments start at epoch 5), warm-up
# starts at 1e-6 x the rate instead of 0, validation sees the EMA weights only (checkpoints hold
# them in `state_dict`), cls_token / pos_embed sit in the optimizer at lr 0 (so the logged `lr`
# is 0; `base_lr`, the pretrained weights' scheduled rate, is the one to watch), mmpretrain's
# augmentations, not timm's.
# Local weights (nothing is downloaded; docs/lvvit.md, 'Checkpoints', says how to make the file):
#   checkpoints/lvvit-small_in1k_mmdvit.pth   TokenLabeling's lvvit_s-26M-224-83.3.pth.tar,
#       converted with mmdvit.models.backbones.dynamic_lvvit.convert_lvvit_classifier_checkpoint
_base_ = '../imagenet_dvit_deit.py'  # the optimiser groups, schedule, EMA and hooks

pretrained = 'checkpoints/lvvit-small_in1k_mmdvit.pth'
rho = 0.7

# Student: an mmpretrain ImageClassifier with the dynamic LV-ViT (the releases' key layout) and
# LV-ViT's two classifiers, initialised from the converted dense LV-ViT-S; the teacher is that
# dense model (the student's dense twin).
model = dict(
    student=dict(
        backbone=dict(
            _delete_=True,
            type='mmdvit.DynamicLVViT',
            arch='lvvit-s',
            img_size=224,
            out_type='raw',
            keep_ratios=(rho, rho**2, rho**3),
            distill_tokens=True,
            drop_path_rate=0.0,  # main.py builds LV-ViT without drop_path_rate
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
        head=dict(
            _delete_=True,
            type='mmdvit.LVViTClsHead',
            num_classes=1000,
            in_channels=384,
            loss=_base_.model.student.head.loss,
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='head.'))),
    teacher=dict(checkpoint=pretrained))
train_dataloader = dict(batch_size=128)
