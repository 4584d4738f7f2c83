"""tools/test.py's options from upstream's tools: ``--out`` / ``--out-item`` for classification
configs (mmpretrain), ``--out`` written atomically (a folder that appears only when complete, a
pickle that is never torn), ``--tta`` with the ``mmdvit.SparsityTrainer`` wrapper (mmseg's
SegTTAModel), ``--show`` / ``--wait-time`` and the error without a display."""
import argparse
import copy
import functools
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from PIL import Image
from test_dense_e2e import metrics, run
from test_flops import load_tool

from mmdvit.datasets import make_ade20k_demo, make_imagenet_demo
from mmdvit.engine.data_checks import LABEL_SAMPLE, _spread
from mmdvit.engine.outputs import (AtomicDumpDetResults, AtomicDumpResults,
                                   SegPredictionWriter, staging_folder)

ROOT = Path(__file__).resolve().parents[1]
CLS_DEMO = ROOT / 'configs/demo/imagenet_dvit_swin_demo.py'
SEG_DEMO = ROOT / 'configs/demo/upernet_dvit_swin_demo.py'
DET_DEMO = ROOT / 'configs/demo/maskrcnn_dvit_swin_demo.py'
NUM_CLASSES = 5  # the demo ImageNet's classes

CLS_CONFIG = """
_base_ = '{base}'
test_dataloader = dict(batch_size=2, dataset=dict(data_root='{data}'))
"""
# A 16-128-channel segmentor without teacher; a 4-view TTA (2 scales x 2 flips) instead of the
# ADE20K config's 12 views.
SEG_CONFIG = """
_base_ = '{base}'
widths = [16, 32, 64, 128]
model = dict(
    student=dict(backbone=dict(embed_dims=widths[0]),
                 decode_head=dict(in_channels=widths, channels=16),
                 auxiliary_head=dict(in_channels=widths[2], channels=8)),
    teacher=None, feature_distill_weight=0.0, logit_distill_weight=0.0)
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root='{data}'))
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=0.75, keep_ratio=True),
         dict(type='Resize', scale_factor=1.0, keep_ratio=True)],
        [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
         dict(type='RandomFlip', prob=1.0, direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')]])]
"""


@pytest.fixture(scope='module')
def tool():
    return tool_module()


def build_and_save(config: Path, checkpoint: Path) -> torch.nn.Module:
    """The config's model with its random initial weights, saved as a Runner-style checkpoint."""
    cfg = Config.fromfile(str(config))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    return model


@pytest.fixture(scope='module')
def clf(tmp_path_factory):
    """The tiny classification demo on 5 validation images (one per class), a checkpoint of
    random weights."""
    tmp = tmp_path_factory.mktemp('cls')
    make_imagenet_demo(str(tmp / 'imagenet'), num_train=0, num_val=1)
    config = tmp / 'cls.py'
    config.write_text(CLS_CONFIG.format(base=CLS_DEMO, data=tmp / 'imagenet'))
    build_and_save(config, tmp / 'random.pth')
    return tmp, config, tmp / 'random.pth'


@pytest.fixture(scope='module')
def seg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('seg')
    make_ade20k_demo(str(tmp / 'ade20k'), num_train=0, num_val=2, seed=0, size_range=(64, 80))
    config = tmp / 'seg.py'
    config.write_text(SEG_CONFIG.format(base=SEG_DEMO, data=tmp / 'ade20k'))
    model = build_and_save(config, tmp / 'random.pth')
    return tmp, config, tmp / 'random.pth', model


@functools.lru_cache(maxsize=None)
def tool_module():
    """tools/test.py imported as a module."""
    return load_tool(str(ROOT / 'tools' / 'test.py'))


def cli(*argv: str) -> argparse.Namespace:
    """Command-line arguments as tools/test.py parses them (with its defaults)."""
    return tool_module().parse_args(['CONFIG', 'CKPT', *argv])


# --------------------------------------------------------------------------- --out (classification)
def test_classification_out_dumps_one_prediction_per_image(clf):
    tmp, config, checkpoint = clf
    out = tmp / 'preds' / 'results.pkl'
    proc = run(['tools/test.py', str(config), str(checkpoint), '--work-dir', str(tmp / 'w1'),
                '--out', str(out)])
    assert 0 <= metrics(proc)['accuracy/top1'] <= 100
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert isinstance(preds, list) and len(preds) == 5
    assert sorted(int(p['gt_label']) for p in preds) == list(range(NUM_CLASSES))
    for pred in preds:
        assert pred['pred_score'].shape == (NUM_CLASSES, )
        assert torch.allclose(pred['pred_score'].sum(), torch.tensor(1.0))
        assert int(pred['pred_label']) == int(pred['pred_score'].argmax())
        assert Path(pred['img_path']).suffix == '.JPEG'


