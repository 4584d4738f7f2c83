"""The sparsification machinery shared by every dynamic backbone, head and neck (pure
PyTorch)."""
from .decision import SparsityDecision, decide, decision_label, model_decisions, sparse_children
from .gate import SparseConvGate
from .losses import keep_ratio_loss
from .predictor import BlockScorePredictor, ScorePredictor
from .routing import drop_pruned, route_tokens, route_windows
from .schedule import StageSchedule, build_schedule
from .sparse_conv import sparse_conv2d

__all__ = [
    'BlockScorePredictor', 'ScorePredictor', 'SparseConvGate', 'SparsityDecision', 'StageSchedule',
    'build_schedule', 'decide', 'decision_label', 'drop_pruned', 'keep_ratio_loss',
    'model_decisions', 'route_tokens', 'route_windows', 'sparse_children', 'sparse_conv2d'
]
