"""Pictures of which locations each predictor kept (the papers' progressive-sparsification
figure): the input, then one panel per predictor with the pruned locations faded."""
import math
from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from ..sparse import SparseModule, decision_label, record_decisions, sparse_children
from .complexity import backbone_of
from .inputs import model_inputs, preprocess

CAPTION_HEIGHT = 20
LEGEND_HEIGHT = 16
# Pruned locations keep this share of their colour and fade to white (as in the papers).
PRUNED_OPACITY = 0.25
LEGEND = 'full colour = kept (slow path), faded = pruned (fast path)'


def cell_stride(input_hw: Sequence[int], grid_hw: Sequence[int]) -> int:
    """Pixels per feature-map cell: the power of two closest to input / grid (backbones pad
    or floor their inputs, so the plain quotient is only approximately the stride)."""
    ratio = max(input_hw[0] / grid_hw[0], input_hw[1] / grid_hw[1])
    return 2**round(math.log2(ratio))


def kept_maps(model: nn.Module, image: np.ndarray) -> List[Tuple[dict, np.ndarray]]:
    """Run the model on one image and return, per predictor, its description and the (H, W)
    bool map of kept pixels (True = the pixel's location was kept). A model whose neck or
    heads are sparse too (``mmdvit.DynamicUPerHead``, ...) runs whole (``tensor`` mode) and
    their kept tiles follow the backbone's predictors; otherwise only the backbone runs.

    Args:
        model: a model with a dynamic backbone (or the backbone), in eval mode.
        image: (H, W, 3) uint8 RGB, any size.
    """
    backbone = backbone_of(model)
    if not isinstance(backbone, SparseModule):
        raise TypeError(f'{type(backbone).__name__} is not an mmdvit dynamic backbone: there '
                        'are no kept locations to show.')
    whole = any(name != 'backbone' for name, _ in sparse_children(model))
    with torch.no_grad(), record_decisions() as decisions:
        if whole:
            data = model_inputs(model, [image], None)
            inputs = data['inputs']
            model(inputs, data['data_samples'], mode='tensor')
        else:
            inputs = preprocess(model, [image])['inputs']
            backbone(inputs)
    height, width = image.shape[:2]
    maps = []
    for d in decisions:
        grid = d.keep_mask[0].view(*d.hw_shape).cpu().numpy() > 0.5
        stride = cell_stride(inputs.shape[-2:], d.hw_shape)
        full = np.zeros((max(height, grid.shape[0] * stride),
                         max(width, grid.shape[1] * stride)), dtype=bool)
        up = grid.repeat(stride, axis=0).repeat(stride, axis=1)
        full[:up.shape[0], :up.shape[1]] = up
        info = dict(name=decision_label(d), source=d.source, stage=d.stage, index=d.index,
                    keep_ratio=d.keep_ratio, kept=int(grid.sum()), positions=int(grid.size))
        maps.append((info, full[:height, :width]))
    return maps


def caption(info: dict) -> str:
    """``stage 2 #0: 716/1024`` for backbone predictors (0-based stages, as the arguments),
    ``decode_head #1 (level 0): 25/64`` for necks and heads."""
    where = (f"stage {info['stage']} #{info['index']}" if info['source'] == 'backbone' else
             f"{info['source']} #{info['index']} (level {info['stage']})")
    return f"{where}: {info['kept']}/{info['positions']}"


def fade_pruned(image: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 with the pixels where ``kept`` is False faded to white."""
    faded = image.astype(np.float32) * PRUNED_OPACITY + 255.0 * (1 - PRUNED_OPACITY)
    return np.where(kept[..., None], image, faded.astype(np.uint8))


def render(image: np.ndarray, maps: Sequence[Tuple[dict, np.ndarray]]) -> Image.Image:
    """The input and one faded panel per predictor, side by side, each under a caption, and
    the :data:`LEGEND` in a row below.

    Returns:
        An RGB image of width (1 + len(maps)) * W and height
        H + :data:`CAPTION_HEIGHT` + :data:`LEGEND_HEIGHT`.
    """
    height, width = image.shape[:2]
    canvas = Image.new('RGB', ((1 + len(maps)) * width,
                               height + CAPTION_HEIGHT + LEGEND_HEIGHT), 'white')
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    panels = [('input', image)] + [(caption(info), fade_pruned(image, kept))
                                   for info, kept in maps]
    for i, (text, panel) in enumerate(panels):
        canvas.paste(Image.fromarray(panel), (i * width, CAPTION_HEIGHT))
        draw.text((i * width + 3, 3), text, fill='black', font=font)
    draw.text((3, CAPTION_HEIGHT + height + 3), LEGEND, fill='black', font=font)
    return canvas