def test_classification_out_item_metrics_dumps_the_metrics(clf):
    tmp, config, checkpoint = clf
    out = tmp / 'metrics.pkl'
    proc = run(['tools/test.py', str(config), str(checkpoint), '--work-dir', str(tmp / 'w2'),
                '--out', str(out), '--out-item', 'metrics'])
    with open(out, 'rb') as f:
        dumped = pickle.load(f)
    assert set(dumped) == {'accuracy/top1'}
    assert float(dumped['accuracy/top1']) == pytest.approx(metrics(proc)['accuracy/top1'])


def test_out_extension_and_out_item_are_checked(tool, tmp_path):
    for name, what in ((CLS_DEMO, 'classification predictions'), (DET_DEMO, 'detection results')):
        cfg = Config.fromfile(str(name))
        with pytest.raises(ValueError, match=rf"--out '.*preds\.json': {what} are saved as a "
                           r'pickle file: give a path ending in \.pkl or \.pickle'):
            tool.add_outputs(cfg, cli('--out', str(tmp_path / 'preds.json')))
    cfg = Config.fromfile(str(CLS_DEMO))
    with pytest.raises(ValueError, match='classification metrics are saved as a pickle'):
        tool.add_outputs(cfg, cli('--out', str(tmp_path / 'm.txt'), '--out-item', 'metrics'))
    tool.add_outputs(cfg, cli('--out', str(tmp_path / 'new' / 'm.pickle'), '--out-item',
                              'metrics'))
    assert cfg.test_evaluator == Config.fromfile(str(CLS_DEMO)).test_evaluator  # no dump metric
    assert (tmp_path / 'new').is_dir()
    with pytest.raises(ValueError, match=r"--out-item is for classification configs .*"
                       r"default_scope is 'mmseg'.*drop --out-item"):
        tool.check_out_item(Config.fromfile(str(SEG_DEMO)), 'pred')
    tool.check_out_item(Config.fromfile(str(SEG_DEMO)), None)


def test_out_item_without_out_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli('--out-item', 'metrics')
    assert exit_info.value.code == 2
    assert '--out-item says what the --out file holds: give --out FILE.pkl' in \
        capsys.readouterr().err
    assert cli('--out', 'x.pkl').out_item is None  # the predictions, as mmpretrain


# --------------------------------------------------------------------------- --out, atomic
def seg_samples(reduce_zero_label: bool) -> list:
    """Predictions as the evaluator hands them to metrics (dicts), of 3 images."""
    gen = torch.Generator().manual_seed(0)
    return [dict(img_path=f'/data/images/img_{i}.jpg', reduce_zero_label=reduce_zero_label,
                 pred_sem_seg=dict(data=torch.randint(0, 150, (1, 6, 9), generator=gen)))
            for i in range(3)]


@pytest.mark.parametrize('reduce_zero_label', [False, True])
def test_segmentation_predictions_are_mmseg_files_and_appear_only_complete(tmp_path,
                                                                           reduce_zero_label):
    from mmseg.evaluation import IoUMetric
    reference = IoUMetric(output_dir=str(tmp_path / 'mmseg'), format_only=True)
    reference.dataset_meta = dict(classes=tuple(str(i) for i in range(150)))
    reference.process({}, seg_samples(reduce_zero_label))
    out = tmp_path / 'preds'
    writer = SegPredictionWriter(out_dir=str(out))
    staging = Path(staging_folder(str(out)))
    (staging / 'img_7.png').write_bytes(b'from a killed run')
    writer.process({}, seg_samples(reduce_zero_label))
    assert not out.exists()  # nothing there until every image is predicted
    writer.compute_metrics(writer.results)
    assert not staging.exists()
    names = sorted(p.name for p in out.iterdir())
    assert names == ['img_0.png', 'img_1.png', 'img_2.png']  # the killed run's file is gone
    for name, sample in zip(names, seg_samples(reduce_zero_label)):
        written = np.asarray(Image.open(out / name))
        assert np.array_equal(written, np.asarray(Image.open(tmp_path / 'mmseg' / name)))
        expected = sample['pred_sem_seg']['data'][0].numpy() + int(reduce_zero_label)
        assert np.array_equal(written, expected)


