# Mask R-CNN + DynamicConvNeXt-T (rho 0.7) + FPN on COCO, 3x schedule (36 epochs) with
# multi-scale crop training and AMP, 8 GPUs x 2 images. mmdet's ConvNeXt-T 3x recipe (AdamW
# 1e-4, layer-wise learning-rate decay 0.95, ImageNet-1k ConvNeXt-T weights) plus sparsity
# training (mmdvit.SparsityTrainer): keep-ratio loss (weight 10) and MSE distillation of the
# four backbone outputs from the dense ConvNeXt-T Mask R-CNN (weight 0.5).
# Local weights (docs/dense_tasks.md):
#   checkpoints/convnext-tiny_in1k.pth          ImageNet-1k ConvNeXt-T (mmpretrain, Meta or timm)
#   checkpoints/mask-rcnn_convnext-t_coco-3x.pth dense Mask R-CNN ConvNeXt-T 3x on COCO (mmdet)
_base_ = 'mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py'

checkpoint_file = 'checkpoints/convnext-tiny_in1k.pth'
teacher_checkpoint = 'checkpoints/mask-rcnn_convnext-t_coco-3x.pth'

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
