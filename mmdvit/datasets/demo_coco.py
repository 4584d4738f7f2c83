"""Write a small COCO-format instance segmentation dataset from synthetic scenes.

Layout (as COCO 2017, which mmdet's ``CocoDataset`` reads)::

    ROOT/annotations/instances_train2017.json   ROOT/train2017/000000000001.jpg
    ROOT/annotations/instances_val2017.json     ROOT/val2017/000000000001.jpg

The json lists all 80 COCO categories with their official ids (mmdet maps names to labels
through them); the objects use four of them. Every object has its box ``[x, y, w, h]`` and a
polygon mask; objects never overlap, so the polygon is the visible region.
"""
import json
import os.path as osp
from pathlib import Path
from typing import Callable, Dict, List, Tuple, Union

import cv2
import numpy as np

from .demo_scenes import SceneObject, render_scene

COCO_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
    'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
    'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
    'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich',
    'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
    'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush')
# Official COCO category ids: 1..90 with ten unused.
COCO_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
# draw(rng, height, width) -> (BGR image, the objects in it)
ObjectDrawer = Callable[[np.random.Generator, int, int], Tuple[np.ndarray, List[SceneObject]]]
COCO_KINDS: Dict[str, str] = {
    'person': 'person', 'car': 'car', 'ball': 'sports ball', 'kite': 'kite'}


def _segmentation(obj: SceneObject, as_rle: bool) -> Tuple[list, Union[list, dict]]:
    """An object's box ``[x, y, w, h]`` and its mask: its polygon, or with ``as_rle`` its drawn
    pixels exactly (compressed RLE, the form pycocotools and mmdet decode)."""
    if not as_rle:
        x0, y0 = obj.polygon.min(0)
        x1, y1 = obj.polygon.max(0)
        return ([round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                [[round(float(v), 2) for v in obj.polygon.reshape(-1)]])
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return bbox, dict(size=[int(v) for v in rle['size']], counts=rle['counts'].decode('ascii'))


def _annotations(objects: List[SceneObject], image_id: int, first_ann_id: int,
                 kinds: Dict[str, str], as_rle: bool = False) -> list:
    """COCO annotation dicts of one scene's objects; ``kinds`` maps their kinds to COCO names;
    ``as_rle``: masks as RLE of the drawn pixels instead of polygons."""
    cat_id = dict(zip(COCO_CLASSES, COCO_IDS))
    anns = []
    for k, obj in enumerate(objects):
        bbox, segmentation = _segmentation(obj, as_rle)
        anns.append(dict(
            id=first_ann_id + k, image_id=image_id, category_id=cat_id[kinds[obj.kind]],
            bbox=bbox, segmentation=segmentation, area=float(obj.mask.sum()), iscrowd=0))
    return anns


def write_coco(root: str, num_train: int, num_val: int, seed: int,
               height_range: Tuple[int, int], width_range: Tuple[int, int],
               draw: ObjectDrawer,
               kinds: Dict[str, str], masks_as_rle: bool = False) -> Dict[str, int]:
    """Write ``num_train`` + ``num_val`` images drawn by ``draw`` under ``root`` in the COCO 2017
    layout.

    Args:
        height_range, width_range: image heights / widths are drawn from ``[low, high)``.
        draw: ``draw(rng, height, width)`` -> ((H, W, 3) uint8 BGR image, its objects, which
            must not overlap: each polygon is the object's visible region).
        kinds: object kind -> COCO category name (of :data:`COCO_CLASSES`).
        masks_as_rle: write each mask as the RLE of its drawn pixels (exact for objects of a
            few pixels, where a polygon rasterises differently) instead of its polygon.

    Returns the number of objects per split.
    """
    rng = np.random.default_rng(seed)
    categories = [dict(id=i, name=n, supercategory='demo') for i, n in zip(COCO_IDS, COCO_CLASSES)]
    Path(root, 'annotations').mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, count in (('train2017', num_train), ('val2017', num_val)):
        Path(root, split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for image_id in range(1, count + 1):
            height, width = int(rng.integers(*height_range)), int(rng.integers(*width_range))
            image, objects = draw(rng, height, width)
            file_name = f'{image_id:012d}.jpg'
            cv2.imwrite(osp.join(root, split, file_name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
            anns += _annotations(objects, image_id, len(anns) + 1, kinds, masks_as_rle)
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=anns, categories=categories), f)
        counts[split] = len(anns)
    return counts


def _draw_demo(rng: np.random.Generator, height: int, width: int
               ) -> Tuple[np.ndarray, List[SceneObject]]:
    scene = render_scene(rng, height, width, list(COCO_KINDS))
    return scene.image, scene.objects


def make_coco_demo(root: str, num_train: int = 48, num_val: int = 16, seed: int = 0,
                   height_range: Tuple[int, int] = (128, 176),
                   width_range: Tuple[int, int] = (160, 224)) -> Dict[str, int]:
    """Write ``num_train`` + ``num_val`` scenes under ``root`` in the COCO 2017 layout.

    The same ``seed`` writes the same files. Returns the number of objects per split.
    """
    return write_coco(root, num_train, num_val, seed, height_range, width_range, _draw_demo,
                      COCO_KINDS)
