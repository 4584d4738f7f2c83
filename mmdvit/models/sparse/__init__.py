"""The sparsification machinery shared by every dynamic backbone (pure PyTorch)."""
from .decision import SparsityDecision, decide
from .gate import SparseConvGate
from .losses import keep_ratio_loss
from .predictor import BlockScorePredictor, ScorePredictor
from .routing import route_tokens
from .schedule import StageSchedule, build_schedule
from .sparse_conv import sparse_conv2d

__all__ = [
    'BlockScorePredictor', 'ScorePredictor', 'SparseConvGate', 'SparsityDecision', 'StageSchedule',
    'build_schedule', 'decide', 'keep_ratio_loss', 'route_tokens',
    'sparse_conv2d'
]
