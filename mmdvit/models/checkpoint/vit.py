"""Plain ViT (DeiT) checkpoint layouts, mapped to mmdvit's (= timm's) key layout.

Layouts: ``timm`` (timm's ``VisionTransformer``, Meta's DeiT release, and the DynamicViT
authors' release, whose ``score_predictor.i`` becomes ``score_predictors.0.i``) and
``mmpretrain`` (mmpretrain's ``VisionTransformer``: ``patch_embed.projection``,
``layers.i.{ln1, attn, ln2, ffn}``, final norm ``ln1``).
"""
import math
import re
from typing import Dict, List, Tuple

from mmpretrain.models.utils import resize_pos_embed as mmpretrain_resize_pos_embed
from torch import Tensor

StateDict = Dict[str, Tensor]

_MMPRETRAIN_BLOCK = {'ln1': 'norm1', 'ln2': 'norm2', 'attn': 'attn',
                     'ffn.layers.0.0': 'mlp.fc1', 'ffn.layers.1': 'mlp.fc2'}
# Keys a classification-only layout holds that the backbone does not have.
_HEAD_PREFIXES = ('head.', 'fc_norm.')


def detect_vit_layout(state: StateDict) -> str:
    """Return ``'timm'`` or ``'mmpretrain'``."""
    if 'dist_token' in state:
        raise ValueError('distilled DeiT checkpoints (dist_token, head_dist) are not supported: '
                         'their class token was trained next to a distillation token. Use the '
                         'plain DeiT weights (deit_small_patch16_224 / deit_base_patch16_224).')
    if any(k.startswith('blocks.') for k in state):
        return 'timm'
    if any(k.startswith('layers.') and '.ln1.' in k for k in state):
        return 'mmpretrain'
    raise ValueError('unrecognised ViT checkpoint: expected timm / DeiT / DynamicViT keys '
                     '(blocks.i.norm1...) or mmpretrain keys (layers.i.ln1...); got e.g. '
                     + ', '.join(list(state)[:5]))


def _map_mmpretrain(key: str) -> str:
    if key.startswith('patch_embed.projection.'):
        return 'patch_embed.proj.' + key[len('patch_embed.projection.'):]
    if key.startswith('ln1.'):
        return 'norm.' + key[len('ln1.'):]
    match = re.match(r'layers\.(\d+)\.(.+)$', key)
    if match:
        index, rest = match.groups()
        for old, new in _MMPRETRAIN_BLOCK.items():
            if rest.startswith(old + '.'):
                return f'blocks.{index}.{new}{rest[len(old):]}'
    return key


def convert_vit_checkpoint(state: StateDict) -> Tuple[StateDict, str, List[str]]:
    """Map a ViT state dict of any known layout to mmdvit's layout.

    Returns:
        (converted state dict, detected layout, classification-head keys dropped on purpose).
    """
    layout = detect_vit_layout(state)
    out, dropped = {}, []
    for key, value in state.items():
        if key.startswith(_HEAD_PREFIXES):
            dropped.append(key)
            continue
        if layout == 'mmpretrain':
            key = _map_mmpretrain(key)
        elif key.startswith('score_predictor.'):
            key = 'score_predictors.0.' + key[len('score_predictor.'):]
        out[key] = value
    return out, layout, dropped


def resize_pos_embed(pos_embed: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Resize a position embedding with one leading class-token row to a new patch grid.

    Args:
        pos_embed: (1, 1 + h0 * w0, C); the source grid must be square.
        grid: (h, w), the target patch grid.

    Returns:
        (1, 1 + h * w, C), bicubic interpolation of the patch rows (mmpretrain's
        ``resize_pos_embed``).
    """
    num_src = pos_embed.shape[1] - 1
    side = math.isqrt(num_src)
    if side * side != num_src:
        raise ValueError(f'pos_embed has {num_src} patch rows, not a square grid: cannot '
                         'resize it.')
    return mmpretrain_resize_pos_embed(pos_embed, (side, side), tuple(grid), 'bicubic', 1)
