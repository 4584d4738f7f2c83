"""mmdvit's child registry.

Configs from any OpenMMLab scope (mmseg, mmdet, mmpretrain) refer to mmdvit models as
``type='mmdvit.DynamicSwinTransformer'``: mmengine sees the ``mmdvit.`` prefix, imports this module
and, through ``locations``, ``mmdvit.models`` (``mmdvit.engine.hooks`` for ``type='mmdvit.<Hook>'``,
``mmdvit.datasets.transforms`` for data transforms, ``mmdvit.engine.outputs`` for the metrics that
write ``tools/test.py --out``), which registers everything. No ``custom_imports``.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmdvit', locations=['mmdvit.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmdvit', locations=['mmdvit.engine.hooks'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='mmdvit',
                      locations=['mmdvit.datasets.transforms'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='mmdvit',
                   locations=['mmdvit.engine.outputs'])
