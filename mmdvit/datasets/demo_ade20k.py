"""Write a small dataset in the ADE20K on-disk layout from synthetic scenes.

Layout (as ``ADEChallengeData2016``, which mmseg's ``ADE20KDataset`` reads)::

    ROOT/images/training/ADE_train_00000001.jpg    ROOT/annotations/training/ADE_train_00000001.png
    ROOT/images/validation/ADE_val_00000001.jpg    ROOT/annotations/validation/ADE_val_00000001.png

Label PNGs hold ADE20K's 150-class indices with ``reduce_zero_label`` semantics: value ``c`` in
1..150 is class ``c - 1`` of mmseg's ``ADE20KDataset.METAINFO['classes']``, and 0 means "other"
(ignored in training and evaluation). Clutter patches are written as 0.
"""
import os.path as osp
from pathlib import Path
from typing import Callable, Dict, Tuple

import cv2
import numpy as np

from .demo_scenes import render_scene

# Scene names -> 1-based ADE20K class indices (PNG values).
ADE20K_LABELS: Dict[str, int] = {
    'tree': 5, 'sky': 3, 'road': 7, 'grass': 10, 'person': 13, 'car': 21, 'water': 22,
}
ADE20K_KINDS = ('person', 'car', 'tree')
# draw(rng, height, width) -> (BGR image, label map)
SceneDrawer = Callable[[np.random.Generator, int, int], Tuple[np.ndarray, np.ndarray]]


def _label_map(scene) -> np.ndarray:
    """(H, W) uint8 label map of a scene, 0 on clutter."""
    label = np.vectorize(ADE20K_LABELS.__getitem__, otypes=[np.uint8])(scene.background)
    for obj in scene.objects:
        label[obj.mask] = ADE20K_LABELS[obj.kind]
    label[scene.clutter] = 0
    return label


def write_ade20k(root: str, num_train: int, num_val: int, seed: int,
                 size_range: Tuple[int, int], draw: SceneDrawer) -> Dict[str, int]:
    """Write ``num_train`` + ``num_val`` images drawn by ``draw`` under ``root`` in the ADE20K
    layout.

    Args:
        size_range: image heights and widths are drawn from ``[low, high)``.
        draw: ``draw(rng, height, width)`` -> ((H, W, 3) uint8 BGR image, (H, W) uint8 label
            map of PNG values).

    Returns the number of images per split.
    """
    rng = np.random.default_rng(seed)
    for split, prefix, count in (('training', 'ADE_train', num_train),
                                 ('validation', 'ADE_val', num_val)):
        img_dir = Path(root, 'images', split)
        ann_dir = Path(root, 'annotations', split)
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            height, width = (int(v) for v in rng.integers(*size_range, size=2))
            image, label = draw(rng, height, width)
            name = f'{prefix}_{i:08d}'
            cv2.imwrite(osp.join(img_dir, name + '.jpg'), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(osp.join(ann_dir, name + '.png'), label)
    return {'training': num_train, 'validation': num_val}


def _draw_demo(rng: np.random.Generator, height: int, width: int
               ) -> Tuple[np.ndarray, np.ndarray]:
    scene = render_scene(rng, height, width, list(ADE20K_KINDS))
    return scene.image, _label_map(scene)


def make_ade20k_demo(root: str, num_train: int = 64, num_val: int = 16, seed: int = 0,
                     size_range: Tuple[int, int] = (128, 192)) -> Dict[str, int]:
    """Write ``num_train`` + ``num_val`` scenes under ``root`` in the ADE20K layout.

    Image heights and widths are drawn from ``size_range``; the same ``seed`` writes the same
    files. Returns the number of images per split.
    """
    return write_ade20k(root, num_train, num_val, seed, size_range, _draw_demo)
