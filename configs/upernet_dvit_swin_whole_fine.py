# Whole-model sparsity that keeps small and thin things: configs/upernet_dvit_swin_whole.py with
# the decode head chosen on the fine-structure quality benchmark (docs/whole_model.md,
# 'Small and thin things'); the backbone, the start and the distillation are the same:
# - tiles of 32x32 pixels of the image at 1/4 scale (block_size=8; 64x64 at 1/8 scale) instead
#   of 64x64, so a kept tile carries less background around a small object;
# - pruned tiles take a depthwise 3x3 + 1x1 fast path (fast_path_kind='dw3x3') instead of a 1x1
#   convolution, so a small object in a pruned tile keeps its 3x3 context;
# - the tile predictors add a high-frequency cue of the map (detail_cue=True), so tiles with
#   fine detail are kept;
# - keep ratios per convolution: 50% of fpn_convs.0 (1/4 scale), 50% of fpn_convs.1 (1/8
#   scale), 45% of fpn_bottleneck (1/4 scale, the largest convolution);
# - each training step also trains the dense path (dense_path_weight=2.0: the student with
#   every position kept adds twice its task losses), so the kept paths' weights learn from every
#   position as the dense model's do; this doubles the cost of a training step, not inference.
# 236.86 -> 131.20 GFLOPs at 512x512 (1.81x fewer; configs/upernet_dvit_swin_whole.py: 2.12x).
_base_ = './upernet_dvit_swin_whole.py'

model = dict(
    student=dict(
        decode_head=dict(
            keep_ratios=(0.5, 0.5, 0.45),
            block_size=8,
            fast_path_kind='dw3x3',
            detail_cue=True)),
    dense_path_weight=2.0)
