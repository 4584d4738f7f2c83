"""Index movement of the sparse paths at inference: one gather of the kept windows or tiles,
one of the pruned ones, in-place writes of both outputs. Index maps that depend only on a shape
are cached (:func:`shape_cached`). Tiles move by one slice copy each in CPU eager mode, by
indexing ops on the accelerator path (:mod:`.accelerator`), with equal results (tested).
"""
from functools import lru_cache
from typing import Callable, Optional, Tuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .accelerator import is_tracing, uses_accelerator_path

HW = Tuple[int, int]
# (image, tile row, tile column) advanced indices of a (B, rows, cols, ...) tile view.
Coords = Tuple[Tensor, Tensor, Tensor]
T = TypeVar('T')


def shape_cached(build: Callable[..., T]) -> Callable[..., T]:
    """``build(*shape_args, device)`` memoised per arguments, built afresh while tracing (fake
    tensors must not be kept) and outside inference mode (training may reuse the maps)."""

    @lru_cache(maxsize=256)
    def cached(*args):
        with torch.inference_mode(False), torch.no_grad():
            return build(*args)

    def get(*args):
        return build(*args) if is_tracing() else cached(*args)

    get.__doc__ = build.__doc__
    return get


@shape_cached
def batch_offsets(batch: int, step: int, device: torch.device) -> Tensor:
    """(B, 1) long, ``b * step`` for each image b: where image b starts in a flattened
    (B * step, ...) tensor (shape-only, cached: do not write to it)."""
    return torch.arange(0, batch * step, step, device=device).unsqueeze(1)


