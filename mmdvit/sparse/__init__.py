"""The sparsification machinery shared by every dynamic backbone, head and neck (pure
PyTorch)."""
from .decision import SparsityDecision, decide, decision_label, record_decisions
from .gate import SparseConvGate
from .losses import keep_ratio_loss
from .predictor import BlockScorePredictor, ScorePredictor
from .routing import drop_pruned, route_tokens, route_windows
from .schedule import StageSchedule, build_schedule
from .sparse_conv import sparse_conv2d
from .sparse_module import SparseModule, sparse_children

__all__ = [
    'BlockScorePredictor', 'ScorePredictor', 'SparseConvGate', 'SparseModule', 'SparsityDecision',
    'StageSchedule', 'build_schedule', 'decide', 'decision_label', 'drop_pruned',
    'keep_ratio_loss', 'record_decisions', 'route_tokens', 'route_windows', 'sparse_children',
    'sparse_conv2d'
]
