"""End to end on the demo data, through the tools as users run them (subprocesses): sparsity
training of a segmentor and a detector with the wrapper and a dense teacher, evaluation of the
saved checkpoints, resuming, 2-process CPU runs (gloo), wrapper checkpoints in the plain
student, and the pre-flight errors."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from mmdvit.datasets import make_ade20k_demo, make_coco_demo
from mmdvit.engine.preflight import PreflightError, check_checkpoints, check_config
from helpers import Payload, config_payload, readme_python_blocks, serve_folder
from test_flops import load_tool

ROOT = Path(__file__).resolve().parents[1]
KEEP_RATIOS = (0.7, 0.5, 0.3)
# The console of tools/train.py (2 iterations, 5 validation images) or tools/test.py on the
# tiny configs below: progress lines, the IoU table of the classes seen, the results (measured:
# 34 and 29 lines; before the dumps moved to the log file: over 650 each).
MAX_CONSOLE_LINES = 60

# Tiny versions of the demo configs: 16-128 channels, batch 2, no dataloader workers, a
# constant learning rate, a full-model dense teacher checkpoint with feature (and, for the
# segmentor, logit) distillation.
SEG_CONFIG = """
_base_ = '{root}/configs/demo/upernet_dvit_swin_demo.py'
data_root = '{data}'
widths = [16, 32, 64, 128]
model = dict(
    student=dict(
        backbone=dict(embed_dims=widths[0]),
        decode_head=dict(in_channels=widths, channels=16),
        auxiliary_head=dict(in_channels=widths[2], channels=8)),
    teacher=dict(_delete_=True, model=None, checkpoint='{teacher}'),
    feature_distill_weight=0.5,
    logit_distill_weight=0.5)
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(loader, batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
# The predictors learn 10x faster than the rest, so that 16 iterations show them moving.
optim_wrapper = dict(optimizer=dict(lr=2e-3),
                     paramwise_cfg=dict(custom_keys={{'score_predictors': dict(lr_mult=10.0)}}))
param_scheduler = []
train_cfg = dict(max_iters=16, val_interval=16)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=8))
randomness = dict(seed=0)
"""
DET_CONFIG = """
_base_ = '{root}/configs/demo/maskrcnn_dvit_swin_demo.py'
data_root = '{data}/'
widths = [16, 32, 64, 128]
model = dict(
    # Keep every detection, so that a 3-iteration model still gets a (tiny) mAP computed.
    student=dict(backbone=dict(embed_dims=widths[0]), neck=dict(in_channels=widths),
                 test_cfg=dict(rcnn=dict(score_thr=0.0, max_per_img=20))),
    teacher=dict(_delete_=True, model=None, checkpoint='{teacher}'),
    feature_distill_weight=0.5)
loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
train_dataloader = dict(loader, dataset=dict(data_root=data_root))
val_dataloader = dict(loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=2)
default_hooks = dict(logger=dict(interval=1))
randomness = dict(seed=0)
"""


def run(args: List[str], expect_ok: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run a tool from the repository root with 2 threads; fail with its output if it fails.
    ``env`` overrides the environment (``PYTHON``: the dist scripts' interpreter)."""
    full_env = dict(os.environ, OMP_NUM_THREADS='2', PYTHONWARNINGS='ignore', PYTHON=sys.executable)
    full_env.update(env)
    cmd = args if args[0] == 'bash' else [sys.executable] + args
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=600)
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f'{" ".join(args)} failed:\n{proc.stdout[-4000:]}\n'
                             f'{proc.stderr[-4000:]}')
    return proc


def metrics(proc: subprocess.CompletedProcess) -> Dict[str, float]:
    line = [x for x in proc.stdout.splitlines() if x.startswith('metrics: ')][-1]
    return json.loads(line[len('metrics: '):])


def scalars(work_dir: Path) -> List[dict]:
    """Every record of the training's vis_data/scalars.json (first run in ``work_dir``)."""
    path = sorted(work_dir.glob('2*/vis_data/scalars.json'))[0]
    return [json.loads(line) for line in path.read_text().splitlines()]


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def save_teacher(config: Path, out: Path) -> None:
    """A full-model checkpoint of the dense teacher (random weights, mmseg / mmdet key layout)."""
    cfg = Config.fromfile(str(config))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        student = MODELS.build(cfg.model.student)
    state = {k: v for k, v in student.state_dict().items()
             if 'score_predictors' not in k and 'fast_path' not in k}
    torch.save({'state_dict': state}, out)


