"""Named backbones the analysis tools accept in place of a config file.

The published classification backbones at their published settings, and tiny variants for
quick runs and tests. Each entry is a bare-backbone model config (``model=dict(type=...)``).
"""
from typing import Dict

from mmengine.config import Config

PRESETS: Dict[str, dict] = {
    # DynamicSwin-T, rho 0.7: stage-3 predictors before blocks 1, 2, 3, ratios (0.7, 0.5, 0.3).
    'swin-t': dict(type='mmdvit.DynamicSwinTransformer', drop_path_rate=0.0),
    # DynamicCNN-T (ConvNeXt-T), rho 0.7; classification output (pooled, final norm).
    'convnext-t': dict(type='mmdvit.DynamicConvNeXt', arch='tiny'),
    # DynamicViT-DeiT-S, rho 0.7: predictors before blocks 3, 6, 9, ratios (0.7, 0.49, 0.343).
    'deit-s': dict(type='mmdvit.DynamicViT', arch='deit-small'),
    # Tiny variants (seconds on a CPU; for --quick runs and tests).
    'swin-test': dict(type='mmdvit.DynamicSwinTransformer', embed_dims=16, depths=(1, 1, 4, 1),
                      num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.0,
                      pruning_locs=(0, 1, 2)),
    'convnext-test': dict(type='mmdvit.DynamicConvNeXt',
                          arch=dict(depths=[1, 1, 4, 1], channels=[16, 24, 32, 48]),
                          pruning_locs=(0, 1, 2)),
    'deit-test': dict(type='mmdvit.DynamicViT', img_size=64,
                      arch=dict(embed_dims=32, num_layers=4, num_heads=2),
                      pruning_locs=(1, 2, 3)),
}


def preset_config(name: str) -> Config:
    """The config of a named backbone (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f'{name!r} is neither a config file nor a preset; presets: '
                         f'{sorted(PRESETS)}.')
    return Config(dict(model=PRESETS[name]))
