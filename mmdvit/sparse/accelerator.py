"""Which code path the sparse modules take.

On CPU in eager mode, moving a few tiles or windows with plain Python-level copies is the faster
choice. On an accelerator (any ``device.type`` other than ``'cpu'``), and whenever the ops are
being recorded (tracing, ``torch.compile``, ONNX export), the modules take the *accelerator
path*: index arithmetic on tensors only, with no host synchronisation and no data-dependent
Python control flow. :func:`accelerator_path` forces that path on CPU, so tests and the op
counters can check it without a GPU.
"""
from contextlib import contextmanager
from typing import Iterator

from torch import Tensor

from .decision import is_tracing

_forced = False


def uses_accelerator_path(x: Tensor) -> bool:
    """Whether modules working on ``x`` must take the sync-free, vectorised path."""
    return _forced or x.device.type != 'cpu' or is_tracing()


@contextmanager
def accelerator_path() -> Iterator[None]:
    """Within the block, every sparse module takes the accelerator path, also on CPU."""
    global _forced
    previous, _forced = _forced, True
    try:
        yield
    finally:
        _forced = previous
