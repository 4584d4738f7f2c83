"""Pre-flight checks of a config before a Runner is built: missing datasets, missing checkpoint
files, a class count that does not fit the dataset, and dataset contents that cannot give a
correct run (label values outside the classes, empty or malformed COCO json, COCO annotations of
unknown images or categories, empty image folders) fail at once, with the config key, the path
and the fix in the message (instead of minutes later inside a dataloader worker, or never, as a
silently wrong ``num_classes`` or mIoU). Every check collects all the problems it finds, and
:func:`check_config` raises one :class:`PreflightError` listing the problems of all checks, so
that one run names everything to fix. :func:`add_load_checks` wires the checks of every sample
as it is loaded into the pipelines."""
import glob
import inspect
import os.path as osp
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from mmengine.config import Config
from mmengine.registry import DATASETS

from .data_checks import DataError, check_coco_json, check_label_maps, check_not_empty

DEMO_HINTS = {
    'imagenet': 'generate the demo data with '
                '`python tools/dataset_converters/make_imagenet_demo.py`',
    '': 'generate the demo data with `python tools/dataset_converters/make_demo_data.py` '
        '(writes data/demo/ade20k and data/demo/coco)',
}
DATASET_HINTS = {
    'ADE20KDataset': ('place ADE20K (ADEChallengeData2016.zip from '
                      'http://sceneparsing.csail.mit.edu, unzipped) so that '
                      '{root}/images/training and {root}/annotations/training exist'),
    'CocoDataset': ('place COCO 2017 (train2017/, val2017/ and annotations/ from '
                    'https://cocodataset.org) under {root}'),
    'ImageNet': ('place ImageNet-1k (ILSVRC2012 from https://image-net.org) under {root} as '
                 'train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (meta/train.txt and meta/val.txt '
                 'are optional)'),
}
# Where each dataset's layout and the configs that read it are documented (default: dense tasks).
DATASET_DOCS = {'ImageNet': 'docs/classification.md'}
HEAD_KEYS = ('decode_head', 'auxiliary_head', 'bbox_head', 'mask_head', 'head')
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class PreflightError(RuntimeError):
    """A config names something that is not there, or that does not fit.

    Args:
        problems: one message per problem, each naming the config key, the path and the fix;
            the error's text is the message itself for one problem, a numbered list for more.
    """

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems)
        if len(problems) == 1:
            super().__init__(problems[0])
        else:
            items = ''.join(f'\n  {i}. {p}' for i, p in enumerate(problems, 1))
            super().__init__(f'{len(problems)} problems in the config, each with its fix:{items}')


def _raise_if_any(problems: Iterable[str]) -> None:
    """Raise one :class:`PreflightError` listing ``problems`` (each once, in order), if any."""
    problems = list(dict.fromkeys(problems))
    if problems:
        raise PreflightError(*problems)


def _merge_keys(problems: Iterable[Tuple[str, str]]) -> List[str]:
    """``key: text`` for each ``(key, text)``, the keys of identical texts (e.g. the train and
    val datasets with the same missing ``data_root``) joined in one problem."""
    keys: Dict[str, List[str]] = {}
    for key, text in problems:
        keys.setdefault(text, []).append(key)
    return [f"{', '.join(k)}: {text}" for text, k in keys.items()]