def test_out_folder_of_an_earlier_run_is_refused(tool, tmp_path):
    cfg = Config.fromfile(str(SEG_DEMO))
    tool.add_outputs(cfg, cli('--out', str(tmp_path / 'empty')))
    assert cfg.test_evaluator[-1] == dict(type='mmdvit.SegPredictionWriter',
                                          out_dir=str(tmp_path / 'empty'))
    (tmp_path / 'empty').mkdir()
    tool.add_outputs(Config.fromfile(str(SEG_DEMO)), cli('--out', str(tmp_path / 'empty')))
    (tmp_path / 'empty' / 'ADE_val_00000001.png').write_bytes(b'')
    with pytest.raises(ValueError, match=r"--out '.*empty' already holds 1 files \(an earlier "
                       r'run\?\): predictions go to a new or empty folder, so that two runs '
                       'never mix'):
        tool.add_outputs(Config.fromfile(str(SEG_DEMO)), cli('--out', str(tmp_path / 'empty')))


def test_a_failing_prediction_write_leaves_no_partial_file(tmp_path, monkeypatch):
    """A full disk in the middle of a PNG: neither the file nor a temporary file remains."""
    def save_half(image, f, format=None):
        f.write(b'\x89PNG half')
        raise OSError(28, 'No space left on device')

    out = tmp_path / 'preds'
    writer = SegPredictionWriter(out_dir=str(out))
    writer.process({}, seg_samples(False)[:1])
    monkeypatch.setattr(Image.Image, 'save', save_half)
    with pytest.raises(OSError, match='No space left'):
        writer.process({}, seg_samples(False)[1:2])
    assert [p.name for p in Path(staging_folder(str(out))).iterdir()] == ['img_0.png']
    assert not out.exists()


def test_pickles_are_written_atomically(tmp_path):
    """Classification / detection --out: the file holds the old content or the complete new
    one (a result that cannot be pickled fails half-way), as upstream's dump metrics write it."""
    from mmdet.evaluation.metrics import DumpDetResults
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    out = tmp_path / 'results.pkl'
    AtomicDumpResults(out_file_path=str(out)).compute_metrics([{'score': 1.0}])
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        AtomicDumpResults(out_file_path=str(out)).compute_metrics([{'a': 1}, lambda: 0])
    assert pickle.loads(out.read_bytes()) == [{'score': 1.0}]
    assert [p.name for p in tmp_path.iterdir()] == ['results.pkl']
    sample = DetDataSample(metainfo=dict(img_id=3, img_path='a.jpg'))
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([[1.0, 2.0, 5.0, 7.0]]), scores=torch.tensor([0.5]),
        labels=torch.tensor([2]), masks=torch.rand(1, 8, 9) > 0.5)
    sample.gt_instances = InstanceData(bboxes=torch.zeros(1, 4))
    dumped = []
    for metric, name in ((AtomicDumpDetResults, 'ours.pkl'), (DumpDetResults, 'mmdet.pkl')):
        dump = metric(out_file_path=str(tmp_path / name))
        dump.process({}, [copy.deepcopy(sample).to_dict()])
        dump.compute_metrics(dump.results)
        dumped.append(pickle.loads((tmp_path / name).read_bytes()))
    ours, upstream = dumped
    assert ours[0].keys() == upstream[0].keys() and 'gt_instances' not in ours[0]
    assert ours[0]['pred_instances']['masks'] == upstream[0]['pred_instances']['masks']  # RLE
    assert torch.equal(ours[0]['pred_instances']['bboxes'], upstream[0]['pred_instances']['bboxes'])


def test_evaluation_names_a_bad_label_map_and_leaves_no_partial_out_folder(seg, tmp_path):
    """A map outside the pre-flight's sample holds values outside the classes: evaluation
    stops naming it (instead of a silently wrong mIoU), and --out does not appear with the
    predictions of the images before it only. Fixed, the same --out is written complete."""
    _, _, checkpoint, _ = seg
    make_ade20k_demo(str(tmp_path / 'ade20k'), num_train=0, num_val=LABEL_SAMPLE + 2, seed=1,
                     size_range=(32, 40))
    config = tmp_path / 'seg.py'
    config.write_text(SEG_CONFIG.format(base=SEG_DEMO, data=tmp_path / 'ade20k'))
    maps = sorted((tmp_path / 'ade20k/annotations/validation').glob('*.png'))
    sampled = set(_spread([str(m) for m in maps], LABEL_SAMPLE))
    bad = next(m for m in maps if str(m) not in sampled)
    good = np.asarray(Image.open(bad))
    broken = good.copy()
    broken[0, :3] = 180
    Image.fromarray(broken).save(bad)
    out = tmp_path / 'preds'
    args = ['tools/test.py', str(config), str(checkpoint), '--work-dir', str(tmp_path / 'w'),
            '--out', str(out)]
    proc = run(args, expect_ok=False)
    assert proc.returncode != 0 and 'metrics:' not in proc.stdout
    assert re.search(rf"DataError: '.*{bad.name}' holds label values \[180\] that are no class",
                     proc.stderr), proc.stderr[-3000:]
    assert not out.exists()
    before = [m.name for m in maps[:maps.index(bad)]]
    assert before and sorted(p.name for p in Path(staging_folder(str(out))).iterdir()) == before
    Image.fromarray(good).save(bad)
    run(args)
    assert sorted(p.name for p in out.iterdir()) == [m.name for m in maps]
    assert not Path(staging_folder(str(out))).exists()


