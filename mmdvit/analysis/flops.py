"""Counting multiply-accumulates of what a forward pass really executes."""
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``scaled_dot_product_attention``'s CPU kernel (torch registers formulas for the
    CUDA kernels only): the two batched matrix products, as for the CUDA kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# Kernels torch's counter has no formula for, but that perform counted matrix products.
EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def count_macs(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """Multiply-accumulates (MACs) of ``fn(*args, **kwargs)``, traced on the executed ops.

    Convolutions, linear layers and (batched) matrix products, including the two products
    inside ``scaled_dot_product_attention`` on CPU and CUDA, are counted with the sizes they
    actually run at, so gathered subsets of tokens count only what they compute. Element-wise
    ops, normalisation and softmax are not counted (the fvcore / mmengine convention that the
    published FLOPs follow). One MAC is what papers call one FLOP.
    """
    with torch.no_grad(), FlopCounterMode(display=False,
                                          custom_mapping=EXTRA_FORMULAS) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() / 2
