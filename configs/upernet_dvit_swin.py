# UPerNet + DynamicSwin-T (rho 0.7) on ADE20K 512x512, 160k iterations, 8 GPUs x 2 images.
# mmseg's Swin-T recipe (AdamW 6e-5, warm-up 1.5k, poly decay, ImageNet-1k Swin-T weights)
# plus sparsity training (mmdvit.SparsityTrainer): keep-ratio loss (weight 10) and MSE
# distillation of the four backbone outputs from the dense Swin-T UPerNet (weight 0.5).
# Local weights (nothing is downloaded; docs/dense_tasks.md says where each file comes from):
#   checkpoints/swin_tiny_patch4_window7_224.pth  ImageNet-1k Swin-T (official or mmseg release)
#   checkpoints/upernet_swin-t_ade20k.pth         dense UPerNet Swin-T trained on ADE20K (mmseg)
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/swin_tiny_patch4_window7_224.pth'
teacher_checkpoint = 'checkpoints/upernet_swin-t_ade20k.pth'

# The upstream segmentor becomes the student; only its backbone type and weights path change.
model = dict(
    _delete_=True,
    type='mmdvit.SparsityTrainer',
    student=dict(
        _base_.model,
        backbone=dict(
            _base_.model.backbone,
            type='mmdvit.DynamicSwinTransformer',
            keep_ratios=(0.7, 0.5, 0.3),
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file))),
    # model=None: the student with every keep ratio at 1.0, i.e. the dense Swin-T UPerNet.
    teacher=dict(model=None, checkpoint=teacher_checkpoint),
    ratio_loss_weight=10.0,
    feature_distill_weight=0.5,
    logit_distill_weight=0.0)
