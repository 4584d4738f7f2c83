"""Demo datasets in the real on-disk formats (ADE20K layout, COCO json, ImageNet folders),
written from seeded synthetic scenes; the fine-structure sets (thin and small things) for the
quality benchmark."""
from .demo_ade20k import ADE20K_LABELS, make_ade20k_demo
from .demo_coco import COCO_CLASSES, COCO_IDS, make_coco_demo
from .demo_imagenet import IMAGENET_DEMO_CLASSES, make_imagenet_demo
from .fine_structure import (FINE_ADE20K_LABELS, FINE_COCO_KINDS, FINE_GROUPS,
                             make_fine_structure_ade20k, make_fine_structure_coco)

__all__ = [
    'ADE20K_LABELS', 'COCO_CLASSES', 'COCO_IDS', 'FINE_ADE20K_LABELS', 'FINE_COCO_KINDS',
    'FINE_GROUPS', 'IMAGENET_DEMO_CLASSES', 'make_ade20k_demo', 'make_coco_demo',
    'make_fine_structure_ade20k', 'make_fine_structure_coco', 'make_imagenet_demo'
]
