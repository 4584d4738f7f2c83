"""Pictures of which locations each predictor kept (the papers' progressive-sparsification
figure): the input, then one panel per predictor with the pruned locations faded."""
import math
from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from .complexity import backbone_of
from .inputs import preprocess

CAPTION_HEIGHT = 20
# Pruned locations keep this share of their colour and fade to white (as in the papers).
PRUNED_OPACITY = 0.25


def cell_stride(input_hw: Sequence[int], grid_hw: Sequence[int]) -> int:
    """Pixels per feature-map cell: the power of two closest to input / grid (backbones pad
    or floor their inputs, so the plain quotient is only approximately the stride)."""
    ratio = max(input_hw[0] / grid_hw[0], input_hw[1] / grid_hw[1])
    return 2**round(math.log2(ratio))


def kept_maps(model: nn.Module, image: np.ndarray) -> List[Tuple[dict, np.ndarray]]:
    """Run the backbone on one image and return, per predictor, its description and the
    (H, W) bool map of kept pixels (True = the pixel's location was kept).

    Args:
        model: a model with a dynamic backbone (or the backbone), in eval mode.
        image: (H, W, 3) uint8 RGB, any size.
    """
    inputs = preprocess(model, [image])['inputs']
    backbone = backbone_of(model)
    if not hasattr(backbone, 'sparsity_decisions'):
        raise TypeError(f'{type(backbone).__name__} is not an mmdvit dynamic backbone: there '
                        'are no kept locations to show.')
    with torch.no_grad():
        backbone(inputs)
    height, width = image.shape[:2]
    maps = []
    for d in backbone.sparsity_decisions:
        grid = d.keep_mask[0].view(*d.hw_shape).cpu().numpy() > 0.5
        stride = cell_stride(inputs.shape[-2:], d.hw_shape)
        full = np.zeros((max(height, grid.shape[0] * stride),
                         max(width, grid.shape[1] * stride)), dtype=bool)
        up = grid.repeat(stride, axis=0).repeat(stride, axis=1)
        full[:up.shape[0], :up.shape[1]] = up
        info = dict(stage=d.stage, index=d.index, keep_ratio=d.keep_ratio,
                    kept=int(grid.sum()), positions=int(grid.size))
        maps.append((info, full[:height, :width]))
    return maps


def fade_pruned(image: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 with the pixels where ``kept`` is False faded to white."""
    faded = image.astype(np.float32) * PRUNED_OPACITY + 255.0 * (1 - PRUNED_OPACITY)
    return np.where(kept[..., None], image, faded.astype(np.uint8))


def render(image: np.ndarray, maps: Sequence[Tuple[dict, np.ndarray]]) -> Image.Image:
    """The input and one faded panel per predictor, side by side, each under a caption.

    Returns:
        An RGB image of width (1 + len(maps)) * W and height H + :data:`CAPTION_HEIGHT`.
    """
    height, width = image.shape[:2]
    canvas = Image.new('RGB', ((1 + len(maps)) * width, height + CAPTION_HEIGHT), 'white')
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    panels = [('input', image)] + [
        (f"stage {info['stage'] + 1} #{info['index']}: {info['kept']}/{info['positions']}",
         fade_pruned(image, kept)) for info, kept in maps
    ]
    for i, (caption, panel) in enumerate(panels):
        canvas.paste(Image.fromarray(panel), (i * width, CAPTION_HEIGHT))
        draw.text((i * width + 3, 3), caption, fill='black', font=font)
    return canvas
