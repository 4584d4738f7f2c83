"""Pre-flight data checks: label values outside the classes, empty or malformed COCO json and
empty image folders stop a run with the config key, the file and the fix; the demo data pass."""
import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from mmdvit.datasets import make_ade20k_demo, make_coco_demo, make_imagenet_demo
from mmdvit.engine.data_checks import DataError, check_coco_json, check_label_maps
from mmdvit.engine.preflight import PreflightError, check_config, check_data_contents

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
