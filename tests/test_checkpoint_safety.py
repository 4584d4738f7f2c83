"""Checkpoint files are read safely (a crafted pickle never runs, URLs are never fetched, a
config stored in a checkpoint is never evaluated), errors name the file and its role, the opt-in
loads trusted files (per file), strict loading refuses checkpoints that do not fit, and every
write is atomic (converter, training checkpoints). Hostile calls of the admitted globals and
oversized files: tests/test_checkpoint_adversarial.py."""
import collections
import copy
import errno
import logging
import os
import pathlib
import re
import subprocess
import sys
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import Payload, config_payload, serve_folder
from mmengine.config import Config, ConfigDict
from mmengine.logging import HistoryBuffer, MessageHub, MMLogger
from mmengine.model import BaseModel
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from test_converters import converter_tool
from test_flops import GET_FLOPS, load_tool, run_tool
from test_sparsity_trainer import build_trainer, seg_student
from test_visualize import VISUALIZE, write_image
from torch import nn

from mmdvit.engine.atomic_checkpoint import BACKEND_NAME, use_atomic_checkpoints
from mmdvit.engine.checkpoint_loader import configure_checkpoints, use_safe_loader
from mmdvit.engine.hooks import CheckpointMismatchError, StrictLoadHook
from mmdvit.engine.preflight import PreflightError, check_checkpoints
from mmdvit.models import DynamicConvNeXt, DynamicSwinTransformer
from mmdvit.models.checkpoint import (TRUST_ENV, CheckpointError, UnsafeCheckpointError,
                                      load_checkpoint_file, load_pretrained,
                                      save_checkpoint_file, write_atomic)
from mmdvit.models.checkpoint.swin import convert_swin_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_SWIN = dict(embed_dims=32, depths=(1, 1, 4, 1), num_heads=(1, 2, 4, 8),
                 pruning_locs=(0, 1, 2))


def craft(path: pathlib.Path, marker: pathlib.Path, state: dict = None) -> pathlib.Path:
    """A checkpoint that looks like a Runner checkpoint and carries a payload."""
    torch.save({'state_dict': state or {}, 'meta': {'note': Payload(marker)}}, path)
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / 'MARKER'
    yield craft(tmp_path / 'evil.pth', marker), marker
    assert not marker.exists(), 'the crafted pickle ran its payload'


@pytest.fixture(autouse=True)
def _no_trust(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)


def refused(path) -> str:
    return rf"refusing to load the .*'{path}': it needs posix\.system.*{TRUST_ENV}=1"


def with_config_source(path: pathlib.Path, marker: pathlib.Path,
                       state: dict = None) -> pathlib.Path:
    """A checkpoint whose meta['config'] is Python source that creates ``marker``."""
    torch.save({'state_dict': state or {}, 'meta': {'config': config_payload(marker)}}, path)
    return path


@pytest.fixture
def config_code(tmp_path):
    marker = tmp_path / 'CONFIG_RAN'
    yield with_config_source(tmp_path / 'config_code.pth', marker), marker
    assert not marker.exists(), "meta['config'] was evaluated"


# --------------------------------------------------------------------------- the reader
def test_reader_refuses_the_payload_and_names_file_role_global_and_opt_in(evil):
    path, _ = evil
    with pytest.raises(UnsafeCheckpointError, match=refused(path)) as info:
        load_checkpoint_file(str(path), 'teacher checkpoint')
    assert 'teacher checkpoint' in str(info.value)


def test_the_payload_runs_when_trusted(tmp_path):
    """The crafted file is real: full unpickling runs it (so the refusals above matter)."""
    marker = tmp_path / 'RAN'
    load_checkpoint_file(str(craft(tmp_path / 'payload.pth', marker)), trust=True)
    assert marker.exists()


def test_opt_in_loads_a_trusted_file(tmp_path, monkeypatch):
    path = tmp_path / 'trusted.pth'
    root = pathlib.PurePosixPath('/a')  # harmless, but not in the allowlist
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {'root': root}}, path)
    with pytest.raises(UnsafeCheckpointError, match='pathlib.PurePosixPath'):
        load_checkpoint_file(str(path))
    assert load_checkpoint_file(str(path), trust=True)['meta']['root'] == root
    monkeypatch.setenv(TRUST_ENV, '1')
    assert torch.equal(load_checkpoint_file(str(path))['state_dict']['w'], torch.ones(2))


