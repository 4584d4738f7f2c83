"""Whole-classifier checkpoints: any supported layout -> mmpretrain ``ImageClassifier`` keys.

The backbone part goes through its family's pure converter (:mod:`.swin`, :mod:`.convnext`,
:mod:`.vit`) and lands under ``backbone.``; the linear classifier lands where mmpretrain's heads
keep it: ``head.fc.*`` (``LinearClsHead``, Swin / ConvNeXt configs) or ``head.layers.head.*``
(``VisionTransformerClsHead``, DeiT configs). The result evaluates with the classification
configs and its ``backbone.`` part initialises the dense-task configs
(``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``).
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from torch import Tensor

from .convnext import convert_convnext_checkpoint
from .lvvit import STEM_KEY, convert_lvvit_classifier_checkpoint
from .swin import convert_swin_checkpoint
from .vit import convert_vit_checkpoint

StateDict = Dict[str, Tensor]
Converter = Callable[[StateDict], Tuple[StateDict, str, List[str]]]

CONVERTERS: Dict[str, Converter] = {
    'swin': convert_swin_checkpoint,
    'convnext': convert_convnext_checkpoint,
    'vit': convert_vit_checkpoint,
}
# Where mmpretrain's head of each family's classification config keeps the linear classifier.
HEAD_PREFIX = {'swin': 'head.fc.', 'convnext': 'head.fc.', 'vit': 'head.layers.head.'}
# Linear classifiers of single-model layouts (official / authors / timm).
SOURCE_HEADS = ('head.weight', 'head.bias', 'head.fc.weight', 'head.fc.bias')
# Source keys with no counterpart because mmdvit recomputes them per input size.
RECOMPUTED = ('attn_mask', )


@dataclass
class ClassifierConversion:
    """Result of :func:`convert_classifier_checkpoint`.

    Attributes:
        state: ``backbone.*`` and ``head.*`` keys of an mmpretrain ``ImageClassifier``.
        family: ``'swin'``, ``'convnext'``, ``'vit'`` or ``'lvvit'``.
        layout: the backbone layout that was detected (``official``, ``timm``, ``mmseg``...).
        unmapped: source keys that have no place in the classifier (e.g. a segmentor's
            ``decode_head.*``, a timm ``fc_norm``); empty for every supported classifier layout.
        recomputed: source buffers dropped because mmdvit recomputes them (Swin ``attn_mask``).
    """

    state: StateDict
    family: str
    layout: str
    unmapped: List[str] = field(default_factory=list)
    recomputed: List[str] = field(default_factory=list)


def detect_family(state: StateDict) -> str:
    """``'vit'``, ``'swin'`` or ``'convnext'`` from the keys of a (backbone) state dict."""
    keys = list(state)
    if 'cls_token' in state:
        return 'vit'
    if any(k.startswith('downsample_layers.') or k.startswith('stem.') or '.dwconv.' in k
           or '.depthwise_conv.' in k or '.conv_dw.' in k for k in keys):
        return 'convnext'
    if any('relative_position_bias_table' in k for k in keys):
        return 'swin'
    raise ValueError('cannot tell the model family of this checkpoint (expected a Swin, ConvNeXt '
                     'or DeiT / ViT state dict); keys look like: ' + ', '.join(keys[:5]))


def _split(state: StateDict) -> Tuple[StateDict, StateDict, List[str]]:
    """(backbone keys, linear-classifier keys, other keys) of a source state dict."""
    if any(k.startswith('backbone.') for k in state):  # an OpenMMLab model
        backbone = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
        head = {k: v for k, v in state.items() if k.startswith(('head.fc.', 'head.layers.head.'))}
        other = [k for k in state if not k.startswith('backbone.') and k not in head]
        return backbone, head, other
    head = {k: state[k] for k in SOURCE_HEADS if k in state}
    backbone = {k: v for k, v in state.items() if k not in head}
    return backbone, head, []


def convert_classifier_checkpoint(state: StateDict,
                                  family: Optional[str] = None) -> ClassifierConversion:
    """Map a classifier (or backbone) state dict of any supported layout to mmpretrain
    ``ImageClassifier`` keys with an mmdvit backbone.

    Args:
        state: the raw state dict (already unwrapped from ``{'model': ...}`` /
            ``{'state_dict': ...}``).
        family: ``'swin'``, ``'convnext'``, ``'vit'`` or ``'lvvit'`` (LV-ViT releases: class-token
            and token-labelling heads as ``head.head`` / ``head.aux_head``, see
            :func:`~mmdvit.models.checkpoint.lvvit.convert_lvvit_classifier_checkpoint`);
            detected from the keys when ``None``.

    Returns:
        A :class:`ClassifierConversion`.
    """
    backbone, head, other = _split(state)
    if family == 'lvvit' or (family is None and STEM_KEY in backbone):
        if other or any(k.startswith('backbone.') for k in state):
            raise ValueError('an LV-ViT checkpoint must be a release state dict (TokenLabeling or '
                             'DynamicViT-LVViT), not an OpenMMLab model')
        converted, layout = convert_lvvit_classifier_checkpoint(state)
        return ClassifierConversion(converted, 'lvvit', layout)
    family = family or detect_family(backbone)
    if family not in CONVERTERS:
        raise ValueError(f'family={family!r}; use one of {sorted(CONVERTERS)}.')
    converted, layout, dropped = CONVERTERS[family](backbone)
    out = {f'backbone.{k}': v for k, v in converted.items()}
    for key, value in head.items():
        out[HEAD_PREFIX[family] + key.rsplit('.', 1)[-1]] = value
    recomputed = [k for k in dropped if k.endswith(RECOMPUTED)]
    unmapped = other + [k for k in dropped if k not in recomputed and k not in head]
    return ClassifierConversion(out, family, layout, unmapped, recomputed)
