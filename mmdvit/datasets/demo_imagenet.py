"""Write a small dataset in the ImageNet folder layout from synthetic scenes.

Layout (as ``ILSVRC2012`` after the usual validation-folder preparation, which mmpretrain's
``ImageNet`` dataset reads by scanning class folders)::

    ROOT/train/<class>/<class>_00000001.JPEG
    ROOT/val/<class>/ILSVRC2012_val_00000001.JPEG

Every image shows one object of its class (shape and colour from :data:`OBJECTS`) on a textured
background, so a small model can learn the task in a few iterations.
"""
import os.path as osp
from pathlib import Path
from typing import Dict, Sequence, Tuple

import cv2
import numpy as np

from .demo_scenes import render_scene

IMAGENET_DEMO_CLASSES: Tuple[str, ...] = ('ball', 'car', 'kite', 'person', 'tree')


def make_imagenet_demo(root: str, num_train: int = 8, num_val: int = 4, seed: int = 0,
                       classes: Sequence[str] = IMAGENET_DEMO_CLASSES,
                       size_range: Tuple[int, int] = (72, 112)) -> Dict[str, int]:
    """Write ``num_train`` + ``num_val`` images per class under ``root``.

    Class folders sort in the order of ``classes`` (mmpretrain numbers classes by sorted folder
    name); image sides are drawn from ``size_range``; the same ``seed`` writes the same files.

    Returns:
        The number of images per split.
    """
    if list(classes) != sorted(classes):
        raise ValueError(f'classes={tuple(classes)} must be sorted: mmpretrain numbers class '
                         'folders in sorted order.')
    rng = np.random.default_rng(seed)
    counter = 0
    for split, count in (('train', num_train), ('val', num_val)):
        for kind in classes:
            folder = Path(root, split, kind)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(1, count + 1):
                height, width = (int(v) for v in rng.integers(*size_range, size=2))
                scene = render_scene(rng, height, width, [kind], max_objects=1)
                while not scene.objects:  # the object did not fit: draw again
                    scene = render_scene(rng, height, width, [kind], max_objects=1)
                counter += 1
                name = f'{kind}_{i:08d}' if split == 'train' else f'ILSVRC2012_val_{counter:08d}'
                cv2.imwrite(osp.join(folder, name + '.JPEG'), scene.image,
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
    return {'train': num_train * len(classes), 'val': num_val * len(classes)}
