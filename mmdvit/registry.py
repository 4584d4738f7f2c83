"""mmdvit's child registry.

Configs from any OpenMMLab scope (mmseg, mmdet, mmpretrain) refer to mmdvit models as
``type='mmdvit.DynamicSwinTransformer'``: mmengine sees the ``mmdvit.`` prefix, imports this module
and, through ``locations``, ``mmdvit.models`` (or ``mmdvit.engine.hooks`` for
``type='mmdvit.<Hook>'``), which registers everything. No ``custom_imports``.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmdvit', locations=['mmdvit.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmdvit', locations=['mmdvit.engine.hooks'])