def _walk(node: Any, path: str) -> Iterator[Tuple[str, dict]]:
    """Every dict inside ``node`` with its dotted key path (list items as ``.<i>``)."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f'{path}.{i}')


def _leaf_datasets(cfg: dict, path: str) -> Iterator[Tuple[str, dict]]:
    """Datasets that read files, through ConcatDataset / RepeatDataset-style wrappers."""
    if 'datasets' in cfg:
        for i, sub in enumerate(cfg['datasets']):
            yield from _leaf_datasets(sub, f'{path}.datasets.{i}')
    elif isinstance(cfg.get('dataset'), dict):
        yield from _leaf_datasets(cfg['dataset'], f'{path}.dataset')
    else:
        yield path, cfg


def _dataset_hint(dataset: dict, root: str) -> str:
    parts = osp.normpath(root).split(osp.sep)
    if parts[:2] == ['data', 'demo']:
        return DEMO_HINTS.get(parts[2] if len(parts) > 2 else '', DEMO_HINTS[''])
    name = str(dataset.get('type', '')).split('.')[-1]
    where = DATASET_HINTS.get(name, 'place the dataset there')
    docs = DATASET_DOCS.get(name, 'docs/dense_tasks.md')
    return (where.format(root=root) + ', or point the config at it with --cfg-options '
            f'<dataloader>.dataset.data_root=PATH (see {docs})')


def _dataloaders(cfg: Config, mode: str) -> List[str]:
    if mode == 'train':
        names = ['train_dataloader']
        if cfg.get('val_cfg') is not None and cfg.get('val_dataloader') is not None:
            names.append('val_dataloader')
        return names
    return ['test_dataloader']


def _prefixes(dataset: dict) -> Dict[str, str]:
    """The dataset's ``data_prefix`` as ``{key: folder}`` (mmpretrain also takes a plain folder
    name: key ``''``)."""
    prefixes = dataset.get('data_prefix') or {}
    return {'': prefixes} if isinstance(prefixes, str) else dict(prefixes)


def _missing_dataset_paths(dataset: dict, where: str) -> Iterator[Tuple[str, str]]:
    """(config key, problem) for each path of ``dataset`` that does not exist (only the root
    when the root itself is missing)."""
    root = dataset.get('data_root') or ''
    if root and not osp.isdir(root):
        yield f'{where}.data_root', f'{root!r} does not exist: {_dataset_hint(dataset, root)}.'
        return
    ann_file = dataset.get('ann_file') or ''
    if ann_file and not osp.isfile(osp.join(root, ann_file)):
        yield (f'{where}.ann_file', f'{osp.join(root, ann_file)!r} does not exist: '
               f'{_dataset_hint(dataset, root)}.')
    for key, prefix in _prefixes(dataset).items():
        folder = osp.join(root, prefix)
        if prefix and not osp.isdir(folder):
            yield (f'{where}.data_prefix' + (f'.{key}' if key else ''),
                   f'{folder!r} does not exist: {_dataset_hint(dataset, root)}.')


def dataset_problems(cfg: Config, mode: str) -> List[str]:
    """Every data root, annotation file and data prefix the run reads that does not exist,
    naming the config key(s), the missing path and how to get the data."""
    return _merge_keys(
        problem for loader in _dataloaders(cfg, mode)
        for where, dataset in _leaf_datasets(cfg[loader]['dataset'], f'{loader}.dataset')
        for problem in _missing_dataset_paths(dataset, where))


def check_datasets(cfg: Config, mode: str) -> None:
    """Every data root, annotation file and data prefix the run reads must exist.

    Raises:
        PreflightError: listing every missing path (:func:`dataset_problems`).
    """
    _raise_if_any(dataset_problems(cfg, mode))


def _evaluators(cfg: Config, mode: str) -> List[str]:
    if mode == 'test':
        return ['test_evaluator']
    return ['val_evaluator'] if 'val_dataloader' in _dataloaders(cfg, mode) else []


def evaluator_problems(cfg: Config, mode: str) -> List[str]:
    """Annotation files that evaluators read (e.g. ``CocoMetric.ann_file``) and that do not
    exist, naming the config key and the path."""
    return _merge_keys(
        (f'{where}.ann_file',
         f'{node["ann_file"]!r} does not exist: '
         f'{_dataset_hint(node, osp.dirname(node["ann_file"]))}.')
        for name in _evaluators(cfg, mode) for where, node in _walk(cfg.get(name), name)
        if isinstance(node.get('ann_file'), str) and node['ann_file']
        and not osp.isfile(node['ann_file']))


def check_evaluators(cfg: Config, mode: str) -> None:
    """Annotation files that evaluators read (e.g. ``CocoMetric.ann_file``) must exist.

    Raises:
        PreflightError: listing every missing file (:func:`evaluator_problems`).
    """
    _raise_if_any(evaluator_problems(cfg, mode))


def _checkpoints(cfg: Config) -> Iterator[Tuple[str, str]]:
    """(config key, local path) of every checkpoint the model and ``load_from`` name."""
    for path, node in _walk(cfg.get('model'), 'model'):
        for key in ('checkpoint', 'pretrained', 'student_checkpoint'):
            value = node.get(key)
            if isinstance(value, str) and value:
                yield f'{path}.{key}', value
    if cfg.get('load_from'):
        yield 'load_from', cfg.load_from


def load_from_role(cfg: Config, mode: str) -> str:
    """What ``cfg.load_from`` is for: the checkpoint ``tools/test.py`` evaluates, the one
    ``--resume`` continues from, or the weights training starts from."""
    if mode == 'test':
        return 'checkpoint to evaluate'
    return 'resume checkpoint' if cfg.get('resume') else 'load_from checkpoint'


LOAD_FROM_FIXES = {
    'checkpoint to evaluate': 'Pass the path of an existing checkpoint as CHECKPOINT',
    'resume checkpoint': 'Pass an existing checkpoint to --resume, or --resume without a value '
                         'to continue from the latest checkpoint in the work dir',
}


def checkpoint_roles(cfg: Config, mode: str) -> Dict[str, str]:
    """Local path -> what it is for (the config key, or :func:`load_from_role`), for messages
    that name a file."""
    return {path: (load_from_role(cfg, mode) if key == 'load_from' else key)
            for key, path in _checkpoints(cfg)}


def producing_config(path: str) -> Optional[str]:
    """The shipped config whose training writes ``path`` (``work_dirs/<config name>/...``, e.g.
    the demo's dense teacher), relative to the repository root; ``None`` if there is none."""
    parts = osp.normpath(path).split(osp.sep)
    if len(parts) < 3 or parts[0] != 'work_dirs':
        return None
    found = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', '**', parts[1] + '.py'),
                             recursive=True))
    return osp.relpath(found[0], REPO_ROOT) if found else None


