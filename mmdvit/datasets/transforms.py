"""Checks of every sample as the data pipeline loads it (registered in
:data:`mmdvit.registry.TRANSFORMS`). ``tools/train.py`` and ``tools/test.py`` insert them into
every dataset pipeline of the config (:func:`mmdvit.engine.preflight.add_load_checks`): a
broken file stops the run with an error naming it, instead of a decoder error that names no file,
a crash deep inside an augmentation, or a silently wrong mIoU."""
import os
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform

from ..engine.data_checks import DataError, bad_label_values, label_values_error
from ..registry import TRANSFORMS


@TRANSFORMS.register_module()
class CheckFilesNotEmpty(BaseTransform):
    """Before ``LoadImageFromFile``: the image (``img_path``) and, for segmentation, the
    annotation map (``seg_map_path``) must not be empty files. OpenCV and PIL fail on a
    0-byte file with messages that name no file (``!buf.empty()``, ``cannot identify image
    file <_io.BytesIO ...>``). Missing files and remote paths (``s3://...``) are left to the
    loaders, which name them.

    Raises:
        DataError: naming the file, what it is and the fix.
    """

    FILES = (('img_path', 'image'), ('seg_map_path', 'annotation map'))

    def transform(self, results: dict) -> dict:
        for key, what in self.FILES:
            path = results.get(key)
            if not isinstance(path, str) or '://' in path:
                continue
            try:
                empty = os.stat(path).st_size == 0
            except OSError:
                continue
            if empty:
                raise DataError(f'{what} {path!r} is empty (0 bytes; an interrupted copy or '
                                'download?): replace it with the complete file (e.g. extract '
                                'the dataset again), or remove it from the dataset.')
        return results


@TRANSFORMS.register_module()
class CheckLabelMap(BaseTransform):
    """Right after mmseg's ``LoadAnnotations``: the loaded map (``gt_seg_map``) must have its
    image's size (``ori_shape``, which ``LoadImageFromFile`` sets) and hold only class ids in
    ``[0, num_classes)`` and ``ignore_index``. ``LoadAnnotations`` has already applied
    ``reduce_zero_label`` (raw 0 -> 255, others -1) and a metainfo class subset (``label_map``:
    every id of the full class list -> a new id or 255), so a value outside the range is a raw
    value outside the file's classes; the error names it as the file holds it.

    Args:
        num_classes: how many classes the raw ids in the files refer to (the dataset class's
            full list); ``None`` checks the size only.
        ignore_index: the label of ignored pixels (mmseg: 255).

    Raises:
        DataError: naming the file, the wrong size or values and the fix.
    """

    def __init__(self, num_classes: Optional[int] = None, ignore_index: int = 255) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        label = results['gt_seg_map']
        path = results.get('seg_map_path', '<annotation map>')
        shape = results.get('ori_shape')
        if shape is not None and tuple(label.shape) != tuple(shape[:2]):
            raise DataError(
                f'annotation map {path!r} is {"x".join(map(str, label.shape))} (height x width) '
                f'but its image {results.get("img_path")!r} is {shape[0]}x{shape[1]}: a label '
                'map must have the size of its image. Replace it with the map of this image (a '
                'map of another image, or one resized by mistake?).')
        if self.num_classes is None:
            return results
        reduce_zero_label = bool(results.get('reduce_zero_label', False))
        loaded = _values(label)
        bad = bad_label_values(loaded, self.num_classes, reduce_zero_label=False,
                               ignore_index=self.ignore_index)
        if bad:
            # As the file holds them: reduce_zero_label subtracted 1 (and made 0 -> 255).
            raw = [0 if v == 255 else v + 1 for v in bad] if reduce_zero_label else bad
            raise label_values_error(path, raw, self.num_classes, reduce_zero_label,
                                     self.ignore_index)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')


def _values(label: np.ndarray) -> np.ndarray:
    """The distinct values of a label map (a histogram for the usual uint8 maps: faster than
    sorting)."""
    if label.dtype == np.uint8:
        return np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    return np.unique(label)
