"""Swin Transformer checkpoint layouts, mapped to mmdvit's (= mmseg's) key layout.

Layouts: ``mmseg`` (mmseg / mmdet / mmdvit: ``stages.i.blocks.j.attn.w_msa...``), ``official``
(Microsoft's release and the DynamicSwin authors' release: ``layers.i...``, patch merging at the
end of stage i), ``timm`` (``layers.i...``, patch merging at the start of stage i).
"""
from typing import Dict, List, Tuple

import torch.nn.functional as F
from torch import Tensor

StateDict = Dict[str, Tensor]


def detect_swin_layout(state: StateDict) -> str:
    """Return ``'mmseg'``, ``'official'`` or ``'timm'``."""
    if any(k.startswith('stages.') and '.blocks.' in k for k in state):
        return 'mmseg'
    if any(k.startswith('layers.0.downsample.') for k in state):
        return 'official'
    if any(k.startswith('layers.') for k in state):
        return 'timm'
    raise ValueError('unrecognised Swin checkpoint: expected keys under stages.i.blocks.* '
                     '(mmseg / mmdet) or layers.* (official / timm); got e.g. '
                     + ', '.join(list(state)[:5]))


def unfold_order(tensor: Tensor) -> Tensor:
    """Reorder the 4C patch-merging axis from the official concatenation order (index
    ``(2 * kw + kh) * C + c``) to ``nn.Unfold``'s (index ``4 * c + 2 * kh + kw``).

    tensor: (..., 4C), the reduction weight (out, 4C) or the norm's weight / bias (4C,).
    """
    lead, channels = tensor.shape[:-1], tensor.shape[-1] // 4
    t = tensor.reshape(*lead, 2, 2, channels)  # (..., kw, kh, C)
    t = t.permute(*range(len(lead)), len(lead) + 2, len(lead) + 1, len(lead))  # (..., C, kh, kw)
    return t.reshape(*lead, 4 * channels)


def convert_swin_checkpoint(state: StateDict,
                            num_stages: int = 4) -> Tuple[StateDict, str, List[str]]:
    """Map a Swin state dict of any known layout to mmdvit's layout.

    Returns:
        (converted state dict, detected layout, keys dropped on purpose: classification heads
        and the attention-mask buffers that mmdvit recomputes per input size).
    """
    layout = detect_swin_layout(state)
    if layout == 'mmseg':
        return dict(state), layout, []
    out, dropped = {}, []
    for key, value in state.items():
        if key.startswith('head.') or key.endswith('attn_mask'):
            dropped.append(key)
            continue
        new = key
        if new.startswith('layers.'):
            parts = new.split('.')
            stage = int(parts[1])
            if parts[2] == 'downsample':
                value = unfold_order(value)
                if layout == 'timm':
                    stage -= 1
            parts[0], parts[1] = 'stages', str(stage)
            if parts[2] == 'score_predictor':
                parts = ['score_predictors', str(stage)] + parts[3:]
            new = '.'.join(parts)
            new = (new.replace('.attn.', '.attn.w_msa.').replace('.mlp.fc1.', '.ffn.layers.0.0.')
                   .replace('.mlp.fc2.', '.ffn.layers.1.').replace('.fastmlp.fc1.', '.fast_path.'))
        elif new.startswith('patch_embed.proj.'):
            new = new.replace('patch_embed.proj.', 'patch_embed.projection.')
        elif new.startswith('norm.'):
            new = f'norm{num_stages - 1}.' + new[len('norm.'):]
        out[new] = value
    return out, layout, dropped


def fit_window_tables(state: StateDict, own: StateDict) -> List[str]:
    """Fit the relative-position tables of a checkpoint to another window size, in place.

    A ``relative_position_bias_table`` of another window size ((2w-1)^2, heads) is resized
    per head over its (2w-1) x (2w-1) grid of offsets (bicubic, as mmseg's Swin does when it
    loads weights of another window size); ``relative_position_index`` buffers of another
    size are replaced by the model's own.

    Args:
        state: the converted checkpoint (mmdvit / mmseg key layout).
        own: the model's state dict.

    Returns:
        One ``'<key>: SxS -> TxT'`` note per resized table.
    """
    notes = []
    for key, value in list(state.items()):
        target = own.get(key)
        if target is None or target.shape == value.shape:
            continue
        if key.endswith('relative_position_index'):
            state[key] = target.clone()
        elif key.endswith('relative_position_bias_table') and value.shape[1] == target.shape[1]:
            heads = value.shape[1]
            src, dst = int(round(value.shape[0]**0.5)), int(round(target.shape[0]**0.5))
            grid = value.t().reshape(1, heads, src, src).float()
            grid = F.interpolate(grid, size=(dst, dst), mode='bicubic')
            state[key] = grid.reshape(heads, dst * dst).t().contiguous().to(value.dtype)
            notes.append(f'{key}: {src}x{src} -> {dst}x{dst}')
    return notes
