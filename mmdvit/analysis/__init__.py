"""Measuring what the models compute (FLOPs), how fast they run and what they keep.

``flops``: multiply-adds of executed ops; ``complexity``: dense twin vs dynamic model figures;
``benchmark`` / ``memory``: interleaved timing and training-step memory against the upstream
dense models; ``visualize``: kept-location pictures. The command-line tools live in
``tools/analysis_tools/``.
"""
from .complexity import complexity
from .flops import count_macs

__all__ = ['complexity', 'count_macs']