def write_config(template: str, path: Path, data: Path, teacher: Path) -> Path:
    path.write_text(template.format(root=ROOT, data=data, teacher=teacher))
    return path


@pytest.fixture(scope='module')
def seg(tmp_path_factory):
    """The tiny segmentation config and its data; the dense teacher's checkpoint."""
    tmp = tmp_path_factory.mktemp('seg')
    make_ade20k_demo(str(tmp / 'ade20k'), num_train=8, num_val=5, seed=0, size_range=(128, 160))
    config = write_config(SEG_CONFIG, tmp / 'seg.py', tmp / 'ade20k', tmp / 'teacher.pth')
    save_teacher(config, tmp / 'teacher.pth')
    return tmp, config


@pytest.fixture(scope='module')
def seg_run(seg):
    """16 iterations of sparsity training, checkpoints at 8 and 16, mIoU at 16."""
    tmp, config = seg
    work_dir = tmp / 'work'
    proc = run(['tools/train.py', str(config), '--work-dir', str(work_dir)])
    return work_dir, proc


@pytest.mark.slow
def test_segmentation_trains_with_sparsity_losses_and_moves_toward_the_targets(seg_run):
    work_dir, proc = seg_run
    assert (work_dir / 'iter_8.pth').is_file() and (work_dir / 'iter_16.pth').is_file()
    assert 'Training done' in proc.stdout
    records = scalars(work_dir)
    train = [r for r in records if 'loss_keep_ratio' in r]
    assert [r['step'] for r in train] == list(range(1, 17))
    for r in train:
        assert {'decode.loss_ce', 'loss_feat_distill', 'loss_logit_distill', 'kept.0', 'kept.1',
                'kept.2'} <= set(r)
        assert r['loss_feat_distill'] > 0 and r['loss_logit_distill'] > 0

    def gap(r: dict) -> float:
        return sum(abs(r[f'kept.{i}'] - t) for i, t in enumerate(KEEP_RATIOS)) / 3

    # kept.<i> is logged per iteration (Gumbel-noisy); loss_keep_ratio is averaged over the
    # last 10 iterations by mmengine's log processor.
    first, last = train[:5], train[-5:]
    assert sum(map(gap, last)) < sum(map(gap, first))
    assert train[-1]['loss_keep_ratio'] < 0.5 * train[0]['loss_keep_ratio']
    assert any('mIoU' in r for r in records)


@pytest.mark.slow
def test_checkpoint_evaluates_and_resumes(seg, seg_run):
    tmp, config = seg
    work_dir, _ = seg_run
    val = [r for r in scalars(work_dir) if 'mIoU' in r][-1]
    single = metrics(run(['tools/test.py', str(config), str(work_dir / 'iter_16.pth'),
                          '--work-dir', str(tmp / 'test1')]))
    assert single['mIoU'] == pytest.approx(val['mIoU']) and 0 <= single['mIoU'] <= 100
    dist = run(['bash', 'tools/dist_test.sh', str(config), str(work_dir / 'iter_16.pth'), '2',
                '--work-dir', str(tmp / 'test2')], PORT=free_port())
    assert metrics(dist) == pytest.approx(single)

    resumed = run(['tools/train.py', str(config), '--work-dir', str(work_dir), '--resume',
                   '--cfg-options', 'train_cfg.max_iters=18', 'train_cfg.val_interval=100'])
    log = resumed.stdout + resumed.stderr
    assert 'resumed' in log.lower() and 'Iter(train) [17/18]' in log
    assert 'Iter(train) [ 1/18]' not in log and (work_dir / 'iter_18.pth').is_file()


@pytest.mark.slow
def test_two_process_cpu_training(seg):
    tmp, config = seg
    work_dir = tmp / 'dist_train'
    proc = run(['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir', str(work_dir),
                '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
                'default_hooks.checkpoint.interval=2'], PORT=free_port())
    out = proc.stdout + proc.stderr
    assert 'rank 0 of 2' in out and 'rank 1 of 2' in out
    assert (work_dir / 'iter_2.pth').is_file()


