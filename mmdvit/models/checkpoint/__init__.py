"""Checkpoint layouts: pure key-remapping functions, a loader that reports what it did, and the
safe reader / atomic writer of checkpoint files."""
from .classifier import convert_classifier_checkpoint
from .convnext import convert_convnext_checkpoint, detect_convnext_layout
from .fit import StateDiff, diff_state_dicts
from .io import (TRUST_ENV, CheckpointError, UnsafeCheckpointError, extract_state_dict,
                 load_checkpoint_file, same_file, save_checkpoint_file, write_atomic)
from .loading import NEW_MODULE_MARKERS, LoadReport, load_pretrained
from .swin import convert_swin_checkpoint, detect_swin_layout
from .vit import convert_vit_checkpoint, detect_vit_layout

__all__ = [
    'NEW_MODULE_MARKERS', 'TRUST_ENV', 'CheckpointError', 'LoadReport', 'StateDiff',
    'UnsafeCheckpointError', 'convert_classifier_checkpoint', 'convert_convnext_checkpoint',
    'convert_swin_checkpoint', 'convert_vit_checkpoint', 'detect_convnext_layout',
    'detect_swin_layout', 'detect_vit_layout', 'diff_state_dicts', 'extract_state_dict',
    'load_checkpoint_file', 'load_pretrained', 'same_file', 'save_checkpoint_file', 'write_atomic'
]
