"""The demo datasets are in the real on-disk formats, deterministic, and read by mmseg / mmdet."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdvit.datasets import ADE20K_LABELS, COCO_CLASSES, COCO_IDS, make_ade20k_demo, make_coco_demo


def digest(root: Path) -> str:
    sha = hashlib.sha1()
    for path in sorted(root.rglob('*')):
        if path.is_file():
            sha.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return sha.hexdigest()


def test_ade20k_layout_labels_and_determinism(tmp_path):
    from mmseg.datasets import ADE20KDataset
    classes = ADE20KDataset.METAINFO['classes']
    for name, value in ADE20K_LABELS.items():  # PNG value c is class c - 1
        assert classes[value - 1].strip() == name
    make_ade20k_demo(str(tmp_path / 'a'), num_train=4, num_val=2, seed=3)
    make_ade20k_demo(str(tmp_path / 'b'), num_train=4, num_val=2, seed=3)
    assert digest(tmp_path / 'a') == digest(tmp_path / 'b')
    make_ade20k_demo(str(tmp_path / 'c'), num_train=4, num_val=2, seed=4)
    assert digest(tmp_path / 'a') != digest(tmp_path / 'c')

    dataset = ADE20KDataset(data_root=str(tmp_path / 'a'), data_prefix=dict(
        img_path='images/training', seg_map_path='annotations/training'), pipeline=[])
    assert len(dataset) == 4
    values = set()
    for info in dataset:
        label = np.array(Image.open(info['seg_map_path']))
        image = Image.open(info['img_path'])
        assert label.shape == (image.height, image.width) and label.dtype == np.uint8
        values |= set(np.unique(label).tolist())
    # 0 ("other", ignored with reduce_zero_label) occurs, everything else is a known class.
    assert 0 in values and values - {0} <= set(ADE20K_LABELS.values()) and len(values) >= 5


def test_coco_json_boxes_and_polygons(tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    counts = make_coco_demo(str(tmp_path), num_train=6, num_val=3, seed=0)
    assert len(COCO_CLASSES) == len(COCO_IDS) == 80 and COCO_IDS[-1] == 90
    coco = COCO(str(tmp_path / 'annotations' / 'instances_train2017.json'))
    assert len(coco.getImgIds()) == 6 and len(coco.getAnnIds()) == counts['train2017'] > 0
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(COCO_CLASSES)
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = coco.loadImgs(ann['image_id'])[0]
        assert (tmp_path / 'train2017' / img['file_name']).is_file()
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= img['width'] and y + h <= img['height']
        rle = mask_utils.frPyObjects(ann['segmentation'], img['height'], img['width'])
        poly_area = float(mask_utils.area(mask_utils.merge(rle)))
        assert poly_area == pytest.approx(ann['area'], rel=0.2)  # polygon vs drawn pixels
        assert coco.loadCats(ann['category_id'])[0]['name'] in (
            'person', 'car', 'sports ball', 'kite')
    val = json.loads((tmp_path / 'annotations' / 'instances_val2017.json').read_text())
    assert len(val['images']) == 3


def test_mmdet_reads_the_demo_coco_set(tmp_path):
    from mmdet.datasets import CocoDataset
    make_coco_demo(str(tmp_path), num_train=4, num_val=2, seed=1)
    dataset = CocoDataset(data_root=str(tmp_path), ann_file='annotations/instances_train2017.json',
                          data_prefix=dict(img='train2017/'), pipeline=[])
    labels = {inst['bbox_label'] for info in dataset for inst in info['instances']}
    assert labels <= {COCO_CLASSES.index(n) for n in ('person', 'car', 'sports ball', 'kite')}
    assert labels