def test_plain_model_with_a_dynamic_backbone_trains_but_warns_once(seg):
    """The README's first example (an upstream segmentor with only the backbone type swapped,
    no wrapper): nothing trains its predictors, and the log says so at the first iteration;
    the optimizer's per-parameter options stay out of the log at the default level."""
    tmp, config = seg
    plain = tmp / 'swap_only.py'
    plain.write_text(f"_base_ = '{config}'\nmodel = dict(_base_.model.student, _delete_=True)\n"
                     'train_cfg = dict(max_iters=2, val_interval=100)\n')
    proc = run(['tools/train.py', str(plain), '--work-dir', str(tmp / 'swap_only')])
    log = proc.stdout + proc.stderr
    assert log.count('DynamicSwinTransformer is training outside mmdvit.SparsityTrainer') == 1
    assert "model = dict(type='mmdvit.SparsityTrainer', student=<this model config>," in log
    assert 'Iter(train) [2/2]' in log and 'loss_keep_ratio' not in log
    assert 'paramwise_options' not in log


def iou_rows(text: str) -> Dict[str, str]:
    """Class -> IoU cell of the last per-class table in ``text``."""
    table = text.split('per class results:')[-1]
    rows = [[c.strip() for c in line.strip()[1:-1].split('|')] for line in table.splitlines()
            if line.startswith('|')]
    column = rows[0].index('IoU')
    return {row[0]: row[column] for row in rows[1:]}


def test_console_of_a_short_run_is_short_and_the_log_file_complete(seg):
    """tools/train.py (2 iterations, one evaluation) and tools/test.py on the tiny demo-like
    config: each prints at most MAX_CONSOLE_LINES lines (mmengine dumps about 400 lines of
    environment, config and hook order per run, and a 150-row IoU table per evaluation); the
    dumps and the full table are in the work dir's log file; the console's table has the
    classes mIoU counts (IoU not nan), no other; the metrics line has no float32 noise."""
    tmp, config = seg
    work = tmp / 'console'
    train = run(['tools/train.py', str(config), '--work-dir', str(work), '--cfg-options',
                 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                 'default_hooks.checkpoint.interval=2'])
    test = run(['tools/test.py', str(config), str(work / 'iter_2.pth'), '--work-dir',
                str(tmp / 'console_test')])
    for proc, work_dir in ((train, work), (test, tmp / 'console_test')):
        console = proc.stdout + proc.stderr
        assert len(console.splitlines()) <= MAX_CONSOLE_LINES, console
        [log_file] = work_dir.glob('2*/2*.log')
        log = log_file.read_text()
        for dump in ('System environment:', 'Config:\n', 'Hooks will be executed'):
            assert dump not in console and dump in log
        assert f"work_dir = '{work_dir}'" in log  # the full config
        full, shown = iou_rows(log), iou_rows(console)
        assert len(full) == 150
        assert shown == {name: iou for name, iou in full.items() if iou != 'nan'}
        assert f'{150 - len(shown)} classes neither in the data nor predicted' in console
        assert str(log_file) in console
    assert all(round(v, 2) == v for v in metrics(test).values())
    assert re.search(r'"mIoU": \d+\.?\d{0,2}[,}]', test.stdout), test.stdout


def test_upstream_override_keys_on_a_wrapper_config_fail_with_the_student_key(seg):
    tmp, config = seg
    proc = run(['tools/train.py', str(config), '--work-dir', str(tmp / 'override'),
                '--cfg-options', 'model.backbone.keep_ratios=(0.9,0.7,0.5)'], expect_ok=False)
    assert proc.returncode != 0
    assert ('model.backbone.keep_ratios -> model.student.backbone.keep_ratios' in proc.stderr
            and '--cfg-options model.student.backbone.keep_ratios=...' in proc.stderr), \
        proc.stderr[-2000:]


def test_two_process_evaluation_writes_predictions_to_a_new_folder(seg):
    """dist_test.sh ... 2 --out NEWDIR: both ranks write into the staging folder, which becomes
    NEWDIR once complete; without PYTHON the script runs the project's .venv/."""
    tmp, config = seg
    cfg = Config.fromfile(str(config))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        student = MODELS.build(cfg.model.student)
    checkpoint = tmp / 'random_student.pth'
    torch.save({'state_dict': student.state_dict()}, checkpoint)
    out = tmp / 'new' / 'predictions'
    env = dict(PORT=free_port())
    if (ROOT / '.venv' / 'bin' / 'python').is_file():
        env['PYTHON'] = ''
    proc = run(['bash', 'tools/dist_test.sh', str(config), str(checkpoint), '2', '--work-dir',
                str(tmp / 'dist_out'), '--out', str(out)], **env)
    assert 0 <= metrics(proc)['mIoU'] <= 100
    # the 5 validation images, from both ranks; nothing else, and no staging folder left
    assert sorted(p.suffix for p in out.iterdir()) == ['.png'] * 5
    assert sorted(p.name for p in out.parent.iterdir()) == ['predictions']