def test_the_environment_can_trust_listed_files_only(tmp_path, monkeypatch):
    paths = [tmp_path / f'{name}.pth' for name in ('listed', 'other')]
    for path in paths:
        torch.save({'meta': {'root': pathlib.PurePosixPath('/a')}}, path)
    monkeypatch.setenv(TRUST_ENV, f'/nonexistent.pth{os.pathsep}{tmp_path}/./listed.pth')
    assert load_checkpoint_file(str(paths[0]))['meta']['root'] == pathlib.PurePosixPath('/a')
    with pytest.raises(UnsafeCheckpointError, match=r"'.*other\.pth': it needs pathlib"):
        load_checkpoint_file(str(paths[1]))
    assert load_checkpoint_file(str(paths[1]), trust=True)  # the caller's own opt-in


def test_refusals_name_every_unsafe_global(tmp_path):
    path = tmp_path / 'two.pth'
    torch.save({'a': Payload(tmp_path / 'MARKER'), 'b': pathlib.PurePosixPath('/a')}, path)
    with pytest.raises(UnsafeCheckpointError, match=r'it needs posix\.system, '
                       r'pathlib\.PurePosixPath, which mmdvit does not load'):
        load_checkpoint_file(str(path))
    assert not (tmp_path / 'MARKER').exists()


def test_trusted_files_that_need_a_missing_module_or_class_say_so(tmp_path, monkeypatch):
    """Under trust, an ImportError / AttributeError is what it is, not 'truncated or
    corrupt'."""
    (tmp_path / 'mmdvit_gone_module.py').write_text('class Thing:\n    pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    import mmdvit_gone_module
    path = tmp_path / 'needs_module.pth'
    torch.save({'meta': {'thing': mmdvit_gone_module.Thing()}}, path)
    del mmdvit_gone_module.Thing
    with pytest.raises(CheckpointError, match=r"trusted converter source '.*needs_module\.pth': "
                       r'unpickling it needs a module or class that is not available here '
                       r"\(AttributeError: Can't get attribute 'Thing'"):
        load_checkpoint_file(str(path), 'converter source', trust=True)
    (tmp_path / 'mmdvit_gone_module.py').unlink()
    monkeypatch.delitem(sys.modules, 'mmdvit_gone_module')
    with pytest.raises(CheckpointError, match=r'\(ModuleNotFoundError: No module named '
                       r"'mmdvit_gone_module'\)"):
        load_checkpoint_file(str(path), 'converter source', trust=True)


def runner_like_checkpoint(path: pathlib.Path) -> dict:
    """What an mmengine Runner checkpoint holds besides tensors: message-hub history buffers,
    numpy scalars / arrays of several dtypes (one big-endian, one Fortran-ordered)."""
    hub = MessageHub.get_instance('mmdvit-test-checkpoint')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('val/mIoU', np.float32(40.0))
    hub.update_info('count', np.int64(3))
    checkpoint = {'meta': {'epoch': 1, 'dataset_meta': {'classes': ('a', 'b')}},
                  'state_dict': {'w': torch.ones(3)}, 'message_hub': hub.state_dict(),
                  'extra': {'mask': np.array([True, False]), 'ids': np.arange(3, dtype=np.int32),
                            'big': np.arange(4, dtype='>f4'), 'scalar': np.float16(0.5),
                            'fortran': np.asfortranarray(np.arange(6.0).reshape(2, 3))}}
    torch.save(checkpoint, path)
    return checkpoint


def assert_same(a, b, where: str = 'checkpoint') -> None:
    """``a`` and ``b`` hold the same values of the same types (numpy dtypes included)."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f'{where}[{key!r}]')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.dtype.str == b.dtype.str and a.shape == b.shape, where
        assert np.array_equal(a, b), where
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a == b, where
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, HistoryBuffer):
        assert_same(vars(a), vars(b), f'{where}.__dict__')
    else:
        assert a == b, where


@pytest.fixture
def runner_checkpoint(tmp_path) -> pathlib.Path:
    """A checkpoint written by an mmengine Runner (AdamW, the message hub, and the schedulers of
    mmdet's configs: a linear warm-up and ``MultiStepLR``, whose state holds a ``Counter``)."""
    runner = Runner(
        model=ToyModel(), work_dir=str(tmp_path / 'run'), experiment_name='safety',
        train_dataloader=dict(dataset=[dict(inputs=torch.randn(2)) for _ in range(4)],
                              batch_size=2, sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2),
                         dict(type='MultiStepLR', milestones=[1], by_epoch=False, end=2)],
        train_cfg=dict(by_epoch=False, max_iters=2), default_scope='mmengine',
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)))
    runner.train()
    return tmp_path / 'run' / 'iter_2.pth'


