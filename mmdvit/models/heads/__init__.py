"""Sparse decode heads, necks and dense heads (mmseg / mmdet adapters of the sparse core)."""
from .uper_head import DynamicUPerHead

__all__ = ['DynamicUPerHead']
