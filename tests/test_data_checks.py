"""Data checks. Pre-flight: label values outside the classes, empty or malformed COCO json,
COCO annotations of unknown images or categories and empty image folders stop a run with the
config key, the file and the fix; the demo data pass. At load time (the transforms the tools
insert): every label map's values and size, and empty image / label files, named."""
import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import DATASETS, DefaultScope
from mmseg.datasets.transforms import LoadAnnotations
from PIL import Image

from mmdvit.datasets import make_ade20k_demo, make_coco_demo, make_imagenet_demo
from mmdvit.datasets.transforms import CheckLabelMap
from mmdvit.engine.data_checks import (LABEL_SAMPLE, DataError, _spread, check_coco_json,
                                       check_label_maps)
from mmdvit.engine.preflight import (FILE_CHECK, LABEL_CHECK, PreflightError, add_load_checks,
                                     check_config, check_data_contents)

ROOT = Path(__file__).resolve().parents[1]


def demo_config(name: str, data_root: Path) -> Config:
    """A demo config pointed at ``data_root``, without checkpoints to find."""
    cfg = Config.fromfile(str(ROOT / 'configs/demo' / name))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root) + '/'
    if 'ann_file' in cfg.get('val_evaluator', {}):
        cfg.val_evaluator.ann_file = str(data_root / 'annotations/instances_val2017.json')
        cfg.test_evaluator = cfg.val_evaluator
    cfg.model.teacher = None
    cfg.model.student.backbone.init_cfg = None
    return cfg


@pytest.fixture(scope='module')
def ade(tmp_path_factory):
    root = tmp_path_factory.mktemp('ade') / 'ade20k'
    make_ade20k_demo(str(root), num_train=3, num_val=2, seed=0, size_range=(64, 80))
    return root


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco') / 'coco'
    make_coco_demo(str(root), num_train=2, num_val=2, seed=0)
    return root


def test_demo_data_pass(ade, coco, tmp_path):
    make_imagenet_demo(str(tmp_path / 'imagenet'), num_train=1, num_val=1)
    for name, root in (('upernet_dvit_swin_demo.py', ade), ('maskrcnn_dvit_swin_demo.py', coco),
                       ('imagenet_dvit_deit_demo.py', tmp_path / 'imagenet')):
        cfg = demo_config(name, root)
        for mode in ('train', 'test'):
            check_config(cfg, mode)


def write_label(path: Path, values) -> None:
    Image.fromarray(np.array(values, dtype=np.uint8).reshape(1, -1)).save(path)


def test_label_values_outside_the_classes_stop_training_and_evaluation(ade, tmp_path):
    root = tmp_path / 'ade20k'
    make_ade20k_demo(str(root), num_train=2, num_val=2, seed=1, size_range=(64, 80))
    bad = sorted((root / 'annotations/validation').glob('*.png'))[1]
    write_label(bad, [0, 5, 150, 151, 200, 255])
    cfg = demo_config('upernet_dvit_swin_demo.py', root)
    for mode, loader in (('train', 'val'), ('test', 'test')):
        with pytest.raises(PreflightError, match=(
                rf"{loader}_dataloader\.dataset\.data_prefix\.seg_map_path: '.*"
                rf"{bad.name}' holds label values \[151, 200\] that are no class of the "
                r'dataset \(150 classes; valid: raw values 1\.\.150 for the classes and 0 / 255 '
                r'for ignored pixels.*convert the annotation maps')):
            check_config(cfg, mode)


def test_label_range_follows_reduce_zero_label_and_ignore_index(tmp_path):
    write_label(tmp_path / 'a.png', [0, 149, 255])
    assert check_label_maps(str(tmp_path), '.png', 150, reduce_zero_label=False) == 1
    write_label(tmp_path / 'a.png', [0, 150])
    with pytest.raises(DataError, match=r'label values \[150\].*0\.\.149 for the classes and '
                       r'255 for ignored'):
        check_label_maps(str(tmp_path), '.png', 150, reduce_zero_label=False)
    assert check_label_maps(str(tmp_path), '.png', 150, reduce_zero_label=True) == 1
    write_label(tmp_path / 'a.png', [0, 2, 7])
    assert check_label_maps(str(tmp_path), '.png', 3, reduce_zero_label=False, ignore_index=7)
    with pytest.raises(DataError, match='holds no .png annotation maps'):
        check_label_maps(str(tmp_path / 'a.png') + '.d', '.png', 3, reduce_zero_label=False)


