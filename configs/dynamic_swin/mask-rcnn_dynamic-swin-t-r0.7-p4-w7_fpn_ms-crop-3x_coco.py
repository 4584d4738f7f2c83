# Mask R-CNN + DynamicSwin-T (rho 0.7) + FPN on COCO, 3x (36 epochs) with multi-scale crop
# training: mmdet's Swin-T 3x recipe plus sparsity training (keep-ratio loss 10, backbone
# feature distillation 0.5 from the dense Swin-T Mask R-CNN 3x).
# Local weights: checkpoints/swin_tiny_patch4_window7_224.pth (ImageNet-1k Swin-T),
# checkpoints/mask-rcnn_swin-t_coco-3x.pth (dense Mask R-CNN Swin-T 3x, teacher).
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'

pretrained = 'checkpoints/swin_tiny_patch4_window7_224.pth'
teacher_checkpoint = 'checkpoints/mask-rcnn_swin-t_coco-3x.pth'

model = dict(
    _delete_=True,
    type='mmdvit.SparsityTrainer',
    student=dict(
        _base_.model,
        backbone=dict(
            _base_.model.backbone,
            type='mmdvit.DynamicSwinTransformer',
            keep_ratios=(0.7, 0.5, 0.3),
            init_cfg=dict(type='Pretrained', checkpoint=pretrained))),
    teacher=dict(model=None, checkpoint=teacher_checkpoint),
    ratio_loss_weight=10.0,
    feature_distill_weight=0.5,
    logit_distill_weight=0.0)