# --------------------------------------------------------------------------- --tta
def test_tta_wraps_the_model_and_replaces_the_test_pipeline(tool):
    cfg = Config.fromfile(str(SEG_DEMO))
    model, tta_pipeline = cfg.model.copy(), cfg.tta_pipeline
    tool.use_tta(cfg, str(SEG_DEMO))
    assert cfg.model.type == 'SegTTAModel'
    assert cfg.model.module == model and cfg.model.module.type == 'mmdvit.SparsityTrainer'
    assert cfg.test_dataloader.dataset.pipeline == tta_pipeline
    assert cfg.test_dataloader.dataset.pipeline[1].type == 'TestTimeAug'


@pytest.mark.parametrize('missing', [('tta_model', 'tta_pipeline'), ('tta_model', ),
                                     ('tta_pipeline', )])
def test_tta_without_the_config_keys_names_them_and_the_config(tool, missing):
    cfg = Config.fromfile(str(SEG_DEMO))
    for key in missing:
        cfg.pop(key)
    names = ' and '.join(f'`{key}`' for key in missing)
    with pytest.raises(ValueError, match=rf"--tta needs {names} in the config, but .*"
                       r'upernet_dvit_swin_demo\.py does not define'):
        tool.use_tta(cfg, str(SEG_DEMO))
    assert cfg.model.type == 'mmdvit.SparsityTrainer'  # nothing changed


def test_tta_on_a_config_without_it_fails_through_the_tool(clf):
    tmp, config, checkpoint = clf
    proc = run(['tools/test.py', str(config), str(checkpoint), '--tta'], expect_ok=False)
    assert proc.returncode != 0 and 'metrics:' not in proc.stdout
    assert (f'--tta needs `tta_model` and `tta_pipeline` in the config, but {config} does not '
            'define them') in proc.stderr, proc.stderr[-2000:]


def test_seg_tta_model_merges_the_wrapper_predictions(seg):
    """SegTTAModel around the wrapper: each view goes through the wrapper's test_step (its
    student), and the merged label map is the argmax of the views' mean softmax."""
    from mmseg.models import SegTTAModel
    from mmseg.structures import SegDataSample
    model = seg[3].eval()
    tta = SegTTAModel(module=model)
    gen = torch.Generator().manual_seed(0)
    views = []
    for flip in (False, True):
        image = torch.rand(3, 64, 80, generator=gen) * 255
        meta = dict(img_shape=(64, 80), ori_shape=(64, 80), img_path='a.jpg', flip=flip,
                    flip_direction='horizontal' if flip else None)
        views.append(dict(inputs=[image], data_samples=[SegDataSample(metainfo=meta)]))
    data = dict(inputs=[v['inputs'] for v in views],
                data_samples=[v['data_samples'] for v in views])
    with torch.no_grad():
        merged = tta.test_step(data)
        single = [model.test_step(v)[0].seg_logits.data for v in views]
    expected = sum(s.softmax(dim=0) for s in single).argmax(dim=0)
    assert len(merged) == 1 and merged[0].pred_sem_seg.data.shape == (1, 64, 80)
    assert torch.equal(merged[0].pred_sem_seg.data[0], expected)
    assert not torch.equal(single[0], single[1])  # the views differ: the merge is not trivial


def test_segmentation_tta_evaluates_the_wrapper_checkpoint(seg):
    tmp, config, checkpoint, _ = seg
    work = tmp / 'tta'
    proc = run(['tools/test.py', str(config), str(checkpoint), '--work-dir', str(work), '--tta'])
    assert 0 <= metrics(proc)['mIoU'] <= 100
    dumped = Config.fromfile(str(work / 'seg.py'))  # the config the Runner ran
    assert dumped.model.type == 'SegTTAModel'
    assert dumped.model.module.type == 'mmdvit.SparsityTrainer'
    pipeline = dumped.test_dataloader.dataset.pipeline
    assert [t.type for t in pipeline] == ['mmdvit.CheckFilesNotEmpty', 'LoadImageFromFile',
                                          'TestTimeAug']
    views = pipeline[2]
    assert len(views.transforms[0]) == 2  # the label maps are checked after loading:
    assert [s[0].type for s in views.transforms[-3:]] == ['LoadAnnotations',
                                                          'mmdvit.CheckLabelMap', 'PackSegInputs']
    assert 'does not fit' not in proc.stderr  # the strict check sees the wrapped model


