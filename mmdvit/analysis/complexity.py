"""FLOPs (multiply-adds) and parameters of a dynamic model and its dense twin, side by side."""
from statistics import mean
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.config import Config
from torch import nn

from ..models.dense_twin import dense_twin_config
from ..sparse import SparsityDecision, decision_label, record_decisions
from .flops import count_macs
from .inputs import model_inputs
from .models import build_model, copy_shared_weights, default_scope, load_weights, model_config

CONVENTION = (
    'GFLOPs per image, counted as multiply-adds (1 MAC = 1 FLOP, the fvcore / mmengine '
    'convention of the published figures) of the ops that inference executes: convolutions, '
    'linear layers and matrix products at the sizes they really run (gathered subsets count '
    'their own size; score predictors and fast paths are included). Not counted: element-wise '
    'ops, normalisation, activations, softmax, top-k, gather / scatter (data movement, no '
    'multiply-adds), pooling, interpolation, RoIAlign, NMS. Whole models are counted in their '
    "'tensor' mode (backbone, neck and heads without post-processing, as mmseg / mmdet "
    'get_flops); auxiliary heads do not run at inference and are not counted.')
RANDOM_WEIGHTS_NOTE = (
    'With random weights every image gives the same backbone count: inference keeps a fixed '
    'k = max(1, int(N * ratio)) positions per predictor whatever the image. Detector heads can '
    'still vary with the number of region proposals.')


def backbone_of(model: nn.Module) -> nn.Module:
    """The backbone of a model (the model itself when it is a bare backbone)."""
    return model.backbone if hasattr(model, 'backbone') else model


def image_macs(model: nn.Module, image: np.ndarray,
               shape: Optional[Sequence[int]]) -> Dict[str, Any]:
    """MACs of one image (resized to ``shape``) through the backbone and the whole model, and
    the decisions of the whole model (of the backbone, for a bare backbone)."""
    data = model_inputs(model, [image], shape)
    inputs, samples = data['inputs'], data['data_samples']
    backbone, decisions = _macs_and_decisions(backbone_of(model), inputs)
    whole = backbone
    if hasattr(model, 'backbone'):
        whole, decisions = _macs_and_decisions(model, inputs, samples, mode='tensor')
    return dict(backbone=backbone, model=whole, input_shape=list(inputs.shape[-2:]),
                decisions=decisions)


def _macs_and_decisions(fn: Callable[..., Any], *args: Any,
                        **kwargs: Any) -> Tuple[float, List[SparsityDecision]]:
    """:func:`~.flops.count_macs` of ``fn(*args, **kwargs)`` and the decisions it made."""
    with record_decisions() as decisions:
        macs = count_macs(fn, *args, **kwargs)
    return macs, decisions


def num_params(module: nn.Module) -> float:
    """Parameters in millions."""
    return sum(p.numel() for p in module.parameters()) / 1e6


def decision_unit(decision: SparsityDecision) -> str:
    """What a decision keeps or prunes: ``'tiles'`` (necks, heads), ``'windows'`` (window
    granularity) or ``'positions'``."""
    if decision.source != 'backbone':
        return 'tiles'
    return 'positions' if decision.window_size is None else 'windows'


def kept_positions(decisions: Sequence[SparsityDecision]) -> List[Dict[str, Any]]:
    """What each of the ``decisions`` of a forward pass (backbone, neck, heads) kept in image
    0. For necks and heads, positions are tiles and ``stage`` is the pyramid level; ``unit``
    names what was decided (``'positions'``, ``'windows'`` or ``'tiles'``)."""
    return [
        dict(name=decision_label(d), source=d.source, stage=d.stage, index=d.index,
             keep_ratio=round(d.keep_ratio, 4), hw_shape=list(d.hw_shape),
             kept=int(d.keep_mask[0].sum()), positions=int(d.keep_mask.shape[1]),
             unit=decision_unit(d))
        for d in decisions
    ]


def complexity(cfg: Config, shape: Optional[Sequence[int]], images: Sequence[np.ndarray],
               checkpoint: Optional[str] = None, trust: bool = False) -> Dict[str, Any]:
    """FLOPs and parameters of the config's model (dynamic) and of its dense twin.

    Args:
        cfg: a model config (``mmdvit.SparsityTrainer`` configs are measured on their student).
        shape: (H, W) every image is resized to; ``None`` keeps each image's size.
        images: (H, W, 3) uint8 RGB images; the figures are averages over them.
        checkpoint: optional checkpoint of the model; the dense twin shares its weights.
        trust: unpickle ``checkpoint`` fully (a file the user trusts).

    Returns:
        ``{"shape", "input_shape", "num_images", "backbone": {"dense", "dynamic"},
        "neck_and_heads": {...}, "model": {"dense", "dynamic"}, "params": {...}, "kept": [...],
        "convention", "note"}`` with FLOPs in G (1e9 MACs) per image and parameters in M;
        ``neck_and_heads`` is the whole model minus the backbone.
    """
    if not images:
        raise ValueError('give at least one image')
    model_cfg, scope = model_config(cfg), default_scope(cfg)
    dynamic = build_model(model_cfg, scope)
    load_weights(dynamic, checkpoint, trust)
    dense = build_model(dense_twin_config(model_cfg), scope)
    copy_shared_weights(dynamic, dense)
    per_model = {}
    for name, model in (('dense', dense), ('dynamic', dynamic)):
        per_model[name] = [image_macs(model, img, shape) for img in images]
    kept = kept_positions(per_model['dynamic'][-1]['decisions'])

    def giga(name: str, part: str) -> float:
        return round(mean(r[part] for r in per_model[name]) / 1e9, 4)

    first = per_model['dynamic'][0]
    return {
        'shape': list(shape) if shape is not None else None,
        'input_shape': first['input_shape'],
        'num_images': len(images),
        'backbone': {name: giga(name, 'backbone') for name in ('dense', 'dynamic')},
        'neck_and_heads': {name: round(giga(name, 'model') - giga(name, 'backbone'), 4)
                           for name in ('dense', 'dynamic')},
        'model': {name: giga(name, 'model') for name in ('dense', 'dynamic')},
        'params': {
            'unit': 'M',
            'backbone': {'dense': round(num_params(backbone_of(dense)), 4),
                         'dynamic': round(num_params(backbone_of(dynamic)), 4)},
            'model': {'dense': round(num_params(dense), 4),
                      'dynamic': round(num_params(dynamic), 4)},
        },
        'kept': kept,
        'unit': 'GFLOPs (= GMACs) per image',
        'convention': CONVENTION,
        'note': RANDOM_WEIGHTS_NOTE if checkpoint in (None, 'none') else '',
    }
