"""Resuming a killed run: the random state saved with the checkpoints (a resumed run equals the
uninterrupted one), leftovers of killed saves removed at the next start, an empty
``last_checkpoint`` tolerated."""
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from typing import Any, Dict, Optional

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset
from test_dense_e2e import SEG_CONFIG, run, save_teacher, scalars, write_config

from mmdvit.datasets import make_ade20k_demo
from mmdvit.engine.checkpoint_loader import use_safe_loader
from mmdvit.engine.hooks.random_state import get_random_state, set_random_state
from mmdvit.engine.resume import (newest_checkpoint, remove_save_leftovers,
                                  tolerate_empty_last_checkpoint)
from mmdvit.models.checkpoint import load_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]


def draws() -> list:
    """Numbers from every generator the random state covers (Gaussians too: numpy and Python
    cache one)."""
    return [random.random(), random.gauss(0, 1), *np.random.rand(3), np.random.randn(),
            *torch.rand(3).tolist(), *torch.randn(3).tolist()]


def test_random_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.gauss(0, 1), np.random.randn()  # leave a cached Gaussian in both
    path = tmp_path / 'state.pth'
    torch.save({'rng_state': get_random_state()}, path)
    expected = draws()
    draws()
    set_random_state(load_checkpoint_file(str(path), 'resume checkpoint')['rng_state'])
    assert draws() == expected


def test_leftovers_of_a_killed_save_are_removed_and_nothing_else(tmp_path):
    """A real leftover: a process killed (os._exit) while write_atomic writes."""
    code = ('import os, sys; from mmdvit.models.checkpoint import write_atomic; '
            "write_atomic(sys.argv[1], lambda f: (f.write(b'x' * 100), f.flush(), os._exit(3)))")
    proc = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'iter_4.pth')],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 3
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith('.iter_4.pth.')]
    assert len(leftovers) == 1 and not (tmp_path / 'iter_4.pth').exists()
    kept = ['.notes.tmp', 'x.iter_4.pth.abcd1234.tmp', '.iter_4.pth.abc.tmp', 'iter_2.pth',
            '.iter_4.pth.abcd1234.tmp.bak']
    for name in kept:
        (tmp_path / name).write_bytes(b'')
    (tmp_path / '.dir.abcd1234.tmp').mkdir()
    (tmp_path / '.last_checkpoint.k9_x2ab7.tmp').write_text('')
    removed = remove_save_leftovers(str(tmp_path))
    assert sorted(removed) == sorted([str(leftovers[0]),
                                      str(tmp_path / '.last_checkpoint.k9_x2ab7.tmp')])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ['.dir.abcd1234.tmp'])


def test_an_empty_last_checkpoint_falls_back_to_the_newest_checkpoint(tmp_path):
    cfg = Config(dict(work_dir=str(tmp_path), resume=True, load_from=None))
    (tmp_path / 'last_checkpoint').write_text('\n')
    tolerate_empty_last_checkpoint(cfg)
    assert cfg.resume is False and cfg.load_from is None  # nothing to resume: a fresh start
    for i, name in enumerate(['iter_8.pth', 'iter_12.pth', 'iter_4.pth']):
        (tmp_path / name).write_bytes(b'')
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    assert newest_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')  # written last
    cfg = Config(dict(work_dir=str(tmp_path), resume=True, load_from=None))
    tolerate_empty_last_checkpoint(cfg)
    assert cfg.resume is True and cfg.load_from == str(tmp_path / 'iter_4.pth')
    for load_from, last in ((None, 'iter_8.pth'), ('iter_12.pth', '')):
        (tmp_path / 'last_checkpoint').write_text(last)
        cfg = Config(dict(work_dir=str(tmp_path), resume=True, load_from=load_from))
        tolerate_empty_last_checkpoint(cfg)  # a named file or an explicit path: left alone
        assert cfg.load_from == load_from


class RandomData(Dataset):
    """Samples whose augmentation draws from numpy's and Python's global generators, as
    mmseg's / mmdet's transforms do in the main process (``num_workers=0``)."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> dict:
        noise = float(np.random.rand()) + random.random()
        return dict(inputs=torch.arange(4.0) * index + noise)


class NoisyModel(BaseModel):
    """Dropout and torch noise in training, like drop path and the decisions' Gumbel noise."""

    def __init__(self) -> None:
        super().__init__()
        self.linear, self.drop = nn.Linear(4, 1), nn.Dropout(0.5)

    def forward(self, inputs: torch.Tensor, data_samples: Any = None, mode: str = 'tensor'):
        out = self.linear(self.drop(inputs + torch.randn_like(inputs)))
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else [out]


class NoMetric(BaseMetric):
    def process(self, data_batch: Any, data_samples: Any) -> None:
        self.results.append(0)

    def compute_metrics(self, results: list) -> dict:
        return {}