def test_strict_check_looks_through_the_tta_model(seg):
    """The checkpoint keys are the wrapper's (no ``module.`` prefix): a fitting checkpoint
    passes under SegTTAModel, a misfit one is named with the wrapped model."""
    from types import SimpleNamespace

    from mmseg.models import SegTTAModel

    from mmdvit.engine.hooks import CheckpointMismatchError, StrictLoadHook
    model = seg[3]
    runner = SimpleNamespace(model=SegTTAModel(module=model))
    state = dict(model.state_dict())
    StrictLoadHook(role='checkpoint to evaluate').after_load_checkpoint(
        runner, {'state_dict': state})
    state.pop('decode_head.conv_seg.weight')
    with pytest.raises(CheckpointMismatchError, match=r'does not fit SparsityTrainer: 1 of the '
                       r'\d+ model tensors are missing from it: decode_head\.conv_seg\.weight'):
        StrictLoadHook(role='checkpoint to evaluate').after_load_checkpoint(
            runner, {'state_dict': state})


# --------------------------------------------------------------------------- --show
def test_show_without_a_display_fails_at_once_naming_the_fix(clf):
    tmp, config, checkpoint = clf
    proc = run(['tools/test.py', str(config), str(checkpoint), '--show'], expect_ok=False,
               DISPLAY='', WAYLAND_DISPLAY='')
    assert proc.returncode == 2 and 'metrics:' not in proc.stdout
    assert re.search(r'error: --show: no display is available \(DISPLAY and WAYLAND_DISPLAY are '
                     r'unset\), so no window can open\. Use --show-dir DIR to save the drawn '
                     r'predictions instead', proc.stderr), proc.stderr[-2000:]


def test_display_problem(tool):
    assert 'DISPLAY' in tool.display_problem({}, 'linux', backend='TkAgg')
    assert tool.display_problem({'DISPLAY': ':0'}, 'linux', backend='TkAgg') is None
    assert tool.display_problem({'WAYLAND_DISPLAY': 'wayland-0'}, 'linux', 'QtAgg') is None
    assert tool.display_problem({}, 'darwin', backend='macosx') is None
    assert "non-interactive backend 'agg'" in tool.display_problem({'DISPLAY': ':0'}, 'linux',
                                                                   backend='agg')
    assert 'non-interactive' in tool.display_problem({}, 'win32', backend='Agg')


@pytest.mark.parametrize('config, keys', [
    (SEG_DEMO, dict(draw=True, show=True, wait_time=0.5, interval=1)),
    (DET_DEMO, dict(draw=True, show=True, wait_time=0.5)),
    (CLS_DEMO, dict(enable=True, show=True, wait_time=0.5, interval=1)),
], ids=['mmseg', 'mmdet', 'mmpretrain'])
def test_show_and_wait_time_reach_the_visualization_hook(tool, config, keys):
    cfg = Config.fromfile(str(config))
    tool.add_show(cfg, cli('--wait-time', '0.5').wait_time)
    hook = cfg.default_hooks.visualization
    assert {k: hook.get(k) for k in keys} == keys
    assert cli().wait_time == 2.0  # upstream's default
    # The hook builds with these arguments and holds them.
    from mmengine.registry import HOOKS
    from mmengine.visualization import Visualizer
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        Visualizer.get_instance('test_tool_show')  # the hooks draw with the current one
        built = HOOKS.build(hook)
    assert built.show is True
    wait_time = built.draw_args['wait_time'] if 'enable' in keys else built.wait_time
    assert wait_time == 0.5


def test_show_dir_enables_the_classification_hook(tool, tmp_path):
    """mmpretrain's hook is switched on by ``enable`` and writes to ``out_dir`` itself."""
    cfg = Config.fromfile(str(CLS_DEMO))
    tool.add_outputs(cfg, cli('--show-dir', str(tmp_path / 'drawn')))
    hook = cfg.default_hooks.visualization
    assert (hook.enable, hook.out_dir, hook.interval) == (True, str(tmp_path / 'drawn'), 1)
    assert 'draw' not in hook and (tmp_path / 'drawn').is_dir()
