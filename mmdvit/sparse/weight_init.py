"""Default (random) initialisation shared by the backbones and the score predictors."""
from typing import Tuple, Type

from torch import nn


def trunc_normal_init(module: nn.Module,
                      layers: Tuple[Type[nn.Module], ...] = (nn.Linear, )) -> None:
    """Truncated-normal (std 0.02) weights and zero biases for every submodule of a type in
    ``layers``; unit weights and zero biases for every LayerNorm (the timm / OpenMMLab default
    for transformers and ConvNeXt)."""
    for m in module.modules():
        if isinstance(m, layers):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