@shape_cached
def pruned_log_probs(batch: int, num: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(B, N, 2) log-probabilities ``(-inf, 0)`` (pruned for certain) of the given dtype: what a
    nested decision records at the positions an earlier one pruned (shape-only, cached: do not
    write to it)."""
    log_probs = torch.zeros(batch, num, 2, dtype=dtype, device=device)
    log_probs[..., 0] = float('-inf')
    return log_probs


# ----------------------------------------------------------------------------------- tiles
def block_grid(height: int, width: int, block: int) -> HW:
    """(rows, columns) of ``block x block`` tiles (or windows) covering an H x W map (ceil)."""
    return -(-height // block), -(-width // block)


def check_tile_size(size: int, where: str) -> None:
    """Raise a ValueError naming ``where`` (``'DynamicFPN: block_size'``) unless the tile side
    ``size`` is >= 1."""
    if size < 1:
        raise ValueError(f'{where}={size} must be >= 1 (the side of a square tile, in '
                         'positions of the map).')


def pad_to_multiple(x: Tensor, multiple: int, halo: int = 0, value: float = 0.0,
                    channels_last: bool = False) -> Tensor:
    """x padded with ``value`` at the bottom and right so that H and W become multiples of
    ``multiple``, and by ``halo`` more on every side; x itself when nothing is added.

    x: (..., H, W), or (B, H, W, C) with ``channels_last`` -> the same layout, padded.
    """
    height, width = x.shape[-3:-1] if channels_last else x.shape[-2:]
    bottom, right = -height % multiple, -width % multiple
    pads = (halo, halo + right, halo, halo + bottom)
    if channels_last:
        pads = (0, 0) + pads
    return F.pad(x, pads, value=value) if any(pads) else x


def expand_block_mask(mask: Tensor, grid: HW, block: int, height: int, width: int) -> Tensor:
    """(B, rows * cols) tile mask -> (B, 1, H, W) position mask (each tile's value spread over
    its positions, cropped to the map)."""
    mask = mask.view(-1, 1, *grid)
    mask = mask.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)
    return mask[..., :height, :width]


def tile_coords(order: Tensor, cols: int, k: int) -> Tuple[Coords, Coords]:
    """(image, tile row, tile column) of the kept tiles (the first k of ``order`` (B, N)) and of
    the pruned ones, broadcastable to (B, k) and (B, N - k)."""
    image = batch_offsets(order.shape[0], 1, order.device)
    row, col = _tile_places(order.shape[1], cols, order.device)[:, order]
    return (image, row[:, :k], col[:, :k]), (image, row[:, k:], col[:, k:])


@shape_cached
def _tile_places(num: int, cols: int, device: torch.device) -> Tensor:
    """(2, N) long: the row and the column of each of the N tiles of a grid ``cols`` wide
    (row-major; shape-only, cached)."""
    index = torch.arange(num, device=device)
    return torch.stack([index.div(cols, rounding_mode='floor'), index.remainder(cols)])


def _tile_view(x: Tensor, block: int, halo: int) -> Tensor:
    """(B, rows, cols, C, T + 2 halo, T + 2 halo) strided view of the padded map of x."""
    size = block + 2 * halo
    view = pad_to_multiple(x, block, halo).unfold(2, size, block).unfold(3, size, block)
    return view.permute(0, 2, 3, 1, 4, 5)


def gather_tiles(x: Tensor, coords: Coords, block: int, halo: int) -> Tensor:
    """The tiles at ``coords`` (from :func:`tile_coords`, each (B, n)) of x (B, C, H, W), with
    a halo of ``halo`` positions (zeros outside the map): (B * n, C, T + 2 halo, T + 2 halo)."""
    if uses_accelerator_path(x):
        tiles = _tile_view(x, block, halo)[coords]
        return tiles.flatten(0, 1)
    channels, height, width = x.shape[1:]
    size = block + 2 * halo
    pairs = [(b, r * block - halo, c * block - halo)
             for b, r, c in zip(*(t.expand_as(coords[1]).flatten().tolist() for t in coords))]
    out = x.new_empty((len(pairs), channels, size, size))
    for i, (b, top, left) in enumerate(pairs):
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + size, height), min(left + size, width)
        if (y0, x0, y1, x1) != (top, left, top + size, left + size):
            out[i].zero_()  # a border tile: the part outside the map is padding
        out[i, :, y0 - top:y1 - top, x0 - left:x1 - left] = x[b, :, y0:y1, x0:x1]
    return out


def paste_tiles(out: Tensor, tiles: Tensor, coords: Coords) -> None:
    """Write ``tiles`` (B * n, C, T, T) in place over the tiles at ``coords`` (as in
    :func:`gather_tiles`) of ``out`` (B, C, rows * T, cols * T), a map padded to whole
    tiles."""
    batch, channels, height, width = out.shape
    block = tiles.shape[-1]
    if uses_accelerator_path(out):
        view = out.view(batch, channels, height // block, block, width // block, block)
        view = view.permute(0, 2, 4, 1, 3, 5)  # (B, rows, cols, C, T, T), a view of out
        view.index_put_(coords, tiles.view(*coords[1].shape, channels, block, block))
        return
    for i, (b, r, c) in enumerate(zip(*(t.expand_as(coords[1]).flatten().tolist()
                                        for t in coords))):
        out[b, :, r * block:(r + 1) * block, c * block:(c + 1) * block] = tiles[i]


# --------------------------------------------------------------------------------- windows
def _window_positions(hw_shape: HW, window_size: int, shift: int,
                      device: torch.device) -> Tensor:
    """(nW, T) position in the (H, W) map of each position of Swin's windows: the map padded
    at the bottom and right to multiples of ``window_size``, shifted by ``-shift`` and cut
    into windows (row-major); -1 at padding."""
    height, width = hw_shape
    ws = window_size
    rows, cols = block_grid(height, width, ws)
    index = torch.arange(height * width, device=device).view(height, width)
    index = pad_to_multiple(index, ws, value=-1)
    if shift:
        index = torch.roll(index, shifts=(-shift, -shift), dims=(0, 1))
    return index.view(rows, ws, cols, ws).permute(0, 2, 1, 3).reshape(rows * cols, ws * ws)


@shape_cached
def window_sources(batch: int, hw_shape: HW, window_size: int, shift: int,
                   device: torch.device) -> Tuple[Tensor, Optional[Tensor]]:
    """The rows of the (B*H*W, C) tokens of B (H, W) maps that each position of Swin's windows
    (pad, cyclic shift by ``-shift``, partition) reads and writes.

    Returns:
        ``rows`` (3, B, nW, T) long: ``[0]`` the row read (row 0 at padding, which attention
        masks out), ``[1]`` the row written (the spare row B*H*W at padding), ``[2]`` 1 at
        real positions, 0 at padding (so that one gather, :func:`window_rows`, carries all
        three); ``valid`` (nW, T, 1) float, 0 at padding (``None`` without padding).
    """
    positions = hw_shape[0] * hw_shape[1]
    index = _window_positions(hw_shape, window_size, shift, device)
    real = index >= 0
    offsets = torch.arange(batch, device=device).view(-1, 1, 1) * positions
    read = index.clamp_min(0) + offsets
    write = torch.where(real, index + offsets, batch * positions)
    valid = None
    if hw_shape[0] % window_size or hw_shape[1] % window_size:
        valid = real.unsqueeze(-1).float()
    return torch.stack([read, write, real.long().expand_as(read)]), valid


def window_rows(rows: Tensor, order: Tensor) -> Tensor:
    """The rows (from :func:`window_sources`, (3, B, nW, T)) of the windows ``order`` (B, n)
    of each image: (3, B, n, T)."""
    index = order.view(1, *order.shape, 1).expand(rows.shape[0], -1, -1, rows.shape[-1])
    return rows.gather(2, index)


@shape_cached
def shifted_overlap(grid: HW, window_size: int, shift: int, hw_shape: HW,
                    device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    """How the windows of the map shifted by ``-shift`` overlap the regular ones.

    Returns:
        ``overlap`` (nW, nW) float64, (i, j) the real positions (of the (H, W) = ``hw_shape``
        map) of regular window j in shifted window i; the same in float32; ``size`` (nW,)
        float64, the real positions of each shifted window (at least 1).
    """
    index = _window_positions(hw_shape, window_size, shift, device)
    rows, cols = grid
    # The regular window of each real position, for every position of each shifted window.
    row, col = index.div(hw_shape[1], rounding_mode='floor'), index.clamp_min(0) % hw_shape[1]
    owner = (row.clamp_min(0) // window_size) * cols + col // window_size
    weight = (index >= 0).double()
    overlap = torch.zeros(rows * cols, rows * cols, dtype=torch.float64, device=device)
    overlap = overlap.scatter_add_(1, owner, weight)
    return overlap, overlap.float(), overlap.sum(1).clamp_min(1.0)
