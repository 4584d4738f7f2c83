"""ConvNeXt checkpoint layouts, mapped to mmdvit's (= mmpretrain's) key layout.

Layouts: ``mmpretrain`` (mmpretrain / mmseg / mmdet / mmdvit: ``stages.i.j.depthwise_conv``...),
``official`` (Meta's release and the DynamicCNN authors' release: ``stages.i.j.dwconv``...),
``timm`` (``stem.*``, ``stages.i.downsample.*``, ``stages.i.blocks.j.conv_dw``...).
"""
from typing import Dict, List, Tuple

from torch import Tensor

StateDict = Dict[str, Tensor]

_OFFICIAL_BLOCK = {'dwconv': 'depthwise_conv', 'pwconv1': 'pointwise_conv1',
                   'pwconv2': 'pointwise_conv2'}
_TIMM_BLOCK = {'conv_dw': 'depthwise_conv', 'mlp.fc1': 'pointwise_conv1',
               'mlp.fc2': 'pointwise_conv2'}


def detect_convnext_layout(state: StateDict) -> str:
    """Return ``'mmpretrain'``, ``'official'`` or ``'timm'``."""
    if any(k.startswith('stem.') for k in state):
        return 'timm'
    if any('.dwconv.' in k for k in state):
        return 'official'
    if any('.depthwise_conv.' in k for k in state):
        return 'mmpretrain'
    raise ValueError('unrecognised ConvNeXt checkpoint: expected mmpretrain (depthwise_conv), '
                     'official (dwconv) or timm (stem, conv_dw) keys; got e.g. '
                     + ', '.join(list(state)[:5]))


def _rename(rest: str, table: Dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old + '.'):
            return new + rest[len(old):]
    return rest


def convert_convnext_checkpoint(state: StateDict,
                                num_stages: int = 4) -> Tuple[StateDict, str, List[str]]:
    """Map a ConvNeXt state dict of any known layout to mmdvit's layout.

    The final ``norm`` of official / timm checkpoints (applied after global pooling) becomes
    ``norm{num_stages - 1}``. The DynamicCNN authors' ``score_predictor.i`` (1x1 convolutions)
    becomes ``score_predictors.2.i`` with linear weights.

    Returns:
        (converted state dict, detected layout, classification-head keys dropped on purpose).
    """
    layout = detect_convnext_layout(state)
    if layout == 'mmpretrain':
        return dict(state), layout, []
    last_norm = f'norm{num_stages - 1}.'
    out, dropped = {}, []
    for key, value in state.items():
        new = key
        if layout == 'official':
            if key.startswith('head.'):
                dropped.append(key)
                continue
            if key.startswith('norm.'):
                new = last_norm + key[len('norm.'):]
            elif key.startswith('stages.'):
                stage, block, rest = key.split('.', 3)[1:]
                new = f'stages.{stage}.{block}.' + _rename(rest, _OFFICIAL_BLOCK)
            elif key.startswith('score_predictor.'):
                new = 'score_predictors.2.' + key[len('score_predictor.'):]
                if value.ndim == 4:
                    value = value.flatten(1)
        else:  # timm
            if key.startswith('head.fc.'):
                dropped.append(key)
                continue
            if key.startswith('head.norm.'):
                new = last_norm + key[len('head.norm.'):]
            elif key.startswith('stem.'):
                new = 'downsample_layers.0.' + key[len('stem.'):]
            elif key.startswith('stages.'):
                stage, kind, rest = key.split('.', 3)[1:]
                if kind == 'downsample':
                    new = f'downsample_layers.{stage}.{rest}'
                else:  # blocks
                    block, rest = rest.split('.', 1)
                    new = f'stages.{stage}.{block}.' + _rename(rest, _TIMM_BLOCK)
        out[new] = value
    return out, layout, dropped
