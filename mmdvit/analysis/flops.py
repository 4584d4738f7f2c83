"""Counting multiply-accumulates of what a forward pass really executes."""
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_macs(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """Multiply-accumulates (MACs) of ``fn(*args, **kwargs)``, traced on the executed ops.

    Convolutions, linear layers and (batched) matrix products are counted with the sizes they
    actually run at, so gathered subsets of tokens count only what they compute. Element-wise
    ops, normalisation and softmax are not counted (the fvcore / mmengine convention that the
    published FLOPs follow). One MAC is what papers call one FLOP.
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() / 2