@pytest.mark.slow
def test_wrapper_checkpoint_loads_into_the_plain_student_and_predicts_identically(seg, seg_run):
    from mmseg.structures import SegDataSample

    from mmdvit.models.checkpoint import extract_state_dict, load_checkpoint_file
    tmp, config = seg
    work_dir, _ = seg_run
    plain = tmp / 'plain_student.py'  # how a user deploys the trained student
    plain.write_text(f"_base_ = '{config}'\nmodel = dict(_base_.model.student, _delete_=True)\n")
    cfg, plain_cfg = Config.fromfile(str(config)), Config.fromfile(str(plain))
    assert plain_cfg.model.type == 'EncoderDecoder'
    with DefaultScope.overwrite_default_scope('mmseg'):
        wrapper, student = MODELS.build(cfg.model), MODELS.build(plain_cfg.model)
    state = extract_state_dict(load_checkpoint_file(str(work_dir / 'iter_16.pth')))
    for model in (wrapper, student):
        model.load_state_dict(state, strict=True)
        model.eval()
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.rand(3, 128, 160, generator=gen) * 255 for _ in range(2)]
    samples = [SegDataSample(metainfo=dict(img_shape=(128, 160), ori_shape=(128, 160)))
               for _ in range(2)]
    with torch.no_grad():
        preds = [m.test_step(dict(inputs=inputs, data_samples=samples))
                 for m in (wrapper, student)]
    for a, b in zip(*preds):
        assert torch.equal(a.seg_logits.data, b.seg_logits.data)
        assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)


@pytest.mark.slow
def test_detection_trains_and_evaluates_bbox_and_segm(tmp_path):
    make_coco_demo(str(tmp_path / 'coco'), num_train=6, num_val=3, seed=0)
    config = write_config(DET_CONFIG, tmp_path / 'det.py', tmp_path / 'coco',
                          tmp_path / 'teacher.pth')
    save_teacher(config, tmp_path / 'teacher.pth')
    run(['tools/train.py', str(config), '--work-dir', str(tmp_path / 'work')])
    train = [r for r in scalars(tmp_path / 'work') if 'loss_keep_ratio' in r]
    assert train and all({'loss_rpn_cls', 'loss_mask', 'loss_feat_distill', 'kept.2'} <= set(r)
                         for r in train)
    result = metrics(run(['tools/test.py', str(config), str(tmp_path / 'work' / 'epoch_1.pth'),
                          '--work-dir', str(tmp_path / 'test'), '--out',
                          str(tmp_path / 'results.pkl')]))
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(result)
    assert (tmp_path / 'results.pkl').is_file()


def test_missing_data_root_fails_at_once_naming_path_and_fix(seg):
    _, config = seg
    proc = run(['tools/train.py', str(config), '--cfg-options',
                'train_dataloader.dataset.data_root=/nonexistent/ade'], expect_ok=False)
    assert proc.returncode != 0
    assert "train_dataloader.dataset.data_root: '/nonexistent/ade' does not exist" in proc.stderr
    assert 'ADEChallengeData2016' in proc.stderr
    cfg = Config.fromfile(str(ROOT / 'configs/demo/maskrcnn_dvit_swin_demo.py'))
    cfg.train_dataloader.dataset.data_root = 'data/demo/missing/'
    with pytest.raises(PreflightError, match='make_demo_data.py'):
        check_config(cfg, 'train')


def test_missing_imagenet_folder_fails_naming_the_string_data_prefix(tmp_path):
    # mmpretrain datasets take data_prefix as a plain folder name, not a dict
    (tmp_path / 'meta').mkdir()
    (tmp_path / 'meta' / 'train.txt').write_text('')
    cfg = Config.fromfile(str(ROOT / 'configs/imagenet_dvit_deit.py'))
    cfg.train_dataloader.dataset.update(
        data_root=str(tmp_path), ann_file='meta/train.txt', data_prefix='train')
    with pytest.raises(PreflightError, match=r"train_dataloader\.dataset\.data_prefix: "
                       r"'.*/train' does not exist.*ImageNet"):
        check_config(cfg, 'train')


