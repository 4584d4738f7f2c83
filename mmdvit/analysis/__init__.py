"""Measuring what the models compute (FLOPs) and how fast they run."""
from .flops import count_macs

__all__ = ['count_macs']
