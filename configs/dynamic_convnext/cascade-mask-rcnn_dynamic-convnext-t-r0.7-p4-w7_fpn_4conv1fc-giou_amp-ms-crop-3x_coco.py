# Cascade Mask R-CNN + DynamicConvNeXt-T (rho 0.7) + FPN on COCO, 3x with multi-scale crop
# training and AMP: mmdet's ConvNeXt-T cascade recipe (4conv1fc GIoU heads, AdamW 2e-4,
# layer-wise decay 0.7) plus sparsity training (keep-ratio loss 10, backbone feature
# distillation 0.5 from the dense ConvNeXt-T Cascade Mask R-CNN).
# Local weights: checkpoints/convnext-tiny_in1k.pth (ImageNet-1k ConvNeXt-T),
# checkpoints/cascade-mask-rcnn_convnext-t_coco-3x.pth (dense model, teacher; mmdet release).
_base_ = 'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'

checkpoint_file = 'checkpoints/convnext-tiny_in1k.pth'
teacher_checkpoint = 'checkpoints/cascade-mask-rcnn_convnext-t_coco-3x.pth'

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
