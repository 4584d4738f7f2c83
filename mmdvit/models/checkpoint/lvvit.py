"""LV-ViT checkpoint layouts (TokenLabeling's dense release, the DynamicViT authors'
DynamicViT-LVViT release, mmdvit's own) mapped to :class:`~mmdvit.models.DynamicLVViT`'s keys,
and whole classifiers to mmpretrain ``ImageClassifier`` keys (docs/lvvit.md)."""
from typing import Dict, List, Tuple

from torch import Tensor

StateDict = Dict[str, Tensor]

# Keys of the releases' classifiers (class-token head, token-labelling auxiliary head).
LVVIT_HEAD_PREFIXES = ('head.', 'aux_head.')
STEM_KEY = 'patch_embed.conv1.weight'


def detect_lvvit_layout(state: StateDict) -> str:
    """``'dynamicvit-lvvit'`` (the DynamicViT authors' release: score predictors),
    ``'mmdvit'`` (``score_predictors.0.i``) or ``'lvvit'`` (TokenLabeling's dense release).

    Raises:
        ValueError: for a plain ViT / DeiT checkpoint (no convolutional stem) or unknown keys,
            naming what to use instead.
    """
    if STEM_KEY not in state:
        if 'patch_embed.proj.weight' in state or 'patch_embed.projection.weight' in state:
            raise ValueError(
                'this is a plain ViT / DeiT checkpoint (a single patch_embed projection, no '
                f'four-convolution stem {STEM_KEY}): load it into mmdvit.DynamicViT, or give '
                'DynamicLVViT an LV-ViT checkpoint (TokenLabeling lvvit_s / lvvit_m or the '
                'DynamicViT-LVViT release).')
        raise ValueError(f'unrecognised LV-ViT checkpoint: expected {STEM_KEY}, blocks.i.norm1... '
                         'as in the TokenLabeling / DynamicViT-LVViT releases; got e.g. '
                         + ', '.join(list(state)[:5]))
    if any(k.startswith('score_predictor.') for k in state):
        return 'dynamicvit-lvvit'
    return 'mmdvit' if any(k.startswith('score_predictors.') for k in state) else 'lvvit'


def convert_lvvit_checkpoint(state: StateDict) -> Tuple[StateDict, str, List[str]]:
    """Map an LV-ViT state dict (TokenLabeling, DynamicViT-LVViT or mmdvit) to
    :class:`DynamicLVViT`'s keys: the authors' ``score_predictor.i`` becomes
    ``score_predictors.0.i``; ``head.*`` and ``aux_head.*`` (the classifiers) are dropped.

    Returns:
        (converted state dict, detected layout, classifier keys dropped on purpose).
    """
    layout = detect_lvvit_layout(state)
    out, dropped = {}, []
    for key, value in state.items():
        if key.startswith(LVVIT_HEAD_PREFIXES):
            dropped.append(key)
            continue
        if key.startswith('score_predictor.'):
            key = 'score_predictors.0.' + key[len('score_predictor.'):]
        out[key] = value
    return out, layout, dropped


def convert_lvvit_classifier_checkpoint(state: StateDict) -> Tuple[StateDict, str]:
    """A release's whole LV-ViT classifier -> mmpretrain ``ImageClassifier`` keys with
    :class:`DynamicLVViT` and :class:`~mmdvit.models.heads.lvvit_head.LVViTClsHead`:
    ``backbone.*``, ``head.head.*`` and ``head.aux_head.*`` (docs/lvvit.md, 'Checkpoints').

    Raises:
        ValueError: when the state dict lacks the class-token or auxiliary head.
    """
    backbone, layout, dropped = convert_lvvit_checkpoint(state)
    missing = [f'{p}{n}' for p in LVVIT_HEAD_PREFIXES for n in ('weight', 'bias')
               if f'{p}{n}' not in state]
    if missing:
        raise ValueError(f'the LV-ViT classifier checkpoint lacks {missing}: LVViTClsHead needs '
                         'the class-token head and the token-labelling auxiliary head '
                         '(return_dense=True models, as every LV-ViT release).')
    out = {f'backbone.{k}': v for k, v in backbone.items()}
    out.update({f'head.{k}': state[k] for k in dropped})
    return out, layout
