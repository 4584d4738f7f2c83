"""Exact resume: the random state travels with the training checkpoints."""
import random
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log

from ...registry import HOOKS

CHECKPOINT_KEY = 'rng_state'


def get_random_state() -> Dict[str, Any]:
    """The states of Python's ``random``, numpy's global generator, torch's CPU generator and
    (when CUDA is in use) the current CUDA device's generator, as tensors, ints, floats and
    strings only, so that a checkpoint holding them loads with ``weights_only=True``."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: Dict[str, Any] = dict(
        python=dict(version=version, state=torch.tensor(internal, dtype=torch.int64),
                    gauss=gauss),
        numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached_gaussian=float(cached_gaussian)),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_random_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`get_random_state` returned, wherever its tensors were loaded to
    (mmengine maps a resume checkpoint to the GPU); the CUDA state, if any, goes to the current
    device, and is ignored without CUDA."""
    python, numpy = state['python'], state['numpy']
    random.setstate((python['version'], tuple(python['state'].tolist()), python['gauss']))
    np.random.set_state((numpy['kind'], numpy['keys'].cpu().numpy().astype(np.uint32),
                         numpy['pos'], numpy['has_gauss'], numpy['cached_gaussian']))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'].cpu())


class _RestoreBeforeBatch:
    """An iterator that calls ``restore`` right before it hands out batch ``index`` (0-based)
    of ``inner``."""

    def __init__(self, inner: Iterator, index: int, restore: Callable[[], None]) -> None:
        self.inner, self._index, self._restore, self._calls = inner, index, restore, 0

    def __iter__(self) -> '_RestoreBeforeBatch':
        return self

    def __next__(self) -> Any:
        if self._calls == self._index:
            self._restore()
        self._calls += 1
        return next(self.inner)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Make a resumed run equal the uninterrupted one: training checkpoints hold the random
    state (``checkpoint['rng_state']``, see :func:`get_random_state`) and a resumed run restores
    it right before its first batch is drawn.

    mmengine already restores the iteration, epoch, optimizer, schedulers and message hub, and
    its samplers draw the data order from the seed (and the epoch), the iteration-based loop
    re-reading the batches already trained. What it does not restore is the generators' state:
    dropout, drop path, the Gumbel noise of the decisions and the augmentations done in the
    main process (``num_workers=0``) would draw other numbers from the first iteration on. The
    state is restored after that re-reading (which draws augmentation numbers in the main
    process), and validation leaves the training's random state as it found it, so that an
    uninterrupted run that validates right after saving continues as the resumed one.

    A multi-process run saves rank 0's state and every rank restores it (rank 0 only with
    ``randomness.diff_rank_seed``). ``tools/train.py`` adds this hook.
    """

    priority = 'LOWEST'

    def __init__(self) -> None:
        self._loaded: Optional[Dict[str, Any]] = None
        self._before_val: Optional[Dict[str, Any]] = None

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = get_random_state()

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        # Kept until before_train tells a resume (iteration > 0) from a load_from.
        self._loaded = checkpoint.get(CHECKPOINT_KEY)

    def before_train(self, runner: Any) -> None:
        state, self._loaded = self._loaded, None
        if runner.iter == 0 and runner.epoch == 0:
            return
        if state is None:
            print_log('The resume checkpoint holds no random state (it was written without '
                      'mmdvit.RandomStateHook): the run goes on deterministically, but with '
                      'other random numbers than the uninterrupted run would draw.',
                      logger='current', level=30)
            return
        randomness = runner.cfg.get('randomness') or {}
        if get_rank() != 0 and randomness.get('diff_rank_seed'):
            return
        loop = runner.train_loop

        def restore() -> None:
            set_random_state(state)
            print_log(f'Restored the random state of the checkpoint (iteration {runner.iter})',
                      logger='current')

        if hasattr(loop, 'dataloader_iterator'):  # iteration-based: after the re-reading
            loop.dataloader_iterator = _RestoreBeforeBatch(loop.dataloader_iterator,
                                                           runner.iter, restore)
        else:  # epoch-based: the epoch's data iterator starts after this hook
            restore()

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        iterator = getattr(runner.train_loop, 'dataloader_iterator', None)
        if isinstance(iterator, _RestoreBeforeBatch):
            runner.train_loop.dataloader_iterator = iterator.inner

    def before_val(self, runner: Any) -> None:
        self._before_val = get_random_state()

    def after_val(self, runner: Any) -> None:
        if self._before_val is not None:
            set_random_state(self._before_val)
            self._before_val = None