def test_missing_imagenet_root_asks_for_class_folders_and_points_to_the_classification_doc():
    cfg = Config.fromfile(str(ROOT / 'configs/imagenet_dvit_deit.py'))
    cfg.train_dataloader.dataset.data_root = '/nonexistent/imagenet'
    with pytest.raises(PreflightError) as err:
        check_config(cfg, 'train')
    message = str(err.value)
    assert ("train_dataloader.dataset.data_root: '/nonexistent/imagenet' does not exist" in
            message)
    assert ('train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (meta/train.txt and meta/val.txt are '
            'optional)') in message
    assert 'docs/classification.md' in message and 'dense_tasks' not in message


def test_missing_demo_teacher_names_the_config_that_trains_it():
    cfg = Config.fromfile(str(ROOT / 'configs/demo/upernet_dvit_swin_demo.py'))
    cfg.model.teacher.checkpoint = 'work_dirs/upernet_swin_dense_demo/iter_999999.pth'
    cfg.train_dataloader.dataset.data_root = cfg.val_dataloader.dataset.data_root = ''
    cfg.train_dataloader.dataset.data_prefix = cfg.val_dataloader.dataset.data_prefix = {}
    with pytest.raises(PreflightError, match=re.escape(
            "model.teacher.checkpoint: checkpoint 'work_dirs/upernet_swin_dense_demo/"
            "iter_999999.pth' not found. It is written by training "
            'configs/demo/upernet_swin_dense_demo.py: run `python tools/train.py '
            'configs/demo/upernet_swin_dense_demo.py` first')):
        check_checkpoints(cfg, 'train')


def test_missing_evaluated_and_resumed_checkpoints_are_named_by_role_through_the_tools(seg):
    tmp, config = seg
    proc = run(['tools/test.py', str(config), '/nonexistent/model.pth'], expect_ok=False)
    assert ("PreflightError: checkpoint to evaluate '/nonexistent/model.pth' not found. Pass "
            'the path of an existing checkpoint as CHECKPOINT.') in proc.stderr, proc.stderr
    proc = run(['tools/train.py', str(config), '--work-dir', str(tmp / 'no_resume'), '--resume',
                '/nonexistent/iter_8.pth'], expect_ok=False)
    assert ("PreflightError: resume checkpoint '/nonexistent/iter_8.pth' not found. Pass an "
            'existing checkpoint to --resume') in proc.stderr, proc.stderr
    assert 'load_from' not in proc.stderr.split('PreflightError')[-1]


def test_missing_checkpoints_fail_naming_the_config_key(seg):
    _, config = seg
    cfg = Config.fromfile(str(config))
    cfg.model.teacher.checkpoint = '/nonexistent/teacher.pth'
    with pytest.raises(PreflightError, match=r"model\.teacher\.checkpoint: checkpoint "
                       r"'/nonexistent/teacher\.pth' not found.*--cfg-options"):
        check_config(cfg, 'train')
    check_config(cfg, 'test')  # evaluation needs no teacher
    cfg.model.student.backbone.init_cfg = dict(type='Pretrained', checkpoint='/nonexistent/b.pth')
    with pytest.raises(PreflightError, match=r'model\.student\.backbone\.init_cfg\.checkpoint'):
        check_config(cfg, 'train')
    cfg.model.student.backbone.init_cfg = cfg.model.teacher = None
    cfg.load_from = '/nonexistent/run.pth'
    with pytest.raises(PreflightError, match=r"checkpoint to evaluate '/nonexistent/run\.pth' "
                       'not found.*as CHECKPOINT'):
        check_config(cfg, 'test')
    with pytest.raises(PreflightError, match=r"load_from checkpoint '/nonexistent/run\.pth'.*"
                       r'--cfg-options load_from=PATH'):
        check_config(cfg, 'train')
    cfg.resume = True
    with pytest.raises(PreflightError, match=r"resume checkpoint '/nonexistent/run\.pth' not "
                       'found.*--resume'):
        check_config(cfg, 'train')


