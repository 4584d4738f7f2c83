"""Checks of dataset contents before a run: annotation maps whose labels fit the classes, COCO
json files that parse, hold images, categories and annotations, and whose annotations name
images and categories of the file, image folders that hold images. Each raises
:class:`DataError` naming the file and the fix; the pre-flight (:mod:`mmdvit.engine.preflight`)
adds the config key. The same label check runs on every map as it is loaded
(:mod:`mmdvit.datasets.transforms`)."""
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


def bad_label_values(raw: np.ndarray, num_classes: int, reduce_zero_label: bool,
                     ignore_index: int = 255) -> List[int]:
    """The distinct raw values of an annotation map that are neither a class id in
    ``[0, num_classes)`` nor ``ignore_index`` after mmseg's ``reduce_zero_label`` (raw 0 and 255
    -> 255, others -1), sorted."""
    raw = np.unique(raw).astype(np.int64)
    labels = np.where((raw == 0) | (raw == 255), 255, raw - 1) if reduce_zero_label else raw
    return raw[~(((labels >= 0) & (labels < num_classes)) | (labels == ignore_index))].tolist()


def label_values_error(path: str, bad: Sequence[int], num_classes: int,
                       reduce_zero_label: bool, ignore_index: int = 255) -> DataError:
    """The error for an annotation map ``path`` that holds the raw label values ``bad``."""
    raw_range = (f'raw values 1..{num_classes} for the classes and 0 / 255 for ignored pixels, '
                 'as reduce_zero_label=True maps them' if reduce_zero_label else
                 f'0..{num_classes - 1} for the classes and {ignore_index} for ignored pixels')
    return DataError(
        f'{path!r} holds label values {list(bad)[:10]} that are no class of the dataset '
        f'({num_classes} classes; valid: {raw_range}). Training would fail on them and '
        'evaluation would count them wrongly: convert the annotation maps to these ids, or fix '
        'the dataset (metainfo classes, reduce_zero_label, ignore_index).')


def check_label_maps(folder: str, suffix: str, num_classes: int, reduce_zero_label: bool,
                     ignore_index: int = 255, sample: int = LABEL_SAMPLE) -> int:
    """Label values of a sample of ``folder``'s annotation maps must be class ids in
    ``[0, num_classes)`` or ``ignore_index``, after mmseg's ``reduce_zero_label`` (see
    :func:`bad_label_values`). Returns the number of maps read. A quick check that fails before
    the Runner is built; every map is checked as it is loaded by
    :class:`mmdvit.datasets.transforms.CheckLabelMap`.

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
        bad = bad_label_values(np.asarray(Image.open(path)), num_classes, reduce_zero_label,
                               ignore_index)
        if bad:
            raise label_values_error(path, bad, num_classes, reduce_zero_label, ignore_index)
    return len(sampled)


def check_coco_json(path: str, need_annotations: bool = True) -> None:
    """A COCO annotation file must parse and hold non-empty ``images`` and ``categories``
    lists (and ``annotations``, unless ``need_annotations`` is false, as for test-dev image
    lists), and every annotation must name an image id and a category id of the file. Files
    over :data:`JSON_PARSE_LIMIT` are only checked to start like a JSON object.

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
    _check_coco_ids(path, data)


def _check_coco_ids(path: str, data: dict) -> None:
    """Every annotation must name an image and a category of the file (mmdet and pycocotools
    drop the others silently).

    Raises:
        DataError: naming the file, how many annotations are affected, the first one's id and
            its unknown id, and the fix.
    """
    known = {key: {item.get('id') for item in data[field] if isinstance(item, dict)}
             for key, field in (('image_id', 'images'), ('category_id', 'categories'))}
    annotations = [a for a in data.get('annotations') or [] if isinstance(a, dict)]
    for key, field in (('category_id', 'categories'), ('image_id', 'images')):
        bad = [a for a in annotations if a.get(key) not in known[key]]
        if bad:
            listed = sorted(i for i in known[key] if isinstance(i, int))[:10]
            more = '...' if len(known[key]) > len(listed) else ''
            raise DataError(
                f'{path!r}: {len(bad)} annotation(s) name a {key} that is not in the file\'s '
                f'{field}, the first is annotation id {bad[0].get("id")!r} with {key} '
                f'{bad[0].get(key)!r} ({field} ids: {listed}{more}). '
                'mmdet would drop them silently: give them the id of one of the listed '
                f'{field} (or add the missing entry to {field}), or remove them, and '
                'regenerate the file if a converter wrote it.')