def _random_init_key(key: str) -> Optional[str]:
    """The config key that, set to ``None``, leaves out the pretrained weights ``key`` names:
    the ``init_cfg`` that holds an init_cfg checkpoint (e.g. ``model.backbone.init_cfg`` for
    ``model.backbone.init_cfg.checkpoint``, as mmseg's Swin configs set it), a ``pretrained``
    key itself; ``None`` for the weights a run cannot do without (teacher, ``load_from``)."""
    parts = key.split('.')
    if 'init_cfg' in parts:
        return '.'.join(parts[:parts.index('init_cfg') + 1])
    return key if parts[-1] == 'pretrained' else None


def _override_hint(key: str) -> str:
    """How to point ``key`` at a local file (and, for pretrained weights, how to do without)."""
    hint = f'--cfg-options {key}=PATH'
    random_init = _random_init_key(key)
    if random_init is not None:
        hint += (f' (or --cfg-options {random_init}=None to start from random weights '
                 'instead)')
    return hint


def _missing_checkpoint_fix(key: str, path: str) -> str:
    config = producing_config(path)
    if config is not None:
        return (f'It is written by training {config}: run `python tools/train.py {config}` '
                f'first, or point the config elsewhere with {_override_hint(key)}')
    return ('Nothing is downloaded at run time: place the file there (docs/checkpoints.md, '
            '"Weight files the configs expect", lists every file and where to download it), '
            f'or point the config elsewhere with {_override_hint(key)}')


URL_FIXES = {
    'checkpoint to evaluate': 'pass the local path as CHECKPOINT',
    'resume checkpoint': 'pass the local path to --resume',
}


def _url_problem(what: str, key: str, path: str) -> str:
    fix = URL_FIXES.get(what, f'point the config at it with {_override_hint(key)}')
    return (f'{what} {path!r} is a URL: mmdvit reads local checkpoints only and downloads '
            'nothing at run time (a downloaded checkpoint would be unpickled before any '
            'check). Download it yourself (compare its SHA-256 with the checksum its name '
            f'carries, if any) and {fix}.')