def test_preflight_lists_every_problem_at_once():
    """The canonical config with its three files missing (data, backbone weights, teacher):
    one run names all three, each with its fix (the train and val datasets' shared data root
    once, with both keys)."""
    cfg = Config.fromfile(str(ROOT / 'configs/upernet_dvit_swin.py'))
    cfg.train_dataloader.dataset.data_root = cfg.val_dataloader.dataset.data_root = '/no/ade'
    cfg.model.student.backbone.init_cfg.checkpoint = '/no/swin.pth'
    cfg.model.teacher.checkpoint = '/no/teacher.pth'
    with pytest.raises(PreflightError) as err:
        check_config(cfg, 'train')
    problems = err.value.problems
    assert len(problems) == 3, problems
    assert problems[0].startswith('train_dataloader.dataset.data_root, val_dataloader.dataset.'
                                  "data_root: '/no/ade' does not exist: place ADE20K")
    assert problems[1].startswith("model.student.backbone.init_cfg.checkpoint: checkpoint "
                                  "'/no/swin.pth' not found.")
    assert problems[1].endswith('--cfg-options model.student.backbone.init_cfg.checkpoint=PATH '
                                '(or --cfg-options model.student.backbone.init_cfg=None to '
                                'start from random weights instead).')
    assert problems[2].startswith("model.teacher.checkpoint: checkpoint '/no/teacher.pth' not "
                                  'found.') and 'init_cfg=None' not in problems[2]
    assert str(err.value) == ('3 problems in the config, each with its fix:'
                              + ''.join(f'\n  {i}. {p}' for i, p in enumerate(problems, 1)))
    cfg.model.teacher.checkpoint = cfg.model.student.backbone.init_cfg = None
    with pytest.raises(PreflightError) as err:  # one problem: the message as it is
        check_config(cfg, 'train')
    assert err.value.problems == [str(err.value)]


def test_readme_swap_trained_names_the_init_cfg_key_of_the_inherited_url():
    """The README's inference-only swap inherits mmseg's Swin config, whose backbone init_cfg
    is a download URL: trained, the pre-flight names the key to set (or to set to None);
    evaluated, the full checkpoint replaces those weights and the URL is not a problem."""
    swap = readme_python_blocks('mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet')[0]
    cfg = Config.fromstring(swap, '.py')
    url = cfg.model.backbone.init_cfg.checkpoint
    assert url.startswith('https://download.openmmlab.com/')
    with pytest.raises(PreflightError) as err:
        check_config(cfg, 'train')
    assert len(err.value.problems) == 2  # the missing ADE20K and the URL
    assert err.value.problems[1] == (
        f"model.backbone.init_cfg.checkpoint: checkpoint '{url}' is a URL: mmdvit reads local "
        'checkpoints only and downloads nothing at run time (a downloaded checkpoint would be '
        'unpickled before any check). Download it yourself (compare its SHA-256 with the '
        'checksum its name carries, if any) and point the config at it with --cfg-options '
        'model.backbone.init_cfg.checkpoint=PATH (or --cfg-options model.backbone.init_cfg=None '
        'to start from random weights instead).')
    with pytest.raises(PreflightError) as err:
        check_config(cfg, 'test')
    assert not any('init_cfg' in p for p in err.value.problems)


def test_wrong_num_classes_fails_naming_head_and_counts(seg):
    _, config = seg
    cfg = Config.fromfile(str(config))
    cfg.model.student.decode_head.num_classes = 19
    with pytest.raises(PreflightError, match=r'model\.student\.decode_head\.num_classes = 19, '
                       r'but .* has 150 classes'):
        check_config(cfg, 'train')
    det = Config.fromfile(str(ROOT / 'configs/maskrcnn_dvit_swin.py'))
    det.model.student.roi_head.bbox_head.num_classes = 81
    det.model.student.backbone.init_cfg = det.model.teacher = None
    det.train_dataloader.dataset.data_root = det.val_dataloader.dataset.data_root = ''
    det.train_dataloader.dataset.ann_file = det.val_dataloader.dataset.ann_file = ''
    det.train_dataloader.dataset.data_prefix = det.val_dataloader.dataset.data_prefix = {}
    det.val_evaluator.ann_file = ''
    with pytest.raises(PreflightError, match=r'bbox_head\.num_classes = 81.*80 classes'):
        check_config(det, 'train')


# --------------------------------------------------------------------------- checkpoint safety
@pytest.mark.slow
def test_training_checkpoints_load_safely_and_were_written_atomically(seg_run):
    from mmdvit.models.checkpoint import load_checkpoint_file
    from mmdvit.models.checkpoint.prescan import ADMITTED
    work_dir, _ = seg_run
    path = str(work_dir / 'iter_16.pth')
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    assert {'mmengine.logging.history_buffer.HistoryBuffer', 'builtins.getattr'} <= needed
    assert needed <= set(ADMITTED)  # what torch alone refuses, mmdvit's narrow factories build
    checkpoint = load_checkpoint_file(path)
    assert checkpoint['meta']['iter'] == 16 and 'optimizer' in checkpoint
    assert 'mmdvit_atomic_local' in (work_dir / 'seg.py').read_text()  # the dumped config
    assert not [p for p in work_dir.iterdir() if p.name.startswith('.')]


