"""Peak memory of one training step (forward + backward) of a backbone, dense vs dynamic.

Each measurement runs in a fresh process so that nothing else lives in its heap. CPU: the
process's peak resident set size (``VmHWM`` of ``/proc/self/status``, reset through
``/proc/self/clear_refs`` right before the step; without that file, ``ru_maxrss``) minus the
resident size right before the step. CUDA: ``torch.cuda.max_memory_allocated`` minus
``memory_allocated`` before the step. On CPU the child runs with glibc's
``MALLOC_MMAP_THRESHOLD_`` fixed at 64 KiB so freed tensors leave the resident set. The step
follows one warm-up step (one-off allocations of kernels and libraries happen there);
gradients are freed before it (``set_to_none``), so it allocates them again as a training step
with ``optimizer.zero_grad()`` does. The loss is the mean square of every output (plus the
keep-ratio loss for the dynamic backbone).
"""
import contextlib
import multiprocessing
import os
import resource
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from mmengine.config import ConfigDict

from ..sparse import keep_ratio_loss, record_decisions
from .inputs import model_inputs
from .models import build_model, build_upstream_backbone

MiB = 1024.0**2
# glibc serves blocks of at least this size with mmap and unmaps them when freed, so the
# resident size follows the tensors alive (by default freed blocks up to 32 MiB stay resident
# and are reused, which would hide the step's allocations from the measurement).
MMAP_THRESHOLD = 64 * 1024


@contextlib.contextmanager
def _child_env(**values: str):
    """Environment variables set while a child process starts."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _peak_rss_bytes(reset_worked: bool) -> int:
    if reset_worked:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _training_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    with record_decisions() as decisions:
        outs = model(x)
    outs = outs if isinstance(outs, (tuple, list)) else (outs, )
    loss = sum(o.float().square().mean() for o in outs)
    if decisions:
        loss = loss + keep_ratio_loss(decisions)
    loss.backward()


def _measure(backbone_cfg: dict, which: str, batch: int, shape: Sequence[int], device: str,
             image: np.ndarray, result: 'multiprocessing.Queue') -> None:
    """Child process: build ``which`` backbone, warm up, measure one training step."""
    try:
        torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', torch.get_num_threads())))
        cfg = ConfigDict(backbone_cfg)
        if which == 'dense':
            model = build_upstream_backbone(cfg)
        else:
            model = build_model(cfg, 'mmengine')
            model.trainer_role = 'student'  # a SparsityTrainer student's step: no warning
        model.to(device)
        model.train()
        x = model_inputs(model, [image] * batch, shape)['inputs'].to(device)
        _training_step(model, x)
        model.zero_grad(set_to_none=True)
        if device == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            _training_step(model, x)
            torch.cuda.synchronize()
            total = torch.cuda.max_memory_allocated()
            peak = total - before
            method = 'cuda max_memory_allocated'
        else:
            before = _rss_bytes()
            reset = _reset_peak_rss()
            _training_step(model, x)
            total = _peak_rss_bytes(reset)
            peak = total - before
            method = 'peak RSS (VmHWM, reset before the step)' if reset else 'ru_maxrss'
        result.put(dict(step_mib=peak / MiB, peak_mib=total / MiB, method=method))
    except Exception as err:  # reported to the parent, which raises it
        result.put(dict(error=f'{type(err).__name__}: {err}'))


def training_step_memory(backbone_cfg: ConfigDict, batch: int, shape: Sequence[int],
                         image: np.ndarray, device: str = 'cpu',
                         timeout: Optional[float] = 1800) -> Dict[str, Dict[str, float]]:
    """Training-step memory of the upstream dense backbone and of the dynamic one.

    Returns:
        ``{"dense": {"step_mib", "peak_mib", "method"}, "dynamic": {...}}``: ``step_mib`` is
        what the step adds on top of the resident model, inputs and libraries; ``peak_mib`` the
        process's whole peak during the step.
    """
    ctx = multiprocessing.get_context('spawn')
    out = {}
    for which in ('dense', 'dynamic'):
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(backbone_cfg.to_dict(), which, batch,
                                                  list(shape), device, image, queue))
        with _child_env(MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD)):
            proc.start()
        result = queue.get(timeout=timeout)
        proc.join()
        if 'error' in result:
            raise RuntimeError(f'memory measurement of the {which} backbone failed: '
                               f"{result['error']}")
        out[which] = result
    return out
