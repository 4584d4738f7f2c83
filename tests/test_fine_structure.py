"""The fine-structure sets: deterministic, labels that match the drawn pixels, thin structures
that are thin and small objects that are small, read by mmseg (ADE20K layout, through the demo
configs' dataset settings) and by pycocotools / mmdet (COCO)."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_demo_data import digest

from mmdvit.datasets import (FINE_ADE20K_LABELS, FINE_COCO_KINDS, FINE_GROUPS,
                             make_fine_structure_ade20k, make_fine_structure_coco)
from mmdvit.datasets.fine_structure import (POLE_WIDTHS, SHADING, SMALL_MAX_SIDE,
                                            render_fine_scene)
from mmdvit.engine.data_checks import check_coco_json

ROOT = Path(__file__).resolve().parents[1]
VALUE = FINE_ADE20K_LABELS


def scenes(count: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [render_fine_scene(rng, int(rng.integers(128, 192)), int(rng.integers(128, 192)))
            for _ in range(count)]


def runs(row: np.ndarray) -> list:
    """Lengths of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], row, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(edges[1::2] - edges[0::2])


def test_same_seed_same_scenes_other_seed_other_scenes(tmp_path):
    a, b, c = scenes(3, seed=5), scenes(3, seed=5), scenes(3, seed=6)
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.label, y.label)
    assert not any(np.array_equal(x.label, z.label) for x, z in zip(a, c))
    for seed, name in ((1, 'a'), (1, 'b'), (2, 'c')):
        make_fine_structure_ade20k(str(tmp_path / name), num_train=3, num_val=2, seed=seed)
    assert digest(tmp_path / 'a') == digest(tmp_path / 'b') != digest(tmp_path / 'c')


def test_labels_and_pixels_follow_the_drawn_parts():
    backgrounds = {VALUE[n] for n in ('sky', 'road', 'grass', 'water')}
    for scene in scenes():
        expected = np.zeros(scene.label.shape, np.uint8)  # 0: background, not a part
        visible = []
        for part in scene.parts:  # a later part covers an earlier one
            expected[part.mask] = VALUE[part.kind]
            visible = [(p, m & ~part.mask) for p, m in visible] + [(part, part.mask.copy())]
        covered = expected > 0
        assert np.array_equal(scene.label[covered], expected[covered])
        assert set(np.unique(scene.label[~covered])) <= backgrounds
        for part, mask in visible:
            if part.kind == 'building' or not mask.any():  # windows darken buildings
                continue
            # Drawn as its colour plus the shading texture (amplitude SHADING), then clipped.
            target = np.clip(part.colour, 0, 255)
            assert np.abs(scene.image[mask].astype(np.float32) - target).max() <= SHADING + 1


def test_poles_are_2_to_6_pixels_wide_and_fences_are_lattices():
    pole_pixels = thin_pole_pixels = fences = 0
    for scene in scenes(20):
        for part in scene.parts:
            ys, xs = np.nonzero(part.mask)
            if part.kind == 'pole':
                widths = part.mask.sum(1)
                assert set(widths[widths > 0]) == {xs.max() - xs.min() + 1}
                assert POLE_WIDTHS[0] <= xs.max() - xs.min() + 1 <= POLE_WIDTHS[1]
            if part.kind == 'fence':
                box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
                assert part.mask.sum() < 0.7 * box  # lines with gaps, not a filled band
                fences += 1
        # In the label: poles never merge into wider runs; occlusion only shortens them.
        for row in scene.label == VALUE['pole']:
            for length in runs(row):
                assert length <= POLE_WIDTHS[1]
                pole_pixels += length
                thin_pole_pixels += length if length >= POLE_WIDTHS[0] else 0
    assert fences > 0 and thin_pole_pixels >= 0.9 * pole_pixels > 0


def test_many_small_objects_that_never_overlap():
    counts = {kind: 0 for kind in FINE_GROUPS['small']}
    all_scenes = scenes(20)
    for scene in all_scenes:
        union = np.zeros(scene.label.shape, int)
        for obj in scene.objects:
            ys, xs = np.nonzero(obj.mask)
            assert ys.max() - ys.min() < SMALL_MAX_SIDE and xs.max() - xs.min() < SMALL_MAX_SIDE
            assert (scene.label[obj.mask] == VALUE[obj.kind]).all()  # nothing covers it
            union += obj.mask
            counts[obj.kind] += 1
        assert union.max() <= 1
    assert min(counts.values()) > 0 and sum(counts.values()) >= 8 * len(all_scenes)


