"""Checks of dataset contents before a run: annotation maps whose labels fit the classes, COCO
json files that parse and hold images, categories and annotations, image folders that hold
images. Each raises :class:`DataError` naming the file and the fix; the pre-flight
(:mod:`mmdvit.engine.preflight`) adds the config key."""
import json
import os
from typing import Iterator, List, Sequence

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm',
                  '.gif')
LABEL_SAMPLE = 20  # annotation maps read per dataset
JSON_PARSE_LIMIT = 64 * 1024**2  # larger COCO files (train2017: 450 MB) get the cheap checks


class DataError(ValueError):
    """A dataset file or folder that cannot give a correct run."""


def _files(folder: str, suffixes: Sequence[str]) -> Iterator[str]:
    """Files under ``folder`` (recursively, sorted per folder) ending with one of
    ``suffixes`` (case-insensitive)."""
    suffixes = tuple(s.lower() for s in suffixes)
    for path, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            if name.lower().endswith(suffixes):
                yield os.path.join(path, name)


def check_not_empty(folder: str, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> None:
    """``folder`` must hold at least one file ending with one of ``suffixes``.

    Raises:
        DataError: naming the folder, the suffixes and the fix.
    """
    if next(_files(folder, suffixes), None) is None:
        raise DataError(f'{folder!r} holds no {"/".join(suffixes)} files: put the images '
                        'there (or point data_prefix at the folder that holds them).')


def _spread(items: List[str], num: int) -> List[str]:
    """``num`` items evenly spread over ``items`` (all when there are fewer)."""
    if len(items) <= num:
        return items
    return [items[round(i * (len(items) - 1) / (num - 1))] for i in range(num)]


def check_label_maps(folder: str, suffix: str, num_classes: int, reduce_zero_label: bool,
                     ignore_index: int = 255, sample: int = LABEL_SAMPLE) -> int:
    """Label values of a sample of ``folder``'s annotation maps must be class ids in
    ``[0, num_classes)`` or ``ignore_index``, after mmseg's ``reduce_zero_label`` (raw 0 and 255
    -> 255, others -1). Returns the number of maps read.

    Raises:
        DataError: no map in the folder, or a map with other values (names the file, the
            values, the valid range and the fix).
    """
    files = list(_files(folder, (suffix, )))
    if not files:
        raise DataError(f'{folder!r} holds no {suffix} annotation maps: put the label maps '
                        'there (or fix data_prefix.seg_map_path / seg_map_suffix).')
    sampled = _spread(files, sample)
    for path in sampled:
        raw = np.unique(np.asarray(Image.open(path))).astype(np.int64)
        labels = raw
        if reduce_zero_label:
            labels = np.where((raw == 0) | (raw == 255), 255, raw - 1)
        bad = raw[~(((labels >= 0) & (labels < num_classes)) | (labels == ignore_index))]
        if bad.size:
            raw_range = (f'raw values 1..{num_classes} for the classes and 0 / 255 for ignored '
                         'pixels, as reduce_zero_label=True maps them' if reduce_zero_label else
                         f'0..{num_classes - 1} for the classes and {ignore_index} for ignored '
                         'pixels')
            raise DataError(
                f'{path!r} holds label values {bad.tolist()[:10]} that are no class of the '
                f'dataset ({num_classes} classes; valid: {raw_range}). Training would fail on '
                'them and evaluation would count them wrongly: convert the annotation maps to '
                'these ids, or fix the dataset (metainfo classes, reduce_zero_label, '
                'ignore_index).')
    return len(sampled)


def check_coco_json(path: str, need_annotations: bool = True) -> None:
    """A COCO annotation file must parse and hold non-empty ``images`` and ``categories``
    lists (and ``annotations``, unless ``need_annotations`` is false, as for test-dev image
    lists). Files over :data:`JSON_PARSE_LIMIT` are only checked to start like a JSON object.

    Raises:
        DataError: naming the file, the problem and the fix.
    """
    fix = ('regenerate or re-download it (COCO: annotations_trainval2017.zip from '
           'https://cocodataset.org)')
    size = os.path.getsize(path)
    if size == 0:
        raise DataError(f'{path!r} is empty: {fix}.')
    with open(path, 'rb') as f:
        head = f.read(1024).lstrip()
    if not head.startswith(b'{'):
        raise DataError(f'{path!r} is not a COCO json file (it does not start with a JSON '
                        f'object): {fix}.')
    if size > JSON_PARSE_LIMIT:
        return
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f'{path!r} is not valid JSON ({err}); the file is truncated or '
                        f'corrupt: {fix}.') from None
    keys = ('images', 'categories') + (('annotations', ) if need_annotations else ())
    bad = [k for k in keys if not isinstance(data.get(k), list) or not data[k]]
    if bad:
        raise DataError(f'{path!r} has no {" / ".join(bad)} (missing or empty list); a COCO '
                        f'annotation file needs non-empty images, categories and annotations: '
                        f'{fix}, or point ann_file at the right file.')
