"""Which code path the sparse modules take (tile movement, the finiteness check of scores).

The *accelerator path* (tensor ops only: no host synchronisation, no data-dependent Python
control flow) is taken on any device other than the CPU and whenever ops are being recorded
(tracing, ``torch.compile``, ONNX export); CPU eager mode may copy per tile and read values
back. Both give equal results. :func:`accelerator_path` forces the first on CPU.
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