def test_ade20k_layout_through_the_demo_config_dataset(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.datasets import ADE20KDataset
    from mmseg.registry import DATASETS
    classes = ADE20KDataset.METAINFO['classes']
    for name, value in FINE_ADE20K_LABELS.items():  # PNG value v is class v - 1
        assert classes[value - 1].strip() == name
    assert sorted(sum(FINE_GROUPS.values(), ())) == sorted(FINE_ADE20K_LABELS)
    make_fine_structure_ade20k(str(tmp_path), num_train=3, num_val=2, seed=0)
    meta = json.loads((tmp_path / 'fine_structure.json').read_text())
    assert meta['num_train'] == 3 and meta['classes'] == FINE_ADE20K_LABELS

    cfg = Config.fromfile(str(ROOT / 'configs/demo/upernet_swin_dense_demo.py'))
    init_default_scope('mmseg')
    for loader, count in (('train_dataloader', 3), ('val_dataloader', 2)):
        dataset = DATASETS.build(dict(cfg[loader].dataset, data_root=str(tmp_path)))
        assert len(dataset) == count
        sample = dataset[0]
        gt = sample['data_samples'].gt_sem_seg.data[0]
        png = np.array(Image.open(dataset.get_data_info(0)['seg_map_path']))
        if loader == 'train_dataloader':  # the demo's crops, at most 128x128
            assert sample['inputs'].shape[-2:] == gt.shape and max(gt.shape) <= 128
        else:  # evaluated at the annotation's size: reduce_zero_label maps value v to v - 1
            assert gt.shape == png.shape and 0 not in png
            assert np.array_equal(gt.numpy(), png.astype(np.int64) - 1)
        assert set(gt.unique().tolist()) - {255} <= {v - 1 for v in FINE_ADE20K_LABELS.values()}


def test_coco_instances_are_the_small_objects(tmp_path):
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope
    from pycocotools.coco import COCO
    counts = make_fine_structure_coco(str(tmp_path), num_train=4, num_val=2, seed=3,
                                      size_range=(140, 170))
    coco = COCO(str(tmp_path / 'annotations' / 'instances_train2017.json'))
    assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) == counts['train2017'] >= 20
    names = {coco.loadCats(a['category_id'])[0]['name'] for a in coco.loadAnns(coco.getAnnIds())}
    assert names == set(FINE_COCO_KINDS.values())
    # The first training image is the generator's first scene: pycocotools decodes exactly
    # the drawn objects.
    rng = np.random.default_rng(3)
    height, width = int(rng.integers(140, 170)), int(rng.integers(140, 170))
    scene = render_fine_scene(rng, height, width)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(anns) == len(scene.objects)
    for ann, obj in zip(anns, scene.objects):
        x, y, w, h = ann['bbox']
        assert w <= SMALL_MAX_SIDE and h <= SMALL_MAX_SIDE and ann['area'] == obj.mask.sum()
        assert np.array_equal(coco.annToMask(ann).astype(bool), obj.mask)
        ys, xs = np.nonzero(obj.mask)
        assert [x, y, w, h] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]

    check_coco_json(str(tmp_path / 'annotations' / 'instances_val2017.json'))  # pre-flight
    init_default_scope('mmdet')
    dataset = CocoDataset(data_root=str(tmp_path), ann_file='annotations/instances_val2017.json',
                          data_prefix=dict(img='val2017/'), pipeline=[
                              dict(type='LoadImageFromFile'),
                              dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
    sample = dataset[0]
    assert len(sample['gt_masks']) == len(sample['gt_bboxes']) > 0
    assert sample['gt_masks'].areas.max() <= SMALL_MAX_SIDE ** 2


def test_converter_writes_both_layouts(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'make_fine_structure_data', ROOT / 'tools/dataset_converters/make_fine_structure_data.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['--out', str(tmp_path), '--num-train', '2', '--num-val', '1', '--size', '64'])
    ade = json.loads((tmp_path / 'ade20k' / 'fine_structure.json').read_text())
    assert ade['size_range'] == [64, 65] and ade['num_val'] == 1
    assert Image.open(next((tmp_path / 'ade20k/images/training').glob('*.jpg'))).size == (64, 64)
    assert (tmp_path / 'coco' / 'annotations' / 'instances_val2017.json').is_file()
    for bad in (['--size', '100', '50'], ['--size', '16'], ['--num-val', '0']):
        with pytest.raises(SystemExit):
            tool.parse_args(bad)