def checkpoint_problems(cfg: Config, mode: str, skip: Tuple[str, ...] = ()) -> List[str]:
    """Every checkpoint the config names that is a URL or a missing file, naming what the file
    is for (the config key or the tool's argument), the path and how to fix it (for the keys
    of pretrained weights, also the key to set to ``None``); see :func:`check_checkpoints`."""
    problems = []
    for key, path in _checkpoints(cfg):
        if key in skip:
            continue
        what = load_from_role(cfg, mode) if key == 'load_from' else f'{key}: checkpoint'
        if '://' in path:
            problems.append(_url_problem(what, key, path))
        elif not osp.isfile(osp.expanduser(path)):
            fix = _missing_checkpoint_fix(key, path)
            if key == 'load_from':
                fix = LOAD_FROM_FIXES.get(what, fix)
            problems.append(f'{what} {path!r} not found. {fix}.')
    return problems


def check_checkpoints(cfg: Config, mode: str, skip: Tuple[str, ...] = ()) -> None:
    """Every checkpoint the config names must be a local file that exists (a URL is refused:
    nothing is downloaded at run time).

    Args:
        mode: ``'train'`` or ``'test'`` (says what ``load_from`` is for).
        skip: config keys not to check (e.g. pretrained backbone weights at test time, when a
            full checkpoint replaces them).

    Raises:
        PreflightError: listing every such checkpoint (:func:`checkpoint_problems`).
    """
    _raise_if_any(checkpoint_problems(cfg, mode, skip))


def init_checkpoint_keys(cfg: Config) -> Tuple[str, ...]:
    """Config keys of weights that only initialise training (backbone ``init_cfg``, the
    teacher): evaluation loads a full checkpoint instead, so test runs need not have them."""
    return tuple(key for key, _ in _checkpoints(cfg) if key != 'load_from')


def _dataset_class(dataset: dict, scope: Optional[str]) -> Optional[type]:
    with DATASETS.switch_scope_and_registry(scope) as registry:
        return registry.get(dataset.get('type', ''))


def _dataset_classes(dataset: dict, scope: Optional[str]) -> Optional[Tuple[str, ...]]:
    metainfo = dataset.get('metainfo') or {}
    if metainfo.get('classes'):
        return tuple(metainfo['classes'])
    classes = getattr(_dataset_class(dataset, scope), 'METAINFO', {}).get('classes')
    return tuple(classes) if classes else None


def num_classes_problems(cfg: Config, mode: str) -> List[str]:
    """Heads whose ``num_classes`` differs from the class count of a dataset the run reads
    (one problem per head, naming the first such dataset), with both counts and the fix."""
    heads = [(f'{path}.num_classes', node['num_classes'])
             for path, node in _walk(cfg.get('model'), 'model')
             if [p for p in path.split('.') if not p.isdigit()][-1] in HEAD_KEYS
             and isinstance(node.get('num_classes'), int)]
    problems: Dict[str, str] = {}
    for loader in _dataloaders(cfg, mode):
        for where, dataset in _leaf_datasets(cfg[loader]['dataset'], f'{loader}.dataset'):
            classes = _dataset_classes(dataset, cfg.get('default_scope'))
            if classes is None:
                continue
            for key, num in heads:
                if num != len(classes) and key not in problems:
                    problems[key] = (
                        f'{key} = {num}, but {where} ({dataset.get("type")}) has '
                        f'{len(classes)} classes. Set it to {len(classes)} (e.g. --cfg-options '
                        f'{key}={len(classes)}) or give the dataset metainfo=dict(classes=...) '
                        f'with {num} names.')
    return list(problems.values())


def check_num_classes(cfg: Config, mode: str) -> None:
    """Heads' ``num_classes`` (decode / auxiliary / bbox / mask / classification heads, student
    and teacher alike) must equal the number of classes of every dataset the run reads.

    Raises:
        PreflightError: listing every such head (:func:`num_classes_problems`).
    """
    _raise_if_any(num_classes_problems(cfg, mode))


def _setting(dataset: dict, dataset_cls: Optional[type], name: str, default: Any) -> Any:
    """A dataset argument: from the config, else the class's default, else ``default``."""
    if name in dataset:
        return dataset[name]
    param = inspect.signature(dataset_cls).parameters.get(name) if dataset_cls else None
    return default if param is None or param.default is param.empty else param.default