def checkpoint_variants(seg, seg_run) -> Dict[str, Path]:
    """Checkpoints tools/test.py must refuse: a crafted pickle, an empty state dict, another
    backbone (ConvNeXt weights in the Swin config), a head of another shape."""
    from mmdvit.models import DynamicConvNeXt
    from mmdvit.models.checkpoint import load_checkpoint_file
    tmp, _ = seg
    state = load_checkpoint_file(str(seg_run[0] / 'iter_16.pth'))['state_dict']
    convnext = DynamicConvNeXt(arch=dict(depths=[1, 1, 3, 1], channels=[16, 32, 64, 128]),
                               pruning_locs=(0, 1, 2))
    other = {k: v for k, v in state.items() if not k.startswith('backbone.')}
    other.update({f'backbone.{k}': v for k, v in convnext.state_dict().items()})
    shaped = dict(state, **{'decode_head.conv_seg.weight': torch.zeros(19, 16, 1, 1)})
    variants = dict(payload={'state_dict': state, 'meta': {'x': Payload(tmp / 'MARKER')}},
                    empty={'state_dict': {}}, convnext={'state_dict': other},
                    shape={'state_dict': shaped})
    for name, checkpoint in variants.items():
        torch.save(checkpoint, tmp / f'{name}.pth')
    return {name: tmp / f'{name}.pth' for name in variants}


@pytest.mark.slow
def test_test_tool_refuses_unsafe_and_mismatched_checkpoints(seg, seg_run):
    tmp, config = seg
    expected = {
        'payload': r"refusing to load the checkpoint to evaluate '.*payload\.pth': it needs "
                   r'posix\.system.*MMDVIT_TRUST_CHECKPOINTS=1',
        'empty': r"checkpoint to evaluate '.*empty\.pth' does not fit SparsityTrainer: the "
                 r'checkpoint holds no tensors; \d+ of the 229 model tensors are missing',
        'convnext': r'does not fit SparsityTrainer: its backbone looks like convnext; \d+ of '
                    r'the 229 model tensors are missing from it: backbone\.patch_embed',
        'shape': r'1 model tensors have another shape in it: decode_head\.conv_seg\.weight: '
                 r'checkpoint \(19, 16, 1, 1\) vs model \(150, 16, 1, 1\)',
    }
    for name, path in checkpoint_variants(seg, seg_run).items():
        proc = run(['tools/test.py', str(config), str(path), '--work-dir', str(tmp / 'refused')],
                   expect_ok=False)
        assert proc.returncode != 0 and 'metrics:' not in proc.stdout, name
        assert re.search(expected[name], proc.stderr), (name, proc.stderr[-2000:])
    assert not (tmp / 'MARKER').exists()


@pytest.mark.slow
def test_resume_refuses_a_crafted_checkpoint_and_trusted_files_evaluate(seg, seg_run):
    tmp, config = seg
    work_dir, _ = seg_run
    payload = tmp / 'resume_payload.pth'
    torch.save({'meta': {'x': Payload(tmp / 'MARKER_RESUME')}}, payload)
    proc = run(['tools/train.py', str(config), '--work-dir', str(tmp / 'resume_refused'),
                '--resume', str(payload)], expect_ok=False)
    assert proc.returncode != 0
    assert re.search(r"refusing to load the resume checkpoint '.*resume_payload\.pth': it needs "
                     r'posix\.system', proc.stderr), proc.stderr[-2000:]
    assert not (tmp / 'MARKER_RESUME').exists()
    # A file that needs a (harmless) global outside the allowlist loads with the opt-in; a
    # config stored in it is still never evaluated.
    from mmdvit.models.checkpoint import load_checkpoint_file
    checkpoint = load_checkpoint_file(str(work_dir / 'iter_16.pth'))
    checkpoint['meta'].update(where=Path('/somewhere'), config=config_payload(tmp / 'MARKER_CFG'))
    trusted = tmp / 'trusted.pth'
    torch.save(checkpoint, trusted)
    proc = run(['tools/test.py', str(config), str(trusted), '--work-dir', str(tmp / 'trusted'),
                '--trust-checkpoint'])
    log = proc.stdout + proc.stderr
    assert f"loading checkpoint to evaluate '{trusted}' with full unpickling" in log
    assert f"checkpoint to evaluate '{trusted}': removed meta['config']" in log
    assert 0 <= metrics(proc)['mIoU'] <= 100 and not (tmp / 'MARKER_CFG').exists()


