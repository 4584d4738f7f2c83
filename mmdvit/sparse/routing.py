"""Asymmetric computation: kept positions take the slow path, pruned ones the fast path
(docs/method.md, 'Asymmetric computation')."""
from typing import Callable, Optional

import torch
from torch import Tensor

from .decision import SparsityDecision

Path = Callable[[Tensor], Tensor]


def route_tokens(x: Tensor, slow: Path, fast: Path, decision: SparsityDecision) -> Tensor:
    """Apply ``slow`` to kept positions and ``fast`` to pruned ones.

    Training (no ``num_keep``): one merged stream ``m * slow(x) + (1 - m) * fast(x)`` with the
    straight-through hard mask ``m``, equal in value to inference for the same kept set.
    Inference: ``slow`` sees only the kept rows, ``fast`` only the pruned ones (each
    contiguous, kept rows in ``order``); bitwise equal to a gather / scatter formulation.

    Args:
        x: (B, N, C) tokens.
        slow, fast: position-wise maps (B, n, C) -> (B, n, C_out).
        decision: the decision that applies to these positions.

    Returns:
        (B, N, C_out) path outputs (the residual branch; the caller adds the shortcut). The
        dtype is the wider of the two paths' dtypes, so autocast outputs stay consistent.
    """
    return _route(x, slow, fast, decision)


def drop_pruned(x: Tensor, decision: SparsityDecision,
                previous: Optional[SparsityDecision] = None) -> Tensor:
    """Inference routing of plain ViTs: pruned tokens leave the sequence (no fast path).

    Args:
        x: (B, n, C) tokens at the positions ``previous.keep_indices`` (in that order), or at
            all N positions in order when ``previous`` is None.
        decision: an inference decision nested in ``previous`` (see
            :func:`~mmdvit.sparse.decide`).

    Returns:
        (B, k, C) the tokens at ``decision.keep_indices``, in that order (``x`` itself when
        nothing more was pruned).
    """
    if decision.num_keep == x.shape[1]:
        return x
    kept = decision.keep_indices
    if previous is not None and decision.slots is not None:
        kept = decision.slots  # the kept tokens' places in x, recorded by decide()
    elif previous is not None:
        present = previous.keep_indices
        slots = torch.arange(present.shape[1], device=x.device).expand_as(present)
        kept = torch.empty_like(decision.order).scatter_(1, present, slots).gather(1, kept)
    return x.gather(1, kept.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def route_windows(windows: Tensor, slow: Path, fast: Path, decision: SparsityDecision) -> Tensor:
    """:func:`route_tokens` for window decisions: whole windows take one path or the other.

    Args:
        windows: (B, nW, T, C), the T positions of each of the nW windows of every image.
        slow: (B, n, T, C) windows -> (B, n, T, C_out).
        fast: position-wise map (B, n, C) -> (B, n, C_out).
        decision: a decision over the nW windows.

    Returns:
        (B, nW, T, C_out) path outputs.
    """
    batch, num, tokens, channels = windows.shape

    def slow_rows(x: Tensor) -> Tensor:
        out = slow(x.view(batch, x.shape[1], tokens, channels))
        return out.reshape(batch, x.shape[1], -1)

    def fast_rows(x: Tensor) -> Tensor:
        return fast(x.reshape(batch, -1, channels)).reshape(batch, x.shape[1], -1)

    out = _route(windows.reshape(batch, num, tokens * channels), slow_rows, fast_rows, decision)
    return out.view(batch, num, tokens, -1)


def _route(x: Tensor, slow: Path, fast: Path, decision: SparsityDecision) -> Tensor:
    """The implementation of :func:`route_tokens` and :func:`route_windows`."""
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
    batch, channels = x.shape[0], x.shape[-1]
    kept, pruned = decision.flat_rows()
    # One gather of both paths' rows, kept first.
    rows = x.reshape(batch * num, channels).index_select(0, decision.flat_order())
    slow_out = slow(rows[:batch * k].view(batch, k, channels))
    fast_out = fast(rows[batch * k:].view(batch, num - k, channels))
    dtype = torch.promote_types(slow_out.dtype, fast_out.dtype)
    out = slow_out.new_empty((batch * num, slow_out.shape[-1]), dtype=dtype)
    out.index_copy_(0, kept, slow_out.reshape(batch * k, -1).to(dtype))
    out.index_copy_(0, pruned, fast_out.reshape(batch * (num - k), -1).to(dtype))
    return out.view(batch, num, -1)
