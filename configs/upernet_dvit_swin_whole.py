# Whole-model sparsity: UPerNet + DynamicSwin-T (window sparsity in every stage) with a spatially
# sparse decode head (mmdvit.DynamicUPerHead) on ADE20K 512x512. Inherits
# configs/upernet_dvit_swin.py and changes only what makes the whole model sparse:
# - the backbone prunes attention windows in every stage (granularity='window'): predictors
#   before block 0 of each stage and before blocks 2 and 4 of stage 2 keep 60% / 60% /
#   60%-50%-40% / 50% of the 7x7 windows; a kept window runs the whole block (attention and MLP),
#   a pruned one a LayerNorm + Linear (Swin-T backbone at 800x1333: 99.0 -> 61.3 GFLOPs);
# - the head's 3x3 convolutions at 1/4 and 1/8 scale (fpn_convs.0, fpn_convs.1, fpn_bottleneck:
#   about 200 of the model's 237 GFLOPs at 512x512) run on the kept 64x64-pixel tiles of the
#   image (16x16 tiles at 1/4 scale), with a 1x1 fast path elsewhere;
# - the student starts from the dense UPerNet Swin-T (the teacher's checkpoint): the new
#   predictors and fast paths are the only new parameters (fast paths start from the kernels);
# - distillation adds the teacher's logits (KL, weight 0.5) to the backbone features, since the
#   head now changes too.
_base_ = './upernet_dvit_swin.py'

model = dict(
    student=dict(
        backbone=dict(
            init_cfg=None,  # overwritten by student_checkpoint
            granularity='window',
            sparse_stages=(0, 1, 2, 3),
            pruning_locs=((0, ), (0, ), (0, 2, 4), (0, )),
            keep_ratios=(0.6, 0.6, 0.6, 0.5, 0.4, 0.5)),
        decode_head=dict(
            type='mmdvit.DynamicUPerHead',
            sparse_convs=('fpn_convs.0', 'fpn_convs.1', 'fpn_bottleneck'),
            keep_ratios=(0.4, 0.4, 0.35),
            block_size=16)),
    student_checkpoint=_base_.teacher_checkpoint,
    logit_distill_weight=0.5)