def as_numpy_1(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    """``src`` with the numpy names numpy 1.x writes (``numpy.core`` for ``numpy._core``)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w') as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith('data.pkl'):
                assert b'numpy._core.multiarray' in data
                data = data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
            zout.writestr(info, data)
    return dst


def test_runner_checkpoints_load_without_opt_in_as_full_unpickling_does(tmp_path,
                                                                         runner_checkpoint):
    """A Runner's own file and a Runner-like file with every numpy kind, as written by numpy 2
    and as numpy 1.x names them, load equal to a full unpickling."""
    runner_like = tmp_path / 'runner_like.pth'
    runner_like_checkpoint(runner_like)
    for path in (runner_checkpoint, runner_like):
        full = torch.load(path, weights_only=False)
        assert_same(load_checkpoint_file(str(path)), full)
        old = as_numpy_1(path, path.with_suffix('.np1.pth'))
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(old))
        assert 'numpy.core.multiarray._reconstruct' in unsafe  # torch alone refuses it
        assert_same(load_checkpoint_file(str(old)), full)
    schedulers = load_checkpoint_file(str(runner_checkpoint))['param_schedulers']
    assert schedulers[1]['milestones'] == collections.Counter({1: 1})
    loaded = load_checkpoint_file(str(runner_like))
    assert loaded['message_hub']['log_scalars']['val/mIoU'].mean() == 40.0
    assert loaded['extra']['big'].tolist() == [0, 1, 2, 3]
    assert loaded['extra']['fortran'].flags.f_contiguous
    copy.deepcopy(loaded)


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    class Attr:

        def __reduce__(self):
            return getattr, (np.ndarray, 'tofile')

    path = tmp_path / 'getattr.pth'
    torch.save({'x': Attr()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"getattr\(numpy\.ndarray, 'tofile'\)"):
        load_checkpoint_file(str(path))


@pytest.mark.parametrize('content, reason', [
    (b'', 'the file is empty'),
    (b'not a checkpoint at all', 'not a PyTorch zip checkpoint'),
    ('truncated', 'a damaged zip: File is not a zip file'),
    ('legacy', "PyTorch's legacy format .* load it with the trust opt-in and re-save it"),
])
def test_corrupt_files_are_named_with_their_role(tmp_path, content, reason):
    path = tmp_path / 'bad.pth'
    if content in ('truncated', 'legacy'):
        torch.save({'w': torch.zeros(1000)}, path, _use_new_zipfile_serialization=False
                   if content == 'legacy' else True)
        content = path.read_bytes()[:300 if content == 'truncated' else None]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"cannot read the resume checkpoint '{path}' "
                       rf'\({reason}.*\)\. The file is truncated or corrupt'):
        load_checkpoint_file(str(path), 'resume checkpoint')


def test_missing_file_and_urls_name_the_role(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint to evaluate '.*nope\.pth' not found"):
        load_checkpoint_file(str(tmp_path / 'nope.pth'), 'checkpoint to evaluate')
    with pytest.raises(CheckpointError, match="teacher checkpoint 'https://example.com/x.pth' is "
                       'a URL: mmdvit reads local files only and downloads nothing at run time'):
        load_checkpoint_file('https://example.com/x.pth', 'teacher checkpoint')


# --------------------------------------------------------------------------- entry points
def test_backbone_init_cfg_refuses_the_payload(evil):
    path, _ = evil
    model = DynamicSwinTransformer(**TINY_SWIN, init_cfg=dict(type='Pretrained',
                                                              checkpoint=str(path)))
    with pytest.raises(UnsafeCheckpointError, match=refused(path)):
        model.init_weights()


def test_teacher_checkpoint_refuses_the_payload(evil):
    path, _ = evil
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    trainer = MODELS.build(dict(type='mmdvit.SparsityTrainer', student=seg_student(),
                                teacher=dict(checkpoint=str(path))))
    with pytest.raises(UnsafeCheckpointError, match='refusing to load the teacher checkpoint'):
        trainer.build_teacher()


def test_teacher_load_is_logged_as_the_teacher(tmp_path):
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    trainer, _ = build_trainer(MODELS, tmp_path)
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        trainer.build_teacher()
    finally:
        logger.removeHandler(handler)
    assert any(line.startswith('teacher checkpoint: EncoderDecoder loaded') for line in records)


def test_converter_refuses_the_payload(evil, tmp_path):
    path, _ = evil
    with pytest.raises(UnsafeCheckpointError, match='converter source'):
        converter_tool().main([str(path), str(tmp_path / 'out.pth')])
    assert not (tmp_path / 'out.pth').exists()


def test_analysis_tools_refuse_the_payload(evil, tmp_path):
    path, _ = evil
    with pytest.raises(UnsafeCheckpointError, match=refused(path)):
        run_tool(GET_FLOPS, ['swin-test', '--shape', '64', '--checkpoint', str(path)])
    image = write_image(tmp_path / 'img.png', 64, 64)
    with pytest.raises(UnsafeCheckpointError, match='refusing to load the model checkpoint'):
        run_tool(VISUALIZE, ['swin-test', str(path), image, '--out-dir', str(tmp_path / 'vis')])


@pytest.fixture
def served(tmp_path):
    """A checkpoint that runs a payload when unpickled, served on 127.0.0.1; yields its URL and
    the requests the server saw (the test asserts there were none)."""
    folder, marker = tmp_path / 'served', tmp_path / 'FETCHED_AND_RAN'
    folder.mkdir()
    craft(folder / 'evil.pth', marker)
    with serve_folder(folder) as (base, requests):
        yield f'{base}/evil.pth', requests
    assert not marker.exists() and requests == []


def test_converter_and_analysis_tools_refuse_urls_and_never_evaluate_a_config(
        served, config_code, tmp_path):
    url, _ = served
    with pytest.raises(CheckpointError, match=f"converter source '{url}' is a URL"):
        converter_tool().main([url, str(tmp_path / 'out.pth')])
    with pytest.raises(CheckpointError, match=f"model checkpoint '{url}' is a URL"):
        run_tool(GET_FLOPS, ['swin-test', '--shape', '64', '--checkpoint', url])
    image = write_image(tmp_path / 'img.png', 64, 64)
    with pytest.raises(CheckpointError, match=f"model checkpoint '{url}' is a URL"):
        run_tool(VISUALIZE, ['swin-test', url, image, '--out-dir', str(tmp_path / 'vis')])
    # meta['config'] is read as data only (the fixture checks that its marker never appears)
    path, marker = config_code
    with pytest.raises(ValueError, match='shares no key with the model'):  # read, empty
        run_tool(GET_FLOPS, ['swin-test', '--shape', '64', '--checkpoint', str(path)])
    source = with_config_source(tmp_path / 'swin_config_code.pth', marker,
                                DynamicSwinTransformer(**TINY_SWIN).state_dict())
    converter_tool().main([str(source), str(tmp_path / 'converted.pth')])
    assert 'config' not in load_checkpoint_file(str(tmp_path / 'converted.pth'))['meta']


def test_analysis_tools_trust_only_their_checkpoint(tmp_path):
    path = tmp_path / 'needs_trust.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': {'root': pathlib.PurePosixPath('/')}},
               path)
    argv = ['swin-test', '--shape', '64', '--checkpoint', str(path)]
    with pytest.raises(UnsafeCheckpointError, match='it needs pathlib.PurePosixPath'):
        run_tool(GET_FLOPS, argv)
    with pytest.raises(ValueError, match='shares no key with the model'):  # loaded
        run_tool(GET_FLOPS, argv + ['--trust-checkpoint'])
    assert TRUST_ENV not in os.environ


@pytest.fixture
def mmengine_loaders():
    """Restores mmengine's checkpoint loaders after a test registers mmdvit's."""
    from mmengine.runner import CheckpointLoader
    previous = CheckpointLoader._schemes.copy()
    yield CheckpointLoader
    CheckpointLoader._schemes = previous


def test_mmengine_loads_through_the_safe_reader_with_roles(evil, mmengine_loaders):
    """``load_from`` / ``--resume`` / upstream ``init_cfg`` reads: mmengine's local loader."""
    from mmengine.runner import load_checkpoint
    path, _ = evil
    use_safe_loader({str(path): 'load_from checkpoint'}, default_role='resume checkpoint')
    with pytest.raises(UnsafeCheckpointError, match="the load_from checkpoint '"):
        load_checkpoint(nn.Linear(2, 2), str(path))
    other = craft(path.parent / 'other.pth', path.parent / 'MARKER')
    with pytest.raises(UnsafeCheckpointError, match="the resume checkpoint '"):
        load_checkpoint(nn.Linear(2, 2), str(other))


def test_mmengine_refuses_urls_of_every_scheme_without_fetching(served, mmengine_loaders):
    """mmengine would download these (http(s) from the test's server) and unpickle them fully;
    mmdvit's reader, registered for every scheme, refuses them naming the role."""
    from mmengine.runner import load_checkpoint
    url, requests = served
    use_safe_loader({url: 'model.backbone.init_cfg.checkpoint'}, default_role='resume checkpoint')
    with pytest.raises(CheckpointError, match=f"model.backbone.init_cfg.checkpoint '{url}' is a "
                       'URL: mmdvit reads local files only'):
        load_checkpoint(nn.Linear(2, 2), url)
    for other in ('https://127.0.0.1:1/x.pth', 'open-mmlab://resnet50_v1c', 'openmmlab://x',
                  'torchvision://resnet50', 'modelzoo://x', 'mmcls://x', 'pavi://x',
                  's3://bucket/x.pth', 'petrel://x', 'ftp://127.0.0.1/x.pth', url + '?v=2'):
        with pytest.raises(CheckpointError, match=f"resume checkpoint '{re.escape(other)}' is a "
                           'URL'):
            mmengine_loaders.load_checkpoint(other)
    assert requests == []


def test_mmengine_never_sees_a_config_stored_in_a_checkpoint(tmp_path, config_code,
                                                             runner_checkpoint,
                                                             mmengine_loaders):
    """Runner.resume evaluates meta['config'] as Python source: the reader removes it, with a
    warning naming it, and the resume works."""
    from mmengine.config import Config as MMConfig
    live = tmp_path / 'LIVE'
    MMConfig.fromstring(config_payload(live), file_format='.py')
    assert live.exists()  # the payload is real: evaluating it runs it
    path, marker = config_code
    checkpoint = torch.load(runner_checkpoint, weights_only=False)
    checkpoint['meta']['config'] = config_payload(marker)
    torch.save(checkpoint, path)
    use_safe_loader({str(path): 'resume checkpoint'})
    runner = Runner(
        model=ToyModel(), work_dir=str(tmp_path / 'resumed'), experiment_name='resume',
        train_dataloader=dict(dataset=[dict(inputs=torch.randn(2)) for _ in range(4)],
                              batch_size=2, sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=3), default_scope='mmengine')
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    MMLogger.get_current_instance().addHandler(handler)
    try:
        runner.resume(str(path))
    finally:
        MMLogger.get_current_instance().removeHandler(handler)
    assert runner.iter == 2 and not marker.exists()
    assert any(f"resume checkpoint '{path}': removed meta['config']" in r for r in records)


def test_trust_checkpoint_trusts_the_run_checkpoint_only(tmp_path, mmengine_loaders):
    """tools' --trust-checkpoint: the evaluated / resumed file, not a teacher or init_cfg
    file, nor an automatic resume's other files."""
    paths = {name: tmp_path / f'{name}.pth' for name in ('run', 'teacher', 'latest')}
    for path in paths.values():
        torch.save({'meta': {'root': pathlib.PurePosixPath('/')}}, path)
    cfg = Config(dict(load_from=str(paths['run']), resume=False, work_dir=str(tmp_path),
                      model=dict(teacher=dict(checkpoint=str(paths['teacher'])))))
    configure_checkpoints(cfg, 'test', trust_run_checkpoint=True)
    assert mmengine_loaders.load_checkpoint(str(paths['run']))['meta']['root']
    with pytest.raises(UnsafeCheckpointError, match="model.teacher.checkpoint '.*teacher"):
        mmengine_loaders.load_checkpoint(str(paths['teacher']))
    configure_checkpoints(cfg, 'test')
    with pytest.raises(UnsafeCheckpointError, match="checkpoint to evaluate '.*run"):
        mmengine_loaders.load_checkpoint(str(paths['run']))
    # automatic resume: the latest checkpoint of the work dir, which mmengine picks
    (tmp_path / 'last_checkpoint').write_text(str(paths['latest']))
    cfg.load_from, cfg.resume = None, True
    configure_checkpoints(cfg, 'train', trust_run_checkpoint=True)
    assert mmengine_loaders.load_checkpoint(str(paths['latest']))['meta']['root']
    with pytest.raises(UnsafeCheckpointError, match="resume checkpoint '.*run"):
        mmengine_loaders.load_checkpoint(str(paths['run']))
    assert TRUST_ENV not in os.environ


def test_train_trust_checkpoint_needs_a_checkpoint_to_start_from(monkeypatch):
    config = ROOT / 'configs' / 'demo' / 'upernet_swin_dense_demo.py'
    monkeypatch.setattr(sys, 'argv', ['train.py', str(config), '--trust-checkpoint'])
    with pytest.raises(SystemExit, match=r'--trust-checkpoint trusts the checkpoint the run '
                       rf'starts from \(--resume or load_from\).*{TRUST_ENV}=FILE'):
        load_tool(str(ROOT / 'tools' / 'train.py')).main()


def test_configure_checkpoints_sets_roles_strictness_and_atomic_writes(tmp_path,
                                                                      mmengine_loaders):
    cfg = Config(dict(load_from=str(tmp_path / 'run.pth'), resume=True, model=dict(),
                      default_hooks=dict(checkpoint=dict(type='CheckpointHook')),
                      custom_hooks=[dict(type='mmdvit.StrictLoadHook', role='stale'),
                                    dict(type='mmdvit.FreezePretrainedHook', iters=1)]))
    configure_checkpoints(cfg, 'train')
    assert cfg.custom_hooks == [
        dict(type='mmdvit.FreezePretrainedHook', iters=1),
        dict(type='mmdvit.StrictLoadHook', role='resume checkpoint',
             checkpoint=str(tmp_path / 'run.pth'))]
    assert cfg.default_hooks.checkpoint.backend_args == dict(backend=BACKEND_NAME)
    with pytest.raises(FileNotFoundError, match=r"^resume checkpoint '.*run\.pth' not found"):
        mmengine_loaders.load_checkpoint(str(tmp_path / 'run.pth'))
    configure_checkpoints(cfg, 'test', allow_missing_keys=True)
    assert cfg.custom_hooks == [dict(type='mmdvit.FreezePretrainedHook', iters=1)]
    with pytest.raises(FileNotFoundError, match=r'^checkpoint to evaluate'):
        mmengine_loaders.load_checkpoint(str(tmp_path / 'run.pth'))


@pytest.mark.parametrize('key, mode, message', [
    ('load_from', 'train', r"load_from checkpoint '{url}' is a URL.*--cfg-options load_from=PATH"),
    ('load_from', 'test', r"checkpoint to evaluate '{url}' is a URL.*as CHECKPOINT"),
    ('resume', 'train', r"resume checkpoint '{url}' is a URL.*to --resume"),
    ('init_cfg', 'train', r"model\.backbone\.init_cfg\.checkpoint: checkpoint '{url}' is a URL.*"
                          r'--cfg-options model\.backbone\.init_cfg\.checkpoint=PATH'),
])
def test_preflight_refuses_urls_naming_the_key(key, mode, message):
    url = 'https://download.openmmlab.com/x-1cdeb081.pth'
    cfg = Config(dict(model=dict(backbone=dict()), load_from=None, resume=False))
    if key == 'init_cfg':
        cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=url)
    else:
        cfg.load_from, cfg.resume = url, key == 'resume'
    with pytest.raises(PreflightError, match=message.format(url=re.escape(url))) as info:
        check_checkpoints(cfg, mode)
    assert 'compare its SHA-256 with the checksum its name carries' in str(info.value)


