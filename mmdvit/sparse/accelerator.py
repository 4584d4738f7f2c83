"""The *accelerator path*: tensor ops only, no host synchronisation or data-dependent Python
control flow (tile movement, the finiteness check of scores). Taken off CPU and while ops are
recorded (tracing, ``torch.compile``, export); equal results to CPU eager mode."""
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor

_forced = False


def is_tracing() -> bool:
    """Whether the ops are being recorded (TorchScript / FX tracing, torch.compile, export)."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export())


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
