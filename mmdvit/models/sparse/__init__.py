"""The sparsification machinery shared by every dynamic backbone (pure PyTorch)."""
from .decision import SparsityDecision, decide
from .losses import keep_ratio_loss
from .predictor import ScorePredictor
from .routing import route_tokens
from .schedule import StageSchedule, build_schedule

__all__ = [
    'ScorePredictor', 'SparsityDecision', 'StageSchedule', 'build_schedule', 'decide',
    'keep_ratio_loss', 'route_tokens'
]
