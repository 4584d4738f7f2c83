"""Importing this package registers every mmdvit model in :data:`mmdvit.registry.MODELS`."""
from .backbones import DynamicConvNeXt, DynamicSwinTransformer
from .sparse import SparsityDecision, keep_ratio_loss

__all__ = ['DynamicConvNeXt', 'DynamicSwinTransformer', 'SparsityDecision', 'keep_ratio_loss']
