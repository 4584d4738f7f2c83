"""Importing this package registers every mmdvit model in :data:`mmdvit.registry.MODELS`."""
from .backbones import DynamicConvNeXt, DynamicLVViT, DynamicSwinTransformer, DynamicViT
from .heads import DynamicFPN, DynamicRPNHead, DynamicUPerHead
from .heads.lvvit_head import LVViTClsHead
from ..sparse import SparsityDecision, keep_ratio_loss
from .wrappers import SparsityTrainer

__all__ = [
    'DynamicConvNeXt', 'DynamicFPN', 'DynamicLVViT', 'DynamicRPNHead', 'DynamicSwinTransformer',
    'DynamicUPerHead', 'DynamicViT', 'LVViTClsHead', 'SparsityDecision', 'SparsityTrainer',
    'keep_ratio_loss'
]