def test_only_a_bounded_sample_of_label_maps_is_read(tmp_path):
    for i in range(50):
        write_label(tmp_path / f'{i:02d}.png', [1])
    assert check_label_maps(str(tmp_path), '.png', 150, reduce_zero_label=True, sample=20) == 20


@pytest.mark.parametrize('content, message', [
    ('', 'is empty'),
    ('{"images": [{"id": 1}], "annotations": [', r'is not valid JSON \(Expecting value'),
    ('[]', r'is not a COCO json file \(it does not start with a JSON object'),
    (json.dumps(dict(images=[], annotations=[], categories=[])),
     'has no images / categories / annotations'),
    (json.dumps(dict(images=[{'id': 1}], annotations=[{'id': 1}])), 'has no categories'),
])
def test_empty_or_malformed_coco_json_is_named(coco, tmp_path, content, message):
    root = tmp_path / 'coco'
    make_coco_demo(str(root), num_train=1, num_val=1, seed=0)
    ann = root / 'annotations/instances_train2017.json'
    ann.write_text(content)
    with pytest.raises(PreflightError, match=rf"train_dataloader\.dataset\.ann_file: '.*"
                       rf"instances_train2017\.json' {message}"):
        check_data_contents(demo_config('maskrcnn_dvit_swin_demo.py', root), 'train')


def test_evaluation_json_needs_annotations_unless_format_only(coco, tmp_path):
    ann = tmp_path / 'image_info_test.json'
    ann.write_text(json.dumps(dict(images=[{'id': 1}], categories=[{'id': 1, 'name': 'a'}])))
    check_coco_json(str(ann), need_annotations=False)  # a test-dev image list
    cfg = demo_config('maskrcnn_dvit_swin_demo.py', coco)
    cfg.test_evaluator = dict(cfg.test_evaluator, ann_file=str(ann))
    with pytest.raises(PreflightError, match=r"test_evaluator\.ann_file: '.*image_info_test\.json'"
                       ' has no annotations'):
        check_data_contents(cfg, 'test')
    cfg.test_evaluator['format_only'] = True
    check_data_contents(cfg, 'test')


def test_empty_image_folders_are_named(tmp_path):
    root = tmp_path / 'coco'
    make_coco_demo(str(root), num_train=1, num_val=1, seed=0)
    for image in (root / 'train2017').iterdir():
        image.unlink()
    with pytest.raises(PreflightError, match=r"train_dataloader\.dataset\.data_prefix\.img: "
                       r"'.*train2017/?' holds no \.jpg/.*files: put the images there"):
        check_data_contents(demo_config('maskrcnn_dvit_swin_demo.py', root), 'train')
    imagenet = tmp_path / 'imagenet'
    make_imagenet_demo(str(imagenet), num_train=1, num_val=0)
    (imagenet / 'val').mkdir(exist_ok=True)
    cfg = demo_config('imagenet_dvit_deit_demo.py', imagenet)
    cfg.val_dataloader.dataset.data_prefix = 'val'  # mmpretrain takes a plain folder name
    with pytest.raises(PreflightError, match=r"val_dataloader\.dataset\.data_prefix: '.*val' "
                       'holds no'):
        check_data_contents(cfg, 'train')


