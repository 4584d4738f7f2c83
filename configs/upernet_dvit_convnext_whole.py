# Whole-model sparsity: UPerNet + DynamicConvNeXt-T (every stage sparse) with a spatially sparse
# decode head (mmdvit.DynamicUPerHead) on ADE20K 512x512. Inherits configs/upernet_dvit_convnext.py
# and changes only what makes the whole model sparse (as configs/upernet_dvit_swin_whole.py): the
# backbone splits the pointwise MLP of every stage (predictors before block 0 of each stage and
# before blocks 3 and 6 of stage 2, keeping 50% / 50% / 60%-50%-40% / 50% of the positions; the 7x7
# depthwise convolutions stay dense), the head's 3x3 convolutions at 1/4 and 1/8 scale run on kept
# tiles, the student starts from the dense UPerNet ConvNeXt-T, and the teacher's logits are
# distilled too.
_base_ = './upernet_dvit_convnext.py'

model = dict(
    student=dict(
        backbone=dict(
            init_cfg=None,  # overwritten by student_checkpoint
            sparse_stages=(0, 1, 2, 3),
            pruning_locs=((0, ), (0, ), (0, 3, 6), (0, )),
            keep_ratios=(0.5, 0.5, 0.6, 0.5, 0.4, 0.5)),
        decode_head=dict(
            type='mmdvit.DynamicUPerHead',
            sparse_convs=('fpn_convs.0', 'fpn_convs.1', 'fpn_bottleneck'),
            keep_ratios=(0.4, 0.4, 0.35),
            block_size=16)),
    student_checkpoint=_base_.teacher_checkpoint,
    logit_distill_weight=0.5)