def train_toy(work_dir: Path, by_epoch: bool, length: int, hook: bool,
              resume: Optional[Path] = None) -> Dict[str, torch.Tensor]:
    """Train :class:`NoisyModel` in process for ``length`` epochs (3 iterations each) or
    iterations, a checkpoint and a validation every epoch / 3 iterations; the final weights."""
    sampler = 'DefaultSampler' if by_epoch else 'InfiniteSampler'
    loader = dict(dataset=RandomData(), sampler=dict(type=sampler, shuffle=True), batch_size=2,
                  num_workers=0, collate_fn=dict(type='default_collate'))
    loop = dict(by_epoch=True, max_epochs=length) if by_epoch else dict(
        by_epoch=False, max_iters=length, val_interval=3)
    runner = Runner(
        model=NoisyModel(), work_dir=str(work_dir), experiment_name=f'{work_dir.name}_{length}',
        train_dataloader=loader, val_cfg=dict(),
        val_dataloader=dict(loader, sampler=dict(type='DefaultSampler', shuffle=False)),
        val_evaluator=[NoMetric()], train_cfg=loop,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1 if by_epoch else 3,
                                           by_epoch=by_epoch)),
        custom_hooks=[dict(type='mmdvit.RandomStateHook')] if hook else [],
        randomness=dict(seed=0), resume=resume is not None,
        load_from=str(resume) if resume else None, default_scope='mmdvit')
    runner.train()
    return runner.model.state_dict()


@pytest.fixture
def safe_loader():
    """mmengine reads checkpoints with mmdvit's reader, as in the tools (restored after)."""
    from mmengine.runner import CheckpointLoader
    previous = CheckpointLoader._schemes['']
    use_safe_loader({}, default_role='resume checkpoint')
    yield
    CheckpointLoader._schemes[''] = previous


@pytest.mark.parametrize('by_epoch', [True, False], ids=['epochs', 'iterations'])
def test_resume_restores_the_random_state_in_both_loops(tmp_path, safe_loader, by_epoch):
    """2 epochs (6 iterations) in one run equal 1 epoch (3 iterations) + resume; without the
    hook they differ (the setup draws random numbers everywhere the hook must cover)."""
    last = 2 if by_epoch else 6
    checkpoint = 'epoch_1.pth' if by_epoch else 'iter_3.pth'
    results = {}
    for hook in (True, False):
        whole = train_toy(tmp_path / f'whole_{hook}', by_epoch, last, hook)
        shutil.copy(tmp_path / f'whole_{hook}' / checkpoint, tmp_path / f'{hook}.pth')
        resumed = train_toy(tmp_path / f'resumed_{hook}', by_epoch, last, hook,
                            resume=tmp_path / f'{hook}.pth')
        results[hook] = [torch.equal(whole[k], resumed[k]) for k in whole]
    assert all(results[True]) and not all(results[False])


RESUME_CONFIG = """
_base_ = '{base}'
randomness = dict(seed=None)  # drawn at random: the resumed run takes the checkpoint's
train_cfg = dict(max_iters=4, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=2))
"""


@pytest.mark.slow
def test_a_resumed_run_equals_the_uninterrupted_one(tmp_path):
    """4 iterations in one run vs. 2 + automatic resume + 2, with dropout-free but drop-path,
    Gumbel-decision and random-augmentation training (no dataloader workers) and a validation
    right after the checkpoint of iteration 2. The resumed run also meets an empty
    last_checkpoint and a leftover of a killed save."""
    make_ade20k_demo(str(tmp_path / 'ade20k'), num_train=8, num_val=2, seed=0,
                     size_range=(128, 160))
    base = write_config(SEG_CONFIG, tmp_path / 'seg.py', tmp_path / 'ade20k',
                        tmp_path / 'teacher.pth')
    save_teacher(base, tmp_path / 'teacher.pth')
    config = tmp_path / 'resume.py'
    config.write_text(RESUME_CONFIG.format(base=base))
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    run(['tools/train.py', str(config), '--work-dir', str(whole)])
    resumed.mkdir()
    shutil.copy(whole / 'iter_2.pth', resumed / 'iter_2.pth')
    (resumed / 'last_checkpoint').write_text('')
    leftover = resumed / '.iter_4.pth.q1w2e3r4.tmp'
    leftover.write_bytes(b'torn')
    proc = run(['tools/train.py', str(config), '--work-dir', str(resumed), '--resume'])
    log = proc.stdout + proc.stderr
    assert f"Removed '{leftover}', the temporary file of a save that was killed" in log
    assert not leftover.exists()
    assert (f"'{resumed / 'last_checkpoint'}' is empty (a run killed while writing it?): "
            f"resuming from the newest checkpoint of the work dir, '{resumed / 'iter_2.pth'}'"
            in log)
    assert 'Restored the random state of the checkpoint (iteration 2)' in log
    assert (resumed / 'last_checkpoint').read_text().strip() == str(resumed / 'iter_4.pth')

    def losses(work_dir: Path) -> dict:
        return {r['step']: r['loss'] for r in scalars(work_dir) if 'loss' in r}

    assert sorted(losses(resumed)) == [3, 4]
    for step in (3, 4):
        assert losses(resumed)[step] == pytest.approx(losses(whole)[step], rel=1e-6, abs=1e-7)
    final = [torch.load(d / 'iter_4.pth', weights_only=False)['state_dict']
             for d in (whole, resumed)]
    assert final[0].keys() == final[1].keys()
    for key, value in final[0].items():
        torch.testing.assert_close(final[1][key], value, rtol=1e-6, atol=1e-7, msg=key)