def _is_a(dataset_cls: Optional[type], name: str) -> bool:
    return any(c.__name__ == name for c in getattr(dataset_cls, '__mro__', ()))


def _raw_classes(dataset: dict, dataset_cls: Optional[type]) -> Optional[Tuple[str, ...]]:
    """The classes the label ids in a segmentation dataset's files refer to: the class's full
    list (a metainfo subset is mapped when the maps are loaded), else the metainfo's."""
    classes = (getattr(dataset_cls, 'METAINFO', {}).get('classes')
               or (dataset.get('metainfo') or {}).get('classes'))
    return tuple(classes) if classes else None


@contextmanager
def _config_key(key: str, problems: List[str]) -> Iterator[None]:
    """Add a :class:`DataError` raised inside to ``problems``, naming ``key``."""
    try:
        yield
    except DataError as err:
        problems.append(f'{key}: {err}')


def _dataset_content_problems(dataset: dict, dataset_cls: Optional[type], where: str,
                              need_annotations: bool) -> List[str]:
    """What is wrong inside the files of ``dataset`` that exist (missing paths are
    :func:`dataset_problems`)."""
    problems: List[str] = []
    root = dataset.get('data_root') or ''
    ann_file = dataset.get('ann_file') or ''
    path = osp.join(root, ann_file)
    if ann_file and osp.isfile(path):
        with _config_key(f'{where}.ann_file', problems):
            if osp.getsize(path) == 0:
                raise DataError(f'{path!r} is empty: regenerate or re-download it.')
            if _is_a(dataset_cls, 'CocoDataset'):
                check_coco_json(path, need_annotations)
    for key, prefix in _prefixes(dataset).items():
        folder = osp.join(root, prefix)
        if not prefix or not osp.isdir(folder):
            continue
        with _config_key(f'{where}.data_prefix' + (f'.{key}' if key else ''), problems):
            if key != 'seg_map_path':
                check_not_empty(folder)
                continue
            classes = _raw_classes(dataset, dataset_cls)
            if classes:
                check_label_maps(
                    folder, _setting(dataset, dataset_cls, 'seg_map_suffix', '.png'),
                    len(classes), _setting(dataset, dataset_cls, 'reduce_zero_label', False),
                    _setting(dataset, dataset_cls, 'ignore_index', 255))
    return problems


def data_content_problems(cfg: Config, mode: str) -> List[str]:
    """What is wrong inside the data files that exist (see :func:`check_data_contents`)."""
    problems = []
    for loader in _dataloaders(cfg, mode):
        for where, dataset in _leaf_datasets(cfg[loader]['dataset'], f'{loader}.dataset'):
            problems += _dataset_content_problems(
                dataset, _dataset_class(dataset, cfg.get('default_scope')), where,
                need_annotations=loader == 'train_dataloader')
    for name in _evaluators(cfg, mode):
        for where, node in _walk(cfg.get(name), name):
            ann_file = node.get('ann_file')
            if ('CocoMetric' in str(node.get('type', '')) and isinstance(ann_file, str)
                    and osp.isfile(ann_file)):
                with _config_key(f'{where}.ann_file', problems):
                    check_coco_json(ann_file, need_annotations=not node.get('format_only'))
    return problems


def check_data_contents(cfg: Config, mode: str) -> None:
    """What the datasets hold: a sample of segmentation annotation maps must have label values
    in ``[0, num_classes)`` or the ignore index (after ``reduce_zero_label``; a quick check
    before the Runner is built, every map is checked as it is loaded, see
    :func:`add_load_checks`); COCO json files (datasets and ``CocoMetric``) must parse, hold
    images, categories and (for training data and evaluation) annotations, and their
    annotations must name images and categories of the file; image folders must hold images;
    annotation files must not be empty. Files that do not exist are left to
    :func:`check_datasets`.

    Raises:
        PreflightError: listing every problem, each naming the config key, the file and the
            fix.
    """
    _raise_if_any(data_content_problems(cfg, mode))


