"""Spatially sparse convolution over blocks: the full kxk convolution on kept blocks of a map,
a 1x1 fast path on pruned ones, and the full (B, C_out, H, W) map out.

The map is cut into ``block x block`` tiles (the last row / column of tiles may reach past the
map; those positions are zeros and their outputs are dropped). A decision keeps or prunes
whole tiles. Both modes live in :func:`sparse_conv2d`, as :func:`~.routing.route_tokens` does
for tokens:

- Training: one merged stream ``m * conv_kxk(x) + (1 - m) * conv_1x1(x)`` over the whole map,
  with the straight-through hard tile mask ``m`` spread over each tile's positions.
- Inference: the kept tiles are gathered *with a halo* of ``dilation * (k - 1) / 2`` positions
  (their neighbours, or the zero padding at the map border) into one batch and run through the
  dense convolution without padding; the pruned tiles are gathered without halo and run
  through the 1x1 fast path; both are scattered into one buffer. For the same kept tiles the
  two modes give the same map (a kept position reads the same neighbours either way).

Why tiles: the batch of tiles goes through the same optimised convolution kernel as the dense
model, and the only extra work is the halo, ``((T + 2h) / T)^2`` for tile size T (1.27x for
16x16 tiles of a 3x3 convolution). A per-position gather of neighbours (im2col of the kept
positions) moves k*k times the input and runs a plain GEMM, which realised far less of the
FLOPs-implied speed-up in our measurements (docs/efficiency.md).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .decision import SparsityDecision


def block_grid(height: int, width: int, block: int) -> Tuple[int, int]:
    """(rows, columns) of ``block x block`` tiles covering an H x W map (ceil)."""
    return -(-height // block), -(-width // block)


def expand_block_mask(mask: Tensor, grid: Tuple[int, int], block: int, height: int,
                      width: int) -> Tensor:
    """(B, rows * cols) tile mask -> (B, 1, H, W) position mask (each tile's value spread over
    its positions, cropped to the map)."""
    mask = mask.view(-1, 1, *grid)
    mask = mask.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)
    return mask[..., :height, :width]


def _tile_view(x: Tensor, block: int, halo: int) -> Tensor:
    """(B, C, H, W) -> (B, rows, cols, C, block + 2 * halo, block + 2 * halo), a strided view
    of the zero-padded map (no copy): tile (r, c) with its halo."""
    height, width = x.shape[-2:]
    rows, cols = block_grid(height, width, block)
    pads = (halo, halo + cols * block - width, halo, halo + rows * block - height)
    if any(pads):  # padding copies the whole map: skip it when nothing is added
        x = F.pad(x, pads)
    size = block + 2 * halo
    return x.unfold(2, size, block).unfold(3, size, block).permute(0, 2, 3, 1, 4, 5)


def gather_tiles(x: Tensor, tiles: Tensor, block: int, halo: int) -> Tensor:
    """The tiles ``tiles`` (flat indices ``b * rows * cols + r * cols + c``) of x (B, C, H, W),
    each with a halo of ``halo`` positions: (n, C, block + 2 * halo, block + 2 * halo)."""
    view = _tile_view(x, block, halo)
    rows, cols = view.shape[1:3]
    b, rest = tiles.div(rows * cols, rounding_mode='floor'), tiles % (rows * cols)
    return view[b, rest.div(cols, rounding_mode='floor'), rest % cols]


def scatter_tiles(tiles_out: Tensor, batch: int, grid: Tuple[int, int], height: int,
                  width: int) -> Tensor:
    """(B * rows * cols, C, T, T) tiles in row-major order -> the (B, C, H, W) map."""
    rows, cols = grid
    channels, block = tiles_out.shape[1], tiles_out.shape[-1]
    out = tiles_out.view(batch, rows, cols, channels, block, block).permute(0, 3, 1, 4, 2, 5)
    out = out.reshape(batch, channels, rows * block, cols * block)
    return out[..., :height, :width]


def sparse_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], fast_weight: Tensor,
                  fast_bias: Optional[Tensor], decision: SparsityDecision, block: int,
                  dilation: int = 1) -> Tensor:
    """Slow path (the kxk convolution) on kept tiles, fast path (1x1) on pruned ones.

    Args:
        x: (B, C_in, H, W).
        weight, bias: the kxk convolution (k odd; stride 1, padding ``dilation * (k - 1) / 2``).
        fast_weight, fast_bias: the 1x1 fast path, (C_out, C_in, 1, 1) and (C_out,) or None.
        decision: over the tiles of x (``keep_mask`` (B, rows * cols), row-major, see
            :func:`block_grid`).
        block: tile size T.
        dilation: of the kxk convolution.

    Returns:
        (B, C_out, H, W), the same in both modes for the same kept tiles.
    """
    batch, _, height, width = x.shape
    grid = block_grid(height, width, block)
    num, k = grid[0] * grid[1], decision.num_keep
    if tuple(decision.hw_shape) != grid:
        raise ValueError(f'decision over a {tuple(decision.hw_shape)} grid does not fit the '
                         f'{grid} grid of {block}x{block} tiles of a {height}x{width} map')
    halo = dilation * (weight.shape[-1] - 1) // 2
    if k is None or k == num:
        slow = F.conv2d(x, weight, bias, padding=halo, dilation=dilation)
        if k == num:
            return slow
    if k is None or k == 0:
        fast = F.conv2d(x, fast_weight, fast_bias)
        if k == 0:
            return fast
    if k is None:
        mask = expand_block_mask(decision.keep_mask, grid, block, height, width)
        dtype = torch.promote_types(slow.dtype, fast.dtype)
        return (mask * slow + (1 - mask) * fast).to(dtype)
    kept, pruned = decision.flat_rows()
    slow = F.conv2d(gather_tiles(x, kept, block, halo), weight, bias, dilation=dilation)
    fast = F.conv2d(gather_tiles(x, pruned, block, 0), fast_weight, fast_bias)
    dtype = torch.promote_types(slow.dtype, fast.dtype)
    out = slow.new_empty((batch * num, *slow.shape[1:]), dtype=dtype)
    out.index_copy_(0, kept, slow.to(dtype))
    out.index_copy_(0, pruned, fast.to(dtype))
    return scatter_tiles(out, batch, grid, height, width)