def test_importing_mmdvit_changes_nothing_in_mmengine():
    code = ('from mmengine.runner import CheckpointLoader; from mmengine.runner.checkpoint import '
            'load_from_local; import mmdvit.models, mmdvit.engine.checkpoint_loader, '
            'mmdvit.engine.atomic_checkpoint, mmdvit.engine.hooks; '
            "assert CheckpointLoader._schemes[''] is load_from_local")
    subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT,
                   env=dict(os.environ, PYTHONWARNINGS='ignore'))


# --------------------------------------------------------------------------- strict loading
def test_init_cfg_refuses_a_checkpoint_of_another_family(tmp_path):
    """ConvNeXt weights in a Swin init_cfg (the norms and predictors would match): refused
    naming the layout / family detected."""
    path = tmp_path / 'convnext.pth'
    convnext = DynamicConvNeXt(arch=dict(depths=[1, 1, 4, 1], channels=[32, 64, 128, 256]),
                               pruning_locs=(0, 1, 2), out_indices=(0, 1, 2, 3))
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in convnext.state_dict().items()}},
               path)
    model = DynamicSwinTransformer(**TINY_SWIN, init_cfg=dict(type='Pretrained',
                                                              checkpoint=str(path)))
    with pytest.raises(ValueError, match=rf"backbone init_cfg checkpoint '{path}', looks like a "
                       'ConvNeXt checkpoint: unrecognised Swin checkpoint'):
        model.init_weights()


