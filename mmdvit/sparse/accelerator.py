"""The *accelerator path*: tensor ops only, no host synchronisation or data-dependent Python
control flow (tile movement, the finiteness check of scores). Taken off CPU and while ops are
recorded (tracing, ``torch.compile``, export); equal results to CPU eager mode."""
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
