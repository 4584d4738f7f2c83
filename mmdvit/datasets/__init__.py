"""Demo datasets in the real on-disk formats (ADE20K layout, COCO json), written from seeded
synthetic scenes."""
from .demo_ade20k import ADE20K_LABELS, make_ade20k_demo
from .demo_coco import COCO_CLASSES, COCO_IDS, make_coco_demo

__all__ = ['ADE20K_LABELS', 'COCO_CLASSES', 'COCO_IDS', 'make_ade20k_demo', 'make_coco_demo']