def test_init_cfg_refuses_a_checkpoint_that_only_fills_new_modules(tmp_path):
    model = DynamicSwinTransformer(**TINY_SWIN)
    only_new = {k: v for k, v in model.state_dict().items() if 'score_predictors' in k}
    only_new['stages.0.blocks.0.unrelated.weight'] = torch.zeros(1)
    path = tmp_path / 'predictors.pth'
    torch.save(only_new, path)
    with pytest.raises(ValueError, match=r"'.*predictors\.pth' \(mmseg layout\) fits none of the "
                       r'dense tensors of DynamicSwinTransformer \(only \d+ tensors of the new'):
        load_pretrained(model, str(path), convert_swin_checkpoint)


def strict_hook_runner(model: nn.Module) -> SimpleNamespace:
    return SimpleNamespace(model=model)


def test_strict_hook_refuses_missing_and_misshaped_tensors_and_loads_what_it_checked():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    hook = StrictLoadHook(role='checkpoint to evaluate', checkpoint='ck.pth')
    runner = strict_hook_runner(model)
    with pytest.raises(CheckpointMismatchError, match=r"checkpoint to evaluate 'ck\.pth' does not "
                       r'fit Sequential: the checkpoint holds no tensors; 4 of the 4 model '
                       r'tensors are missing.*--allow-missing-keys'):
        hook.after_load_checkpoint(runner, {'state_dict': {}})
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state['1.weight'] = torch.zeros(2, 3)
    with pytest.raises(CheckpointMismatchError, match=r"1 model tensors have another shape in it: "
                       r'1\.weight: checkpoint \(2, 3\) vs model \(1, 3\)'):
        hook.after_load_checkpoint(runner, {'state_dict': state})
    full = {f'module.{k}': v for k, v in model.state_dict().items()}  # DDP-saved, 'model'-wrapped
    checkpoint = {'model': full}
    hook.after_load_checkpoint(runner, checkpoint)
    assert checkpoint['state_dict'].keys() == model.state_dict().keys()