@pytest.mark.parametrize('key, bad_id', [('category_id', 999), ('image_id', 123456)])
def test_coco_annotations_of_unknown_categories_or_images_are_named(tmp_path, key, bad_id):
    root = tmp_path / 'coco'
    make_coco_demo(str(root), num_train=2, num_val=1, seed=0)
    ann = root / 'annotations/instances_train2017.json'
    data = json.loads(ann.read_text())
    data['annotations'][1][key] = bad_id
    ann.write_text(json.dumps(data))
    field = 'categories' if key == 'category_id' else 'images'
    with pytest.raises(PreflightError, match=(
            rf"train_dataloader\.dataset\.ann_file: '.*instances_train2017\.json': 1 "
            rf"annotation\(s\) name a {key} that is not in the file's {field}, the first is "
            rf"annotation id {data['annotations'][1]['id']} with {key} {bad_id} .*mmdet would "
            rf'drop them silently: give them the id of one of the listed {field}')):
        check_data_contents(demo_config('maskrcnn_dvit_swin_demo.py', root), 'train')


# ------------------------------------------------------------------------- checks at load time
def build_dataset(cfg: Config, loader: str):
    """The dataset of ``cfg[loader]`` with the load checks the tools insert."""
    add_load_checks(cfg, 'train' if loader != 'test_dataloader' else 'test')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return DATASETS.build(cfg[loader].dataset)


def index_of(dataset, key: str, path: Path) -> int:
    return next(i for i in range(len(dataset))
                if Path(dataset.get_data_info(i)[key]).name == path.name)


def test_a_bad_label_map_outside_the_preflight_sample_stops_loading_naming_it(tmp_path):
    root = tmp_path / 'ade20k'
    make_ade20k_demo(str(root), num_train=1, num_val=LABEL_SAMPLE + 5, seed=2,
                     size_range=(32, 40))
    maps = sorted((root / 'annotations/validation').glob('*.png'))
    sampled = set(_spread([str(m) for m in maps], LABEL_SAMPLE))
    bad = next(m for m in maps if str(m) not in sampled)
    train_map = next((root / 'annotations/training').glob('*.png'))
    for path in (bad, train_map):
        label = np.array(Image.open(path))
        label[0, :2] = [151, 200]  # raw ids: 1..150 are ADE20K's classes, 0 / 255 ignored
        Image.fromarray(label).save(path)
    cfg = demo_config('upernet_dvit_swin_demo.py', root)
    check_config(cfg, 'test')  # the quick sample does not read it
    message = (rf"'.*{{}}' holds label values \[151, 200\] that are no class of the dataset "
               r'\(150 classes; valid: raw values 1\.\.150 for the classes and 0 / 255 for '
               r'ignored pixels.*convert the annotation maps')
    dataset = build_dataset(cfg, 'test_dataloader')
    dataset[index_of(dataset, 'seg_map_path', maps[0])]  # a good map loads
    with pytest.raises(DataError, match=message.format(bad.name)):
        dataset[index_of(dataset, 'seg_map_path', bad)]
    with pytest.raises(DataError, match=message.format(train_map.name)):
        build_dataset(cfg, 'train_dataloader')[0]  # before the random crop / flip


@pytest.mark.parametrize('reduce_zero_label', [False, True])
def test_load_time_label_check_agrees_with_the_preflight_on_raw_values(tmp_path,
                                                                       reduce_zero_label):
    """mmseg's LoadAnnotations then CheckLabelMap name the raw values the pre-flight's check of
    the file names (an independent reading of the file)."""
    path = tmp_path / 'a.png'
    raw = np.array([[0, 1, 2, 3], [4, 5, 254, 255]], dtype=np.uint8)
    Image.fromarray(raw).save(path)
    results = LoadAnnotations(reduce_zero_label=reduce_zero_label)(dict(
        seg_map_path=str(path), reduce_zero_label=reduce_zero_label, seg_fields=[],
        ori_shape=(2, 4)))
    with pytest.raises(DataError) as preflight:
        check_label_maps(str(tmp_path), '.png', 3, reduce_zero_label)
    with pytest.raises(DataError) as at_load:
        CheckLabelMap(num_classes=3)(results)
    expected = [4, 5, 254] if reduce_zero_label else [3, 4, 5, 254]
    assert str(at_load.value) == str(preflight.value)
    assert f'holds label values {expected} ' in str(at_load.value)
    ok = np.where(raw > (3 if reduce_zero_label else 2), 255, raw).astype(np.uint8)
    Image.fromarray(ok).save(path)
    results['gt_seg_map'] = LoadAnnotations(reduce_zero_label=reduce_zero_label)(dict(
        results, seg_fields=[]))['gt_seg_map']
    assert CheckLabelMap(num_classes=3)(results) is results


