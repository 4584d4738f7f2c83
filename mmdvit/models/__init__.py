"""Importing this package registers every mmdvit model in :data:`mmdvit.registry.MODELS`."""
from .backbones import DynamicConvNeXt, DynamicSwinTransformer, DynamicViT
from .heads import DynamicFPN, DynamicRPNHead, DynamicUPerHead
from .sparse import SparsityDecision, keep_ratio_loss
from .wrappers import SparsityTrainer

__all__ = [
    'DynamicConvNeXt', 'DynamicFPN', 'DynamicRPNHead', 'DynamicSwinTransformer',
    'DynamicUPerHead', 'DynamicViT', 'SparsityDecision', 'SparsityTrainer', 'keep_ratio_loss'
]
