"""Spatially sparse convolution over tiles: the full kxk convolution on kept tiles of a map, a
1x1 fast path (optionally after a depthwise 3x3) elsewhere, and the full (B, C_out, H, W) map
out.

The map is cut into ``block x block`` tiles (the last row / column of tiles may reach past the
map). A decision keeps or prunes whole tiles. Both modes live in :func:`sparse_conv2d`, as
:func:`~.routing.route_tokens` does for tokens:

- Training: one merged stream ``m * conv_kxk(x) + (1 - m) * conv_1x1(x)`` over the whole map,
  with the straight-through hard tile mask ``m`` spread over each tile's positions.
- Inference: the kept tiles are gathered *with a halo* of ``dilation * (k - 1) / 2`` positions
  (their neighbours, or zeros at the map border) into one batch and run through the dense
  convolution without padding; the pruned tiles are gathered without halo and run through the
  1x1 fast path; both are pasted into one output map. For the same kept tiles the two modes
  give the same map (a kept position reads the same neighbours either way).

Why tiles: the batch of tiles goes through the same optimised convolution kernel as the dense
model, and the only extra work is the halo, ``((T + 2h) / T)^2`` for tile size T (1.27x for
16x16 tiles of a 3x3 convolution). A per-position gather of neighbours (im2col of the kept
positions) moves k*k times the input and runs a plain matrix product, which realised far less
of the FLOPs-implied speed-up in our measurements (docs/whole_model.md). Batches of tiles also
run faster per FLOP than the whole map through oneDNN on the project CPU, for the 1x1 fast path
as much as for the kxk convolution.

Eager inference gathers and pastes tiles with one slice copy per kept tile (the fastest way
measured, by far, on CPU); under tracing, ``torch.compile`` or ONNX export, where Python loops
over data-dependent indices cannot be recorded, the same gather and paste run as indexing ops
(:func:`gather_tiles_indexed`, :func:`paste_tiles_indexed`; equal results, tested).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .accelerator import uses_accelerator_path
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


def _padded(x: Tensor, block: int, halo: int) -> Tensor:
    """x zero-padded by ``halo`` around and up to whole tiles at the bottom / right."""
    height, width = x.shape[-2:]
    rows, cols = block_grid(height, width, block)
    pads = (halo, halo + cols * block - width, halo, halo + rows * block - height)
    return F.pad(x, pads) if any(pads) else x


def gather_tiles_indexed(x: Tensor, tiles: Tensor, block: int, halo: int) -> Tensor:
    """:func:`gather_tiles` as indexing ops on a strided view of the padded map (traceable,
    and one kernel on a GPU)."""
    rows, cols = block_grid(*x.shape[-2:], block)
    size = block + 2 * halo
    view = _padded(x, block, halo).unfold(2, size, block).unfold(3, size, block)
    view = view.permute(0, 2, 3, 1, 4, 5)  # (B, rows, cols, C, size, size)
    b, rest = tiles.div(rows * cols, rounding_mode='floor'), tiles % (rows * cols)
    return view[b, rest.div(cols, rounding_mode='floor'), rest % cols]


def gather_tiles(x: Tensor, tiles: Tensor, block: int, halo: int) -> Tensor:
    """The tiles ``tiles`` of x (B, C, H, W) with a halo of ``halo`` positions (zeros outside
    the map): (n, C, block + 2 * halo, block + 2 * halo).

    Args:
        tiles: (n,) long, flat tile indices ``b * rows * cols + r * cols + c``.
    """
    if uses_accelerator_path(x):
        return gather_tiles_indexed(x, tiles, block, halo)
    batch, channels, height, width = x.shape
    rows, cols = block_grid(height, width, block)
    size = block + 2 * halo
    out = x.new_empty((tiles.numel(), channels, size, size))
    for i, tile in enumerate(tiles.tolist()):
        b, rest = divmod(tile, rows * cols)
        top, left = (rest // cols) * block - halo, (rest % cols) * block - halo
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + size, height), min(left + size, width)
        if (y0, x0, y1, x1) != (top, left, top + size, left + size):
            out[i].zero_()  # a border tile: the part outside the map is padding
        out[i, :, y0 - top:y1 - top, x0 - left:x1 - left] = x[b, :, y0:y1, x0:x1]
    return out


def paste_tiles_indexed(out: Tensor, tiles_out: Tensor, tiles: Tensor) -> Tensor:
    """:func:`paste_tiles` as an indexing op on a strided view (traceable)."""
    batch, channels, height, width = out.shape
    block = tiles_out.shape[-1]
    rows, cols = block_grid(height, width, block)
    full = _padded(out, block, 0)
    view = full.unfold(2, block, block).unfold(3, block, block).permute(0, 2, 3, 1, 4, 5)
    b, rest = tiles.div(rows * cols, rounding_mode='floor'), tiles % (rows * cols)
    view = view.index_put((b, rest.div(cols, rounding_mode='floor'), rest % cols), tiles_out)
    full = view.permute(0, 3, 1, 4, 2, 5).reshape(full.shape)
    return full[..., :height, :width]


def paste_tiles(out: Tensor, tiles_out: Tensor, tiles: Tensor) -> Tensor:
    """Write ``tiles_out`` (n, C, T, T) over the tiles ``tiles`` (flat indices, as in
    :func:`gather_tiles`) of out (B, C, H, W) (in place in eager mode); parts of a tile past
    the map are dropped. Returns the map."""
    if uses_accelerator_path(out):
        return paste_tiles_indexed(out, tiles_out, tiles)
    height, width = out.shape[-2:]
    block = tiles_out.shape[-1]
    rows, cols = block_grid(height, width, block)
    for i, tile in enumerate(tiles.tolist()):
        b, rest = divmod(tile, rows * cols)
        top, left = (rest // cols) * block, (rest % cols) * block
        y1, x1 = min(top + block, height), min(left + block, width)
        out[b, :, top:y1, left:x1] = tiles_out[i, :, :y1 - top, :x1 - left]
    return out


def fast_path_conv(x: Tensor, fast_weight: Tensor, fast_bias: Optional[Tensor],
                   fast_dw: Optional[Tensor], padding: int) -> Tensor:
    """The fast path on x (B, C_in, H, W): the depthwise kernel ``fast_dw`` (C_in, 1, k, k), if
    given, with zero ``padding``, then the 1x1 convolution. Returns (B, C_out, H', W'): H' = H
    with ``padding`` (k - 1) / 2 or without ``fast_dw``, H - (k - 1) with ``padding`` 0."""
    if fast_dw is not None:
        x = F.conv2d(x, fast_dw, padding=padding, groups=x.shape[1])
    return F.conv2d(x, fast_weight, fast_bias)


def sparse_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], fast_weight: Tensor,
                  fast_bias: Optional[Tensor], decision: SparsityDecision, block: int,
                  dilation: int = 1, fast_dw: Optional[Tensor] = None) -> Tensor:
    """Slow path (the kxk convolution) on kept tiles, fast path (1x1, optionally after a
    depthwise 3x3) on pruned ones.

    Args:
        x: (B, C_in, H, W).
        weight, bias: the kxk convolution (k odd; stride 1, padding ``dilation * (k - 1) / 2``).
        fast_weight, fast_bias: the 1x1 fast path, (C_out, C_in, 1, 1) and (C_out,) or None.
        decision: over the tiles of x (``keep_mask`` (B, rows * cols), row-major, see
            :func:`block_grid`).
        block: tile size T.
        dilation: of the kxk convolution.
        fast_dw: (C_in, 1, k', k') depthwise kernel (k' odd, zero padding, dilation 1) run
            before the 1x1 fast path, or None.

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
    fast_halo = 0 if fast_dw is None else (fast_dw.shape[-1] - 1) // 2
    if k == num:
        return F.conv2d(x, weight, bias, padding=halo, dilation=dilation)
    if k == 0:
        return fast_path_conv(x, fast_weight, fast_bias, fast_dw, fast_halo)
    if k is None:
        slow = F.conv2d(x, weight, bias, padding=halo, dilation=dilation)
        fast = fast_path_conv(x, fast_weight, fast_bias, fast_dw, fast_halo)
        mask = expand_block_mask(decision.keep_mask, grid, block, height, width)
        dtype = torch.promote_types(slow.dtype, fast.dtype)
        return (mask * slow + (1 - mask) * fast).to(dtype)
    kept, pruned = decision.flat_rows()
    slow = F.conv2d(gather_tiles(x, kept, block, halo), weight, bias, dilation=dilation)
    fast = fast_path_conv(gather_tiles(x, pruned, block, fast_halo), fast_weight, fast_bias,
                          fast_dw, 0)
    dtype = torch.promote_types(slow.dtype, fast.dtype)
    out = slow.new_empty((batch, slow.shape[1], height, width), dtype=dtype)
    out = paste_tiles(out, slow.to(dtype), kept)
    return paste_tiles(out, fast.to(dtype), pruned)
