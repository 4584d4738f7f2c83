"""Spatially sparse convolution over ``block x block`` tiles (docs/whole_model.md, 'How a
sparse convolution computes'). Training runs one merged stream over the whole map; inference
convolves the kept tiles gathered with their halo (:mod:`.gather`), runs the fast path on the
pruned ones and pastes both into one map.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .decision import SparsityDecision
from .gather import block_grid, expand_block_mask, gather_tiles, paste_tiles, tile_coords

__all__ = ['block_grid', 'expand_block_mask', 'fast_path_conv', 'sparse_conv2d']


def fast_path_conv(x: Tensor, fast_weight: Tensor, fast_bias: Optional[Tensor],
                   fast_dw: Optional[Tensor], padding: int,
                   low_rank: Optional[Tuple[Tensor, Tensor]] = None,
                   dilation: int = 1) -> Tensor:
    """The fast path on x (B, C_in, H, W): the 1x1 convolution, after the depthwise kernel
    ``fast_dw`` (C_in, 1, k, k) if given, or plus the low-rank kxk convolution ``low_rank``
    if given.

    Args:
        padding: zero padding of the depthwise or low-rank kxk convolution: its halo h (the
            output keeps the map's size) or 0 (x carries a halo of h around what is wanted).
        low_rank: (down (r, C_in, k, k), up (C_out, r, 1, 1)): ``up(down(x))`` with
            ``dilation``, added to the 1x1 convolution of x without its halo.

    Returns:
        (B, C_out, H', W'): H' = H with ``padding`` h or without either kxk kernel,
        H - 2h with ``padding`` 0.
    """
    if fast_dw is not None:
        x = F.conv2d(x, fast_dw, padding=padding, groups=x.shape[1])
    if low_rank is None:
        return F.conv2d(x, fast_weight, fast_bias)
    down, up = low_rank
    detail = F.conv2d(F.conv2d(x, down, padding=padding, dilation=dilation), up)
    crop = dilation * (down.shape[-1] - 1) // 2 - padding
    if crop:
        x = x[..., crop:x.shape[-2] - crop, crop:x.shape[-1] - crop]
    return F.conv2d(x, fast_weight, fast_bias) + detail


def sparse_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], fast_weight: Tensor,
                  fast_bias: Optional[Tensor], decision: SparsityDecision, block: int,
                  dilation: int = 1, fast_dw: Optional[Tensor] = None,
                  fast_low_rank: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
    """The kxk convolution on kept tiles (equal there to the dense convolution), the fast path
    (:func:`fast_path_conv`: 1x1, optionally after a depthwise convolution or plus a low-rank
    kxk one) on pruned ones.

    Args:
        x: (B, C_in, H, W).
        weight, bias: the kxk convolution (k odd; stride 1, padding ``dilation * (k - 1) / 2``).
        fast_weight, fast_bias: the 1x1 fast path, (C_out, C_in, 1, 1) and (C_out,) or None.
        decision: over the row-major tiles of x (``hw_shape`` = :func:`block_grid`).
        block: tile size T.
        dilation: of the kxk convolution.
        fast_dw: (C_in, 1, k', k') depthwise kernel (k' odd, zero padding, dilation 1) run
            before the 1x1 fast path, or None.
        fast_low_rank: (down (r, C_in, k, k), up (C_out, r, 1, 1)) of a low-rank kxk
            convolution (``dilation``, zero padding) added to the 1x1 fast path, or None.

    Returns:
        (B, C_out, H, W), the same in both modes for the same kept tiles.

    Raises:
        ValueError: when ``decision.hw_shape`` is not the tile grid of x.
    """
    batch, _, height, width = x.shape
    grid = block_grid(height, width, block)
    num, k = grid[0] * grid[1], decision.num_keep
    if tuple(decision.hw_shape) != grid:
        raise ValueError(f'decision over a {tuple(decision.hw_shape)} grid does not fit the '
                         f'{grid} grid of {block}x{block} tiles of a {height}x{width} map')
    halo = dilation * (weight.shape[-1] - 1) // 2
    fast_halo = 0
    if fast_dw is not None:
        fast_halo = (fast_dw.shape[-1] - 1) // 2
    elif fast_low_rank is not None:
        fast_halo = dilation * (fast_low_rank[0].shape[-1] - 1) // 2

    def fast_path(x: Tensor, padding: int) -> Tensor:
        return fast_path_conv(x, fast_weight, fast_bias, fast_dw, padding, fast_low_rank,
                              dilation)

    if k == num:
        return F.conv2d(x, weight, bias, padding=halo, dilation=dilation)
    if k == 0:
        return fast_path(x, fast_halo)
    if k is None:
        slow = F.conv2d(x, weight, bias, padding=halo, dilation=dilation)
        fast = fast_path(x, fast_halo)
        mask = expand_block_mask(decision.keep_mask, grid, block, height, width)
        dtype = torch.promote_types(slow.dtype, fast.dtype)
        return (mask * slow + (1 - mask) * fast).to(dtype)
    kept, pruned = tile_coords(decision.order, grid[1], k)
    slow = F.conv2d(gather_tiles(x, kept, block, halo), weight, bias, dilation=dilation)
    fast = fast_path(gather_tiles(x, pruned, block, fast_halo), 0)
    dtype = torch.promote_types(slow.dtype, fast.dtype)
    out = slow.new_empty((batch, slow.shape[1], grid[0] * block, grid[1] * block), dtype=dtype)
    paste_tiles(out, slow.to(dtype), kept)
    paste_tiles(out, fast.to(dtype), pruned)
    return out[..., :height, :width]
