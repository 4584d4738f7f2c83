"""What ``tools/train.py`` does with the work dir before the Runner is built, so that a run
killed at any moment can be resumed, and resumes exactly:

- leftovers of killed atomic saves (``.<name>.<8 characters>.tmp``, the temporary files of
  :func:`~mmdvit.models.checkpoint.write_atomic`) are removed;
- an empty ``last_checkpoint`` (which makes mmengine's automatic resume fail) is replaced by
  the newest ``iter_*.pth`` / ``epoch_*.pth`` of the work dir, or by a fresh start;
- a resumed run of a config without ``randomness.seed`` takes the checkpoint's seed from the
  start (mmengine adopts it only after the data samplers and workers are seeded);
- :class:`~mmdvit.engine.hooks.RandomStateHook` saves and restores the random state.
"""
import logging
import os
import os.path as osp
import re
from typing import List, Optional

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint

from ..models.checkpoint import load_checkpoint_file
from .preflight import load_from_role

# write_atomic's temporary files: tempfile.mkstemp(prefix='.<name>.', suffix='.tmp').
SAVE_LEFTOVER = re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp$')
TRAINING_CHECKPOINT = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')
RANDOM_STATE_HOOK = 'mmdvit.RandomStateHook'


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)


def checkpoint_folders(cfg: Config) -> List[str]:
    """The local folders the checkpoint hook writes to: the work dir and, with an ``out_dir``,
    ``<out_dir>/<work dir name>``."""
    folders = [cfg.work_dir]
    out_dir = ((cfg.get('default_hooks') or {}).get('checkpoint') or {}).get('out_dir')
    if out_dir and '://' not in str(out_dir):
        folders.append(osp.join(out_dir, osp.basename(osp.normpath(cfg.work_dir))))
    return folders


def remove_save_leftovers(folder: str) -> List[str]:
    """Remove the temporary files that saves killed mid-write left in ``folder`` (only regular
    files named as :func:`~mmdvit.models.checkpoint.write_atomic` names them, not
    recursively). Returns their paths."""
    if not osp.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        path = osp.join(folder, name)
        if SAVE_LEFTOVER.match(name) and osp.isfile(path) and not osp.islink(path):
            try:
                os.remove(path)
            except FileNotFoundError:  # another process of the run removed it first
                continue
            removed.append(path)
    return removed


def newest_checkpoint(folder: str) -> Optional[str]:
    """The most recently written ``iter_<N>.pth`` / ``epoch_<N>.pth`` in ``folder`` (the higher
    ``N`` on equal times), or ``None``."""
    if not osp.isdir(folder):
        return None
    found = [(osp.getmtime(osp.join(folder, name)), int(match.group(1)), osp.join(folder, name))
             for name in os.listdir(folder) if (match := TRAINING_CHECKPOINT.match(name))]
    return max(found)[2] if found else None


def tolerate_empty_last_checkpoint(cfg: Config) -> None:
    """Automatic resume (``--resume`` without a path) with an empty ``last_checkpoint`` in the
    work dir: resume from :func:`newest_checkpoint` instead (``cfg.load_from``), or start
    afresh when there is none (``cfg.resume = False``); a warning names the file."""
    if not cfg.get('resume') or cfg.get('load_from'):
        return
    last = osp.join(cfg.work_dir, 'last_checkpoint')
    if not osp.isfile(last):
        return
    with open(last) as f:
        if f.read().strip():
            return
    newest = newest_checkpoint(cfg.work_dir)
    if newest is None:
        _warn(f'{last!r} is empty (a run killed while writing it?) and {cfg.work_dir!r} holds '
              'no iter_*.pth / epoch_*.pth: training starts from the beginning.')
        cfg.resume = False
        return
    _warn(f'{last!r} is empty (a run killed while writing it?): resuming from the newest '
          f'checkpoint of the work dir, {newest!r}.')
    cfg.load_from = newest


def adopt_checkpoint_seed(cfg: Config, trust: bool = False) -> None:
    """A resumed run of a config without ``randomness.seed`` gets the seed stored in its
    checkpoint (``meta['seed']``) before anything is built, so that the samplers and the
    dataloader workers draw what the interrupted run drew. Reads the checkpoint once more (with
    the safe reader, or fully unpickled with ``trust``: ``--trust-checkpoint`` trusts this
    file); nothing is done when the config sets a seed."""
    if not cfg.get('resume') or (cfg.get('randomness') or {}).get('seed') is not None:
        return
    path = cfg.get('load_from') or find_latest_checkpoint(cfg.work_dir)
    if not path or not osp.isfile(osp.expanduser(path)):
        return
    checkpoint = load_checkpoint_file(path, load_from_role(cfg, 'train'), trust=trust or None)
    seed = (checkpoint.get('meta') or {}).get('seed') if isinstance(checkpoint, dict) else None
    if isinstance(seed, int):
        cfg.randomness = dict(cfg.get('randomness') or {}, seed=seed)
        print_log(f'randomness.seed = {seed}, as in the resume checkpoint {path!r}',
                  logger='current')


def prepare_resume(cfg: Config, trust_run_checkpoint: bool = False) -> None:
    """Everything this module describes, for a training config (in place) before
    ``check_config``; call it in every process of the run. ``trust_run_checkpoint``: the
    checkpoint the run resumes from is trusted (``--trust-checkpoint``)."""
    for folder in checkpoint_folders(cfg):
        for path in remove_save_leftovers(folder):
            _warn(f'Removed {path!r}, the temporary file of a save that was killed mid-write.')
    tolerate_empty_last_checkpoint(cfg)
    adopt_checkpoint_seed(cfg, trust_run_checkpoint)
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(hook.get('type') == RANDOM_STATE_HOOK for hook in hooks):
        cfg.custom_hooks = hooks + [dict(type=RANDOM_STATE_HOOK)]
