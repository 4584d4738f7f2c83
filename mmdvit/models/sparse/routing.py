"""Asymmetric computation: kept positions take the slow path, pruned ones the fast path."""
from typing import Callable

import torch
from torch import Tensor

from .decision import SparsityDecision

Path = Callable[[Tensor], Tensor]


def route_tokens(x: Tensor, slow: Path, fast: Path, decision: SparsityDecision) -> Tensor:
    """Apply ``slow`` to kept positions and ``fast`` to pruned ones.

    Training (no ``num_keep``): one merged stream, ``m * slow(x) + (1 - m) * fast(x)`` with the
    straight-through hard mask ``m``; its value equals the inference result for the same kept
    set (METHOD.md section 4). Inference: one gather by the score order, the slow path on the
    first k positions, the fast path on the rest, one scatter back into a full-size buffer.

    Args:
        x: (B, N, C) tokens.
        slow, fast: position-wise maps (B, n, C) -> (B, n, C_out).
        decision: the decision that applies to these positions.

    Returns:
        (B, N, C_out) path outputs (the residual branch; the caller adds the shortcut). The
        dtype is the wider of the two paths' dtypes, so autocast outputs stay consistent.
    """
    if decision.num_keep is None:
        mask = decision.keep_mask.unsqueeze(-1)
        slow_out, fast_out = slow(x), fast(x)
        dtype = torch.promote_types(slow_out.dtype, fast_out.dtype)
        return (mask * slow_out + (1 - mask) * fast_out).to(dtype)
    k, num = decision.num_keep, x.shape[1]
    if k == num:
        return slow(x)
    if k == 0:
        return fast(x)
    order = decision.order.unsqueeze(-1)
    gathered = x.gather(1, order.expand(-1, -1, x.shape[-1]))
    slow_out, fast_out = slow(gathered[:, :k]), fast(gathered[:, k:])
    dtype = torch.promote_types(slow_out.dtype, fast_out.dtype)
    out = torch.cat([slow_out.to(dtype), fast_out.to(dtype)], dim=1)
    return torch.empty_like(out).scatter_(1, order.expand(-1, -1, out.shape[-1]), out)