def stored_config_checkpoint(seg_run, path: Path, marker: Path) -> Path:
    """iter_8.pth of the run with ``meta['config']`` set to Python source that creates
    ``marker`` (mmengine's Runner.resume evaluates that key)."""
    checkpoint = torch.load(seg_run[0] / 'iter_8.pth', weights_only=False)
    checkpoint['meta']['config'] = config_payload(marker)
    torch.save(checkpoint, path)
    return path


@pytest.mark.slow
def test_resume_auto_resume_and_load_from_never_evaluate_a_stored_config(seg, seg_run):
    tmp, config = seg
    marker = tmp / 'MARKER_STORED_CONFIG'
    payload = stored_config_checkpoint(seg_run, tmp / 'stored_config.pth', marker)
    auto = tmp / 'auto_stored_config'
    auto.mkdir()
    shutil.copy(payload, auto / 'iter_8.pth')
    (auto / 'last_checkpoint').write_text(str(auto / 'iter_8.pth'))
    one_more = ['--cfg-options', 'train_cfg.max_iters=9', 'train_cfg.val_interval=100']
    runs = {
        'resume': (['--work-dir', str(tmp / 'resume_stored_config'), '--resume', str(payload)],
                   payload, 'resume checkpoint', 'Iter(train) [9/9]'),
        'auto-resume': (['--work-dir', str(auto), '--resume'], auto / 'iter_8.pth',
                        'resume checkpoint', 'Iter(train) [9/9]'),
        'load_from': (['--work-dir', str(tmp / 'load_stored_config'), '--cfg-options',
                       f'load_from={payload}', 'train_cfg.max_iters=1'], payload,
                      'load_from checkpoint', 'Iter(train) [1/1]'),
    }
    for name, (args, path, role, progress) in runs.items():
        cfg_args = one_more if name != 'load_from' else ['train_cfg.val_interval=100']
        proc = run(['tools/train.py', str(config)] + args + cfg_args)
        log = proc.stdout + proc.stderr
        assert f"{role} '{path}': removed meta['config']" in log, (name, log[-3000:])
        assert progress in log and 'Training done' in proc.stdout, name
        assert not marker.exists(), name


@pytest.mark.slow
def test_url_checkpoints_are_never_fetched_by_the_tools(seg, monkeypatch):
    """tools/test.py CHECKPOINT, --resume and load_from URLs stop in the pre-flight naming the
    argument or key; a URL an automatic resume finds in last_checkpoint stops in the reader.
    The server (127.0.0.1) serves a pickle that would run a payload: it sees no request."""
    tmp, config = seg
    served, marker = tmp / 'served', tmp / 'MARKER_URL'
    served.mkdir()
    torch.save({'state_dict': {}, 'meta': {'x': Payload(marker)}}, served / 'iter_8.pth')
    with serve_folder(served) as (base, requests):
        url = f'{base}/iter_8.pth'
        with pytest.raises(PreflightError, match=f"checkpoint to evaluate '{url}' is a URL.*as "
                           'CHECKPOINT'):
            load_tool(str(ROOT / 'tools' / 'test.py')).main([str(config), url])
        train = load_tool(str(ROOT / 'tools' / 'train.py'))
        for args, message in [(['--resume', url], f"resume checkpoint '{url}' is a URL.*--resume"),
                              (['--cfg-options', f'load_from={url}'],
                               f"load_from checkpoint '{url}' is a URL.*load_from=PATH")]:
            monkeypatch.setattr(sys, 'argv', ['train.py', str(config)] + args)
            with pytest.raises(PreflightError, match=message):
                train.main()
        auto = tmp / 'auto_url'
        auto.mkdir()
        (auto / 'last_checkpoint').write_text(url)
        proc = run(['tools/train.py', str(config), '--work-dir', str(auto), '--resume'],
                   expect_ok=False)
        assert proc.returncode != 0
        assert f"CheckpointError: resume checkpoint '{url}' is a URL" in proc.stderr, (
            proc.stderr[-3000:])
        assert requests == []
    assert not marker.exists()