def test_strict_hook_names_the_backbone_family_of_a_wrong_checkpoint():
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    model = MODELS.build(seg_student())
    convnext = DynamicConvNeXt(arch=dict(depths=[1, 1, 4, 1], channels=[16, 32, 64, 128]),
                               pruning_locs=(0, 1, 2))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('backbone.')}
    state.update({f'backbone.{k}': v for k, v in convnext.state_dict().items()})
    with pytest.raises(CheckpointMismatchError, match='its backbone looks like convnext'):
        StrictLoadHook().after_load_checkpoint(strict_hook_runner(model), {'state_dict': state})


# --------------------------------------------------------------------------- atomic writes
def test_converter_refuses_src_as_dst_and_an_existing_dst(tmp_path, capsys):
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.pth'
    torch.save({'state_dict': DynamicSwinTransformer(**TINY_SWIN).state_dict()}, src)
    before = src.read_bytes()
    for argv, message in [([src, src], 'is SRC'), ([src, tmp_path / '.' / 'src.pth'], 'is SRC')]:
        with pytest.raises(SystemExit) as info:
            converter_tool().main([str(a) for a in argv])
        assert info.value.code != 0 and message in capsys.readouterr().err
    assert src.read_bytes() == before
    dst.write_bytes(b'keep me')
    with pytest.raises(SystemExit):
        converter_tool().main([str(src), str(dst)])
    assert 'exists: pass --force' in capsys.readouterr().err and dst.read_bytes() == b'keep me'
    converter_tool().main([str(src), str(dst), '--force'])
    assert load_checkpoint_file(str(dst))['meta']['layout'] == 'mmseg'


