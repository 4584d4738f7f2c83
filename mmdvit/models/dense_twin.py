"""The dense twin of a model config: the same model with sparsification disabled.

The one definition used by :class:`~mmdvit.SparsityTrainer` (its default teacher) and by the
analysis tools (the "twin" of FLOPs and benchmark rows).
"""
import copy
import inspect

from mmengine.config import ConfigDict

# mmdvit type -> the upstream module with the same arguments (minus SPARSITY_ARGS) and
# parameter names: it loads the mmdvit module's dense weights. timm's VisionTransformer has no
# registry type (see mmdvit.analysis.models.build_upstream_backbone).
UPSTREAM_TYPES = {
    'mmdvit.DynamicSwinTransformer': 'mmseg.SwinTransformer',
    'mmdvit.DynamicConvNeXt': 'mmpretrain.ConvNeXt',
    'mmdvit.DynamicViT': 'timm.VisionTransformer',
    'mmdvit.DynamicUPerHead': 'mmseg.UPerHead',
    'mmdvit.DynamicFPN': 'mmdet.FPN',
    'mmdvit.DynamicRPNHead': 'mmdet.RPNHead',
}
# Keyword arguments of mmdvit's backbones, necks and heads that make them dynamic; their
# upstream counterparts do not take them.
SPARSITY_ARGS = ('keep_ratios', 'sparse_stages', 'pruning_locs', 'granularity', 'sparse_convs',
                 'sparse_levels', 'block_size', 'score_dims', 'fast_path_kind', 'fast_path_rank',
                 'detail_cue', 'neighbour_bonus')


def backbone_config(model_cfg: ConfigDict) -> ConfigDict:
    """The backbone part of a model config (the config itself for a bare backbone)."""
    return model_cfg.backbone if 'backbone' in model_cfg else model_cfg


def dynamic_backbone_class(backbone_cfg: ConfigDict) -> type:
    """The mmdvit class of a ``type='mmdvit.Dynamic...'`` backbone config; others raise."""
    from ..registry import MODELS as MMDVIT_MODELS
    name = str(backbone_cfg.get('type', ''))
    short = name[len('mmdvit.'):] if name.startswith('mmdvit.') else None
    cls = MMDVIT_MODELS.get(short) if short else None
    if cls is None:
        raise ValueError(f"backbone type {name!r} is not an mmdvit dynamic backbone; the tools "
                         "compare type='mmdvit.DynamicSwinTransformer' / 'mmdvit.DynamicConvNeXt' "
                         '/ ... with its dense twin.')
    return cls


def upstream_heads_config(model_cfg: ConfigDict) -> ConfigDict:
    """A copy of ``model_cfg`` whose mmdvit necks and heads (``mmdvit.DynamicUPerHead``,
    ``mmdvit.DynamicFPN``, ``mmdvit.DynamicRPNHead``) are the upstream modules they extend, with
    the same arguments minus the sparsity ones: the dense counterparts, which load the same
    weights (every parameter but the gates')."""
    model_cfg = copy.deepcopy(model_cfg)
    for key in list(model_cfg):
        node = model_cfg[key]
        if key == 'backbone':  # stays mmdvit's: the dense twin turns its sparsity off instead
            continue
        if isinstance(node, dict) and node.get('type') in UPSTREAM_TYPES:
            dense = {k: v for k, v in node.items() if k not in SPARSITY_ARGS}
            model_cfg[key] = ConfigDict(dense, type=UPSTREAM_TYPES[node['type']])
    return model_cfg


def dense_twin_config(model_cfg: ConfigDict) -> ConfigDict:
    """The same model with sparsification disabled: ``sparse_stages=()`` (Swin, ConvNeXt) or
    ``pruning_locs=()`` with ``keep_ratios=()`` (ViT), and upstream necks / heads in place of
    mmdvit's (:func:`upstream_heads_config`). No predictors, no fast paths; it computes exactly
    the upstream dense model (tested in the backbone and head suites)."""
    twin = upstream_heads_config(model_cfg)
    backbone = backbone_config(twin)
    params = inspect.signature(dynamic_backbone_class(backbone)).parameters
    if 'sparse_stages' in params:
        backbone.sparse_stages = ()
    else:
        backbone.pruning_locs, backbone.keep_ratios = (), ()
    return twin
