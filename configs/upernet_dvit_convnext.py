# UPerNet + DynamicConvNeXt-T (rho 0.7) on ADE20K 512x512, 160k iterations, 8 GPUs x 2 images.
# mmseg's ConvNeXt-T recipe (AMP, AdamW 1e-4, stage-wise learning-rate decay 0.9, ImageNet-1k
# ConvNeXt-T weights) plus sparsity training (mmdvit.SparsityTrainer): keep-ratio loss
# (weight 10) and MSE distillation of the four backbone outputs from the dense ConvNeXt-T
# UPerNet (weight 0.5). Score predictors get the head's (full) learning rate under the
# layer-decay constructor; fast paths share their block's rate.
# Local weights (docs/dense_tasks.md):
#   checkpoints/convnext-tiny_in1k.pth        ImageNet-1k ConvNeXt-T (mmpretrain, Meta or timm)
#   checkpoints/upernet_convnext-t_ade20k.pth dense UPerNet ConvNeXt-T trained on ADE20K (mmseg)
_base_ = 'mmseg::convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/convnext-tiny_in1k.pth'
teacher_checkpoint = 'checkpoints/upernet_convnext-t_ade20k.pth'

model = dict(
    _delete_=True,
    type='mmdvit.SparsityTrainer',
    student=dict(
        _base_.model,
        backbone=dict(
            _base_.model.backbone,
            type='mmdvit.DynamicConvNeXt',
            keep_ratios=(0.7, 0.5, 0.3),
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file, prefix='backbone.'))),
    teacher=dict(model=None, checkpoint=teacher_checkpoint),
    ratio_loss_weight=10.0,
    feature_distill_weight=0.5,
    logit_distill_weight=0.0)
