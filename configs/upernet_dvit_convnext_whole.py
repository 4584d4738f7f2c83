# Whole-model sparsity: UPerNet + DynamicConvNeXt-T (rho 0.7) with a spatially sparse decode
# head (mmdvit.DynamicUPerHead) on ADE20K 512x512. Inherits configs/upernet_dvit_convnext.py and
# changes only what makes the whole model sparse (as configs/upernet_dvit_swin_whole.py): the
# head's 3x3 convolutions at 1/4 and 1/8 scale run on kept tiles, the student starts from the
# dense UPerNet ConvNeXt-T, and the teacher's logits are distilled too.
_base_ = './upernet_dvit_convnext.py'

model = dict(
    student=dict(
        backbone=dict(init_cfg=None),  # overwritten by student_checkpoint
        decode_head=dict(
            type='mmdvit.DynamicUPerHead',
            sparse_convs=('fpn_convs.0', 'fpn_convs.1', 'fpn_bottleneck'),
            keep_ratios=(0.4, 0.4, 0.35),
            block_size=16)),
    student_checkpoint=_base_.teacher_checkpoint,
    logit_distill_weight=0.5)
