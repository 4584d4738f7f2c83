"""The sparsification machinery shared by every dynamic backbone, head and neck (torch only).

Data flow, with the file to read for each step:

1. Score: ``predictor.py``. :class:`ScorePredictor` rates every token (or window) with (B, N, 2)
   log-probabilities of keep / prune; :class:`BlockScorePredictor` rates the tiles of a map.
2. Decide: ``decision.py``. :func:`decide` turns scores into a :class:`SparsityDecision`: a
   straight-through Gumbel hard mask in training, a top-k per image at inference.
   ``schedule.py`` (:func:`build_schedule`) says where predictors sit and their keep ratios.
3. Route: kept positions take the slow path, pruned ones the fast path.

   - Tokens: ``routing.py``, :func:`route_tokens` (:func:`drop_pruned` for plain ViTs).
   - Windows: ``windows.py`` (:func:`pool_windows` to score, :func:`shifted_decision` for
     Swin's shifted blocks), :func:`route_windows`, and ``gather.py`` (:func:`window_sources`,
     the rows each window position reads and writes).
   - Tiles: ``sparse_conv.py``, :func:`sparse_conv2d`, driven by :class:`SparseConvGate`
     (``gate.py``, a predictor and a fast path for a convolution owned elsewhere); tiles move
     with ``gather.py``.
4. Hand out: every :func:`decide` call appends its decision to the recorders open around it
   (:func:`record_decisions`, ``decision.py``); modules keep no decision. ``sparse_module.py``
   marks the modules that decide (:class:`SparseModule`, their ``keep_ratios``).
5. Keep-ratio loss: ``losses.py``, :func:`keep_ratio_loss` over a training forward's recorded
   decisions.

Beside the flow: ``accelerator.py`` (which code path moves data, :func:`accelerator_path`) and
``weight_init.py`` (:func:`trunc_normal_init`).
"""
from .accelerator import accelerator_path
from .decision import (SparsityDecision, decide, decision_label, keep_everything, keep_margin,
                       record_decisions)
from .gate import SparseConvGate, block_at_level, check_gate_args, init_fast_path_on_load
from .gather import HW, block_grid, pad_to_multiple, shape_cached, window_rows, window_sources
from .losses import keep_ratio_loss
from .predictor import BlockScorePredictor, ScorePredictor, score_in_float32
from .routing import drop_pruned, route_tokens, route_windows
from .schedule import Locations, StageSchedule, build_schedule
from .sparse_conv import sparse_conv2d
from .sparse_module import SparseModule, sparse_children
from .weight_init import trunc_normal_init
from .windows import pool_windows, shifted_decision

__all__ = [
    'BlockScorePredictor', 'HW', 'Locations', 'ScorePredictor', 'SparseConvGate',
    'SparseModule', 'SparsityDecision', 'StageSchedule', 'accelerator_path', 'block_at_level',
    'block_grid', 'build_schedule', 'check_gate_args', 'decide', 'decision_label',
    'drop_pruned', 'init_fast_path_on_load', 'keep_everything', 'keep_margin', 'keep_ratio_loss',
    'pad_to_multiple', 'pool_windows', 'record_decisions', 'route_tokens', 'route_windows',
    'score_in_float32', 'shape_cached', 'shifted_decision', 'sparse_children', 'sparse_conv2d',
    'trunc_normal_init', 'window_rows', 'window_sources'
]
