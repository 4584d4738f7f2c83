"""Checkpoint layouts: pure key-remapping functions and a loader that reports what it did."""
from .classifier import convert_classifier_checkpoint
from .convnext import convert_convnext_checkpoint, detect_convnext_layout
from .io import extract_state_dict, load_checkpoint_file
from .loading import LoadReport, load_pretrained
from .swin import convert_swin_checkpoint, detect_swin_layout
from .vit import convert_vit_checkpoint, detect_vit_layout

__all__ = [
    'LoadReport', 'convert_classifier_checkpoint', 'convert_convnext_checkpoint',
    'convert_swin_checkpoint', 'convert_vit_checkpoint', 'detect_convnext_layout',
    'detect_swin_layout', 'detect_vit_layout', 'extract_state_dict', 'load_checkpoint_file',
    'load_pretrained'
]
