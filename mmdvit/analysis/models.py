"""Building the models that the analysis tools measure from a config: the dynamic model, its
dense twin (same config, no sparsification) and the upstream dense backbone it replaces."""
import copy
import os
from typing import Optional, Sequence, Tuple, Union

from mmengine.config import Config, ConfigDict
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, DefaultScope
from torch import nn

from ..models.checkpoint import extract_state_dict, load_checkpoint_file
from ..models.dense_twin import (SPARSITY_ARGS, UPSTREAM_TYPES, backbone_config,
                                 dynamic_backbone_class)
from ..models.wrappers.sparsity_trainer import check_wrapper_fields
from .presets import preset_config

WRAPPER_TYPE = 'mmdvit.SparsityTrainer'


def load_config(config: Union[str, Config], cfg_options: Optional[dict] = None) -> Config:
    """Read a config file, a preset name (:data:`~mmdvit.analysis.presets.PRESETS`) or take a
    loaded config, and merge ``--cfg-options`` style overrides."""
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    elif os.path.isfile(config):
        cfg = Config.fromfile(config)
    else:
        cfg = preset_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def set_keep_ratios(model_cfg: ConfigDict, keep_ratios: Sequence[float]) -> ConfigDict:
    """A copy of ``model_cfg`` whose backbone uses ``keep_ratios``."""
    model_cfg = copy.deepcopy(model_cfg)
    backbone_config(model_cfg).keep_ratios = tuple(float(r) for r in keep_ratios)
    return model_cfg


def model_config(cfg: Config) -> ConfigDict:
    """The model the tools measure: ``cfg.model``, or its ``student`` when the config wraps it in
    ``mmdvit.SparsityTrainer`` (the teacher is a training-time helper, not part of inference).

    A config whose ``model`` is a bare backbone (``type='mmdvit.Dynamic...'``) is accepted too.

    Raises:
        TypeError: a wrapper config with fields of the student at the wrapper's level (e.g.
            ``--cfg-options model.backbone.keep_ratios=...``), which would be ignored: the error
            names the ``model.student.`` key.
    """
    if 'model' not in cfg:
        raise ValueError('the config has no `model` field; pass a model config (mmseg / mmdet / '
                         'mmpretrain model, or an mmdvit backbone).')
    model = copy.deepcopy(cfg.model)
    if model.get('type') == WRAPPER_TYPE:
        check_wrapper_fields(model)
        model = copy.deepcopy(model.student)
    return ConfigDict(model)


def upstream_backbone_config(backbone_cfg: ConfigDict) -> ConfigDict:
    """The upstream dense backbone config (mmseg ``SwinTransformer``, or mmdet's when the config
    has mmdet's ``convert_weights``; mmpretrain ``ConvNeXt``) with the same arguments minus the
    sparsity ones; it loads the dynamic backbone's dense weights. ViTs have no registry config
    upstream: see :func:`build_upstream_backbone`.

    Raises:
        ValueError: for a backbone without upstream counterpart, or a Swin with
            ``pad_small_map=False`` (official classification semantics, which mmseg's and
            mmdet's Swin do not implement: compare with the dense twin instead).
    """
    cls = dynamic_backbone_class(backbone_cfg)
    upstream = UPSTREAM_TYPES.get(f'mmdvit.{cls.__name__}')
    if upstream is None:
        raise ValueError(f'no upstream dense counterpart is known for {cls.__name__} (mmdvit '
                         f'types with one: {sorted(UPSTREAM_TYPES)}).')
    cfg = ConfigDict({k: v for k, v in backbone_cfg.items() if k not in SPARSITY_ARGS})
    cfg.type = upstream
    if cls.__name__ == 'DynamicSwinTransformer':
        if not cfg.pop('pad_small_map', True):
            raise ValueError('pad_small_map=False (official classification semantics) has no '
                             'mmseg / mmdet counterpart; benchmark against the dense twin '
                             '(twin_* fields) or use pad_small_map=True.')
        if 'convert_weights' in cfg:
            cfg.type = 'mmdet.SwinTransformer'
    cfg.init_cfg = None
    return cfg


def build_upstream_backbone(backbone_cfg: ConfigDict) -> nn.Module:
    """The upstream dense backbone of an mmdvit backbone config, in eval mode: mmseg's
    ``SwinTransformer``, mmpretrain's ``ConvNeXt``, or timm's ``VisionTransformer`` (DeiT; class
    token output, as ``DynamicViT(out_type='cls_token')``)."""
    cfg = upstream_backbone_config(backbone_cfg)
    if cfg.type != 'timm.VisionTransformer':
        return build_model(cfg, 'mmengine')
    from timm.models.vision_transformer import VisionTransformer

    from ..models.backbones.dynamic_vit import DynamicViT
    if cfg.get('out_type', 'cls_token') != 'cls_token':
        raise ValueError('the timm reference of DynamicViT returns the class token: benchmark '
                         "with out_type='cls_token'.")
    arch = DynamicViT.arch_settings(cfg.get('arch', 'deit-small'))
    model = VisionTransformer(
        img_size=cfg.get('img_size', 224), patch_size=cfg.get('patch_size', 16),
        in_chans=cfg.get('in_channels', 3), num_classes=0, embed_dim=int(arch['embed_dims']),
        depth=int(arch['num_layers']), num_heads=int(arch['num_heads']),
        mlp_ratio=float(arch['mlp_ratio']), qkv_bias=cfg.get('qkv_bias', True),
        dynamic_img_size=True)
    model.eval()
    return model


def default_scope(cfg: Config) -> str:
    """The registry scope the config's types resolve in (``default_scope``, else mmengine)."""
    return cfg.get('default_scope') or 'mmengine'


def build_model(model_cfg: ConfigDict, scope: str) -> nn.Module:
    """Build ``model_cfg`` in ``scope`` without initialising weights (no checkpoint is read);
    SyncBN becomes BN so it runs on one CPU process. Returned in eval mode."""
    with DefaultScope.overwrite_default_scope(scope):
        model = revert_sync_batchnorm(MODELS.build(copy.deepcopy(model_cfg)))
    model.eval()  # not chained: some upstream train() overrides return None
    return model


def load_weights(model: nn.Module, checkpoint: Optional[str],
                 trust: bool = False) -> Tuple[int, Sequence[str]]:
    """Load a model checkpoint (``None`` or ``'none'``: keep the random weights) with
    mmdvit's safe reader (``trust``: full unpickling, for a file the user trusts).

    Returns:
        (number of tensors loaded, the model keys the checkpoint lacks).

    Raises:
        ValueError: when the checkpoint shares no key with the model.
    """
    if checkpoint is None or checkpoint.lower() == 'none':
        return 0, []
    state = extract_state_dict(load_checkpoint_file(checkpoint, 'model checkpoint',
                                                    trust=trust or None))
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own}
    if not matched:
        raise ValueError(f'checkpoint {checkpoint!r} shares no key with the model (its keys look '
                         f'like {list(state)[:3]}); pass a checkpoint of this config.')
    model.load_state_dict(matched, strict=False)
    return len(matched), sorted(set(own) - set(matched))


def copy_shared_weights(src: nn.Module, dst: nn.Module) -> int:
    """Copy every tensor of ``src`` whose name and shape ``dst`` shares (dense twin <- dynamic
    model); returns how many were copied."""
    own = dst.state_dict()
    shared = {k: v for k, v in src.state_dict().items() if k in own and own[k].shape == v.shape}
    dst.load_state_dict(shared, strict=False)
    return len(shared)
