"""Demo datasets in the real on-disk formats (ADE20K layout, COCO json, ImageNet folders),
written from seeded synthetic scenes."""
from .demo_ade20k import ADE20K_LABELS, make_ade20k_demo
from .demo_coco import COCO_CLASSES, COCO_IDS, make_coco_demo
from .demo_imagenet import IMAGENET_DEMO_CLASSES, make_imagenet_demo

__all__ = [
    'ADE20K_LABELS', 'COCO_CLASSES', 'COCO_IDS', 'IMAGENET_DEMO_CLASSES', 'make_ade20k_demo',
    'make_coco_demo', 'make_imagenet_demo'
]
