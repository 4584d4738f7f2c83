"""Sparse decode heads, necks and dense heads (mmseg / mmdet adapters of the sparse core)."""
from .fpn import DynamicFPN
from .rpn_head import DynamicRPNHead
from .uper_head import DynamicUPerHead

__all__ = ['DynamicFPN', 'DynamicRPNHead', 'DynamicUPerHead']
