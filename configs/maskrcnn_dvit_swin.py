# Mask R-CNN + DynamicSwin-T (rho 0.7) + FPN on COCO, 1x schedule (12 epochs), 8 GPUs x 2 images.
# mmdet's Swin-T 1x recipe (AdamW 1e-4, weight decay 0.05, ImageNet-1k Swin-T weights) plus
# sparsity training (mmdvit.SparsityTrainer): keep-ratio loss (weight 10) and MSE distillation
# of the four backbone outputs from the dense Swin-T Mask R-CNN (weight 0.5).
# Local weights (docs/dense_tasks.md):
#   checkpoints/swin_tiny_patch4_window7_224.pth  ImageNet-1k Swin-T (official or mmseg release)
#   checkpoints/mask-rcnn_swin-t_coco-1x.pth      dense Mask R-CNN Swin-T 1x on COCO (mmdet)
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'

pretrained = 'checkpoints/swin_tiny_patch4_window7_224.pth'
teacher_checkpoint = 'checkpoints/mask-rcnn_swin-t_coco-1x.pth'

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