FILE_CHECK = 'mmdvit.CheckFilesNotEmpty'
LABEL_CHECK = 'mmdvit.CheckLabelMap'


def _name(transform: Any) -> str:
    """A pipeline entry's type without its scope (``'mmseg.LoadAnnotations'`` ->
    ``'LoadAnnotations'``)."""
    return str(transform.get('type', '')).split('.')[-1] if isinstance(transform, dict) else ''


def _is(transform: Any, check: str) -> bool:
    return isinstance(transform, dict) and transform.get('type') == check


def _with_label_check_tta(stages: list, label_check: dict) -> list:
    """``TestTimeAug``'s ``transforms`` (stages of alternatives) with a ``[label_check]`` stage
    after each stage of ``LoadAnnotations``."""
    out: list = []
    for i, stage in enumerate(stages):
        out.append(stage)
        following = stages[i + 1] if i + 1 < len(stages) else []
        if (stage and all(_name(t) == 'LoadAnnotations' for t in stage)
                and not any(_is(t, LABEL_CHECK) for t in following)):
            out.append([dict(label_check)])
    return out


def _with_load_checks(pipeline: list, label_check: Optional[dict]) -> list:
    """``pipeline`` with :data:`FILE_CHECK` before every ``LoadImageFromFile`` and
    ``label_check`` (if any) after every ``LoadAnnotations`` (also inside ``TestTimeAug``),
    where they are not already."""
    out: list = []
    for i, transform in enumerate(pipeline):
        name = _name(transform)
        if name == 'LoadImageFromFile' and not (out and _is(out[-1], FILE_CHECK)):
            out.append(dict(type=FILE_CHECK))
        if name == 'TestTimeAug' and label_check:
            transform = dict(transform, transforms=_with_label_check_tta(
                transform['transforms'], label_check))
        out.append(transform)
        following = pipeline[i + 1] if i + 1 < len(pipeline) else None
        if name == 'LoadAnnotations' and label_check and not _is(following, LABEL_CHECK):
            out.append(dict(label_check))
    return out


def add_load_checks(cfg: Config, mode: str) -> None:
    """Check every sample as it is loaded (in place): in the pipeline of every dataset the run
    reads, :class:`~mmdvit.datasets.transforms.CheckFilesNotEmpty` goes before each
    ``LoadImageFromFile`` (0-byte images and annotation maps) and, for mmseg datasets,
    :class:`~mmdvit.datasets.transforms.CheckLabelMap` after each ``LoadAnnotations`` (label
    values outside the classes, maps of another size than their image), with the dataset's
    class count and ignore index. Entries already there (e.g. in a config an earlier run
    dumped) are kept as they are.

    Args:
        mode: ``'train'`` (training and validation data) or ``'test'``.
    """
    for loader in _dataloaders(cfg, mode):
        for _, dataset in _leaf_datasets(cfg[loader]['dataset'], loader):
            pipeline = dataset.get('pipeline')
            if not isinstance(pipeline, (list, tuple)):
                continue
            dataset_cls = _dataset_class(dataset, cfg.get('default_scope'))
            label_check = None
            if _is_a(dataset_cls, 'BaseSegDataset'):
                classes = _raw_classes(dataset, dataset_cls)
                label_check = dict(type=LABEL_CHECK,
                                   num_classes=len(classes) if classes else None,
                                   ignore_index=_setting(dataset, dataset_cls, 'ignore_index', 255))
            dataset['pipeline'] = _with_load_checks(list(pipeline), label_check)


def check_config(cfg: Config, mode: str) -> None:
    """Run every pre-flight check for ``mode`` ('train' or 'test').

    Raises:
        PreflightError: listing the problems of all checks (missing data, missing or URL
            checkpoints, class counts, data contents), each with its fix.
    """
    skip = init_checkpoint_keys(cfg) if mode == 'test' else ()
    _raise_if_any(dataset_problems(cfg, mode) + evaluator_problems(cfg, mode)
                  + checkpoint_problems(cfg, mode, skip) + num_classes_problems(cfg, mode)
                  + data_content_problems(cfg, mode))