def test_failed_converter_write_leaves_the_old_dst(tmp_path, monkeypatch):
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.pth'
    torch.save(DynamicSwinTransformer(**TINY_SWIN).state_dict(), src)
    dst.write_bytes(b'previous good file')
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # some bytes reach the file, then the disk is full
        f.truncate(100)
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(torch, 'save', disk_full)
    with pytest.raises(OSError, match='No space left'):
        converter_tool().main([str(src), str(dst), '--force'])
    assert dst.read_bytes() == b'previous good file'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['dst.pth', 'src.pth']


def test_write_atomic_keeps_permissions_and_replaces_completely(tmp_path):
    path = tmp_path / 'sub' / 'file.bin'
    write_atomic(str(path), lambda f: f.write(b'one'))
    os.chmod(path, 0o640)
    save_checkpoint_file({'w': torch.ones(1)}, str(path))
    assert path.stat().st_mode & 0o777 == 0o640
    assert torch.equal(load_checkpoint_file(str(path))['w'], torch.ones(1))
    assert [p.name for p in path.parent.iterdir()] == ['file.bin']


class ToyModel(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


class TornWrite:
    """A file whose write puts half the bytes on disk and then fails (a full disk, a kill)."""

    def __init__(self, f) -> None:
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def write(self, data: bytes) -> None:
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, 'No space left on device')