def test_a_label_map_of_another_size_than_its_image_is_named(tmp_path):
    root = tmp_path / 'ade20k'
    make_ade20k_demo(str(root), num_train=1, num_val=1, seed=0, size_range=(32, 40))
    label_path = next((root / 'annotations/training').glob('*.png'))
    label = Image.open(label_path)
    height, width = label.height, label.width
    label.crop((0, 0, width - 3, height)).save(label_path)
    dataset = build_dataset(demo_config('upernet_dvit_swin_demo.py', root), 'train_dataloader')
    with pytest.raises(DataError, match=(
            rf"annotation map '.*{label_path.name}' is {height}x{width - 3} \(height x width\) "
            rf"but its image '.*{label_path.stem}\.jpg' is {height}x{width}: a label map must "
            'have the size of its image')):
        dataset[0]


@pytest.mark.parametrize('name, key', [
    ('upernet_dvit_swin_demo.py', 'img_path'),
    ('upernet_dvit_swin_demo.py', 'seg_map_path'),
    ('maskrcnn_dvit_swin_demo.py', 'img_path'),
    ('imagenet_dvit_deit_demo.py', 'img_path'),
])
def test_empty_images_and_label_maps_are_named_at_load(tmp_path, name, key):
    """In mmseg's, mmdet's and mmpretrain's pipelines (their own registry scopes)."""
    root = tmp_path / 'data'
    if name.startswith('upernet'):
        make_ade20k_demo(str(root), num_train=1, num_val=1, seed=0, size_range=(32, 40))
    elif name.startswith('maskrcnn'):
        make_coco_demo(str(root), num_train=1, num_val=1, seed=0)
    else:
        make_imagenet_demo(str(root), num_train=1, num_val=1)
    dataset = build_dataset(demo_config(name, root), 'val_dataloader')
    path = Path(dataset.get_data_info(0)[key])
    path.write_bytes(b'')
    what = 'image' if key == 'img_path' else 'annotation map'
    with pytest.raises(DataError, match=rf"{what} '.*{path.name}' is empty \(0 bytes; an "
                       'interrupted copy or download\?\): replace it with the complete file'):
        dataset[0]


def test_load_checks_are_inserted_once_after_every_load(tmp_path):
    cfg = demo_config('upernet_dvit_swin_demo.py', tmp_path)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    for _ in range(2):  # idempotent, e.g. on a config an earlier run dumped
        add_load_checks(cfg, 'train')
        add_load_checks(cfg, 'test')
    label_check = dict(type=LABEL_CHECK, num_classes=150, ignore_index=255)
    train = cfg.train_dataloader.dataset.pipeline
    assert [t['type'] for t in train[:4]] == [FILE_CHECK, 'LoadImageFromFile', 'LoadAnnotations',
                                             LABEL_CHECK]
    assert train[3] == label_check and len(train) == len(cfg.train_pipeline) + 2
    val = [t['type'] for t in cfg.val_dataloader.dataset.pipeline]
    assert val == [FILE_CHECK, 'LoadImageFromFile', 'Resize', 'LoadAnnotations', LABEL_CHECK,
                   'PackSegInputs']
    tta = cfg.test_dataloader.dataset.pipeline
    assert [t['type'] for t in tta] == [FILE_CHECK, 'LoadImageFromFile', 'TestTimeAug']
    stages = tta[2]['transforms']
    assert [[t['type'] for t in s] for s in stages[-3:]] == [['LoadAnnotations'], [LABEL_CHECK],
                                                             ['PackSegInputs']]
    assert len(stages) == len(cfg.tta_pipeline[1]['transforms']) + 1
    for name in ('maskrcnn_dvit_swin_demo.py', 'imagenet_dvit_deit_demo.py'):
        cfg = demo_config(name, tmp_path)
        add_load_checks(cfg, 'train')
        types = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
        assert types[:2] == [FILE_CHECK, 'LoadImageFromFile'] and LABEL_CHECK not in types
