# Whole-model sparsity: Mask R-CNN + DynamicSwin-T (window sparsity in every stage) with a spatially
# sparse FPN (mmdvit.DynamicFPN) and RPN head (mmdvit.DynamicRPNHead) on COCO. Inherits
# configs/maskrcnn_dvit_swin.py and changes only what makes the whole model sparse:
# - the backbone prunes attention windows in every stage (granularity='window'): predictors
#   before block 0 of each stage and before blocks 2 and 4 of stage 2 keep 60% / 60% /
#   60%-50%-40% / 50% of the 7x7 windows; a kept window runs the whole block (attention and MLP),
#   a pruned one a LayerNorm + Linear (Swin-T backbone at 800x1333: 99.0 -> 61.3 GFLOPs);
# - the 3x3 convolutions at P2 (1/4 scale) and P3 (1/8) of the FPN outputs and of the RPN head
#   (about 100 of the model's ~275 GFLOPs at 800x1333) run on the kept 64x64-pixel tiles of the
#   image (16x16 tiles at P2, 8x8 at P3), with a 1x1 fast path elsewhere; padded positions of a
#   batch compete for the kept tiles like any other;
# - the student starts from the dense Mask R-CNN (the teacher's checkpoint): predictors and
#   fast paths are the only new parameters (fast paths start from the kernels);
# - feature distillation covers the FPN outputs as well as the backbone's.
_base_ = './maskrcnn_dvit_swin.py'

model = dict(
    student=dict(
        backbone=dict(
            init_cfg=None,  # overwritten by student_checkpoint
            granularity='window',
            sparse_stages=(0, 1, 2, 3),
            pruning_locs=((0, ), (0, ), (0, 2, 4), (0, )),
            keep_ratios=(0.6, 0.6, 0.6, 0.5, 0.4, 0.5)),
        neck=dict(type='mmdvit.DynamicFPN', sparse_levels=(0, 1), keep_ratios=(0.3, 0.4),
                  block_size=16),
        rpn_head=dict(type='mmdvit.DynamicRPNHead', sparse_levels=(0, 1), keep_ratios=(0.3, 0.4),
                      block_size=16)),
    student_checkpoint=_base_.teacher_checkpoint,
    feature_distill_from=('backbone', 'neck'))