def test_interrupted_training_checkpoint_leaves_no_torn_file(tmp_path, monkeypatch):
    """The tools' checkpoint hook writes atomically: when saving iter_2.pth fails half way,
    there is no iter_2.pth and no temporary file; iter_1.pth and last_checkpoint stay good."""
    cfg = Config(dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1,
                                                         by_epoch=False))))
    assert use_atomic_checkpoints(cfg)
    assert cfg.default_hooks.checkpoint.backend_args == dict(backend=BACKEND_NAME)
    real_fdopen, opened = os.fdopen, []

    def fdopen(fd, *args, **kwargs):
        opened.append(fd)
        f = real_fdopen(fd, *args, **kwargs)
        return f if len(opened) == 1 else TornWrite(f)

    monkeypatch.setattr(os, 'fdopen', fdopen)
    runner = Runner(
        model=ToyModel(), work_dir=str(tmp_path), experiment_name='atomic',
        train_dataloader=dict(dataset=[dict(inputs=torch.randn(2)) for _ in range(8)], batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=2), default_hooks=cfg.default_hooks,
        default_scope='mmengine')
    with pytest.raises(OSError, match='No space left'):
        runner.train()
    assert len(opened) == 2  # iter_1 written, iter_2 torn
    written = sorted(p.name for p in tmp_path.iterdir()
                     if p.suffix in ('.pth', '.tmp') or p.name.startswith('.'))
    assert written == ['iter_1.pth']
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_1.pth')
    assert load_checkpoint_file(str(tmp_path / 'iter_1.pth'))['meta']['iter'] == 1


def test_atomic_checkpoints_leave_remote_or_custom_backends_alone():
    custom = Config(dict(default_hooks=dict(checkpoint=dict(backend_args=dict(backend='petrel')))))
    remote = Config(dict(default_hooks=dict(checkpoint=dict(out_dir='s3://bucket/run'))))
    assert not use_atomic_checkpoints(custom) and not use_atomic_checkpoints(remote)
    assert custom.default_hooks.checkpoint.backend_args == dict(backend='petrel')
    assert 'backend_args' not in remote.default_hooks.checkpoint
    assert not use_atomic_checkpoints(Config(dict(default_hooks=ConfigDict())))
