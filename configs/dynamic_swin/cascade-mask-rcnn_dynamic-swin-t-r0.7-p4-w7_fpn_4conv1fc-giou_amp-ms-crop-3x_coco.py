# Cascade Mask R-CNN + DynamicSwin-T (rho 0.7) + FPN on COCO, 3x with multi-scale crop training
# and AMP. mmdet has no Swin cascade config: this takes mmdet's ConvNeXt-T cascade config (4conv1fc
# GIoU heads, schedule, pipeline) and puts in the Swin-T backbone and optimiser of mmdet's Swin-T
# Mask R-CNN configs (AdamW 1e-4, weight decay 0.05, drop path 0.2), as the Swin paper's
# Cascade Mask R-CNN 3x does; plus sparsity training.
# Local weights: checkpoints/swin_tiny_patch4_window7_224.pth (ImageNet-1k Swin-T),
# checkpoints/cascade-mask-rcnn_swin-t_coco-3x.pth (dense Cascade Mask R-CNN Swin-T 3x, teacher).
_base_ = 'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'

pretrained = 'checkpoints/swin_tiny_patch4_window7_224.pth'
teacher_checkpoint = 'checkpoints/cascade-mask-rcnn_swin-t_coco-3x.pth'

model = dict(
    _delete_=True,
    type='mmdvit.SparsityTrainer',
    student=dict(
        _base_.model,
        backbone=dict(
            type='mmdvit.DynamicSwinTransformer',
            embed_dims=96,
            depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24],
            window_size=7,
            mlp_ratio=4,
            qkv_bias=True,
            drop_path_rate=0.2,
            patch_norm=True,
            out_indices=(0, 1, 2, 3),
            keep_ratios=(0.7, 0.5, 0.3),
            init_cfg=dict(type='Pretrained', checkpoint=pretrained))),
    teacher=dict(model=None, checkpoint=teacher_checkpoint),
    ratio_loss_weight=10.0,
    feature_distill_weight=0.5,
    logit_distill_weight=0.0)

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }),
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05))
