"""Swin Transformer building blocks with mmseg's parameter names, plus the dynamic block.

mmseg's ``PatchEmbed``, ``PatchMerging`` and ``WindowMSA`` and mmcv's ``FFN`` are used
unchanged; mmdvit owns the shifting, padding and window partitioning around the attention
(its sparse paths partition once and route whole windows) and the block (slow / fast paths).
Key layout (as mmseg's ``SwinTransformer``): ``patch_embed.projection``, ``patch_embed.norm``,
``blocks.j.attn.w_msa.{qkv,proj,relative_position_bias_table,relative_position_index}``,
``blocks.j.norm{1,2}``, ``blocks.j.ffn.layers.{0.0,1}``, ``downsample.{norm,reduction}``;
the dynamic block adds ``blocks.j.fast_path.{0,1}`` (LayerNorm, Linear).
"""
from typing import Optional, Tuple

import torch
from mmcv.cnn.bricks import DropPath
from mmcv.cnn.bricks.transformer import FFN
from mmseg.models.backbones.swin import WindowMSA
from torch import Tensor, nn

from ...sparse import (HW, SparsityDecision, block_grid, pad_to_multiple, route_tokens,
                       route_windows, shape_cached, shifted_decision, trunc_normal_init,
                       window_rows, window_sources)


def to_pair(value, name: str) -> HW:
    """An int or a sequence of one or two ints -> (H, W); anything else raises."""
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) in (1, 2) and all(
            isinstance(v, int) for v in value):
        return (value[0], value[-1])
    raise ValueError(f'{name}={value!r}: give an int or a tuple of one or two ints (H, W).')


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """(B, H, W, C) -> (B * num_windows, window_size, window_size, C)."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window_size, window_size, width // window_size, window_size,
               channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, channels)


def window_reverse(windows: Tensor, height: int, width: int) -> Tensor:
    """(B * num_windows, ws, ws, C) -> (B, H, W, C)."""
    window_size, channels = windows.shape[1], windows.shape[-1]
    batch = windows.shape[0] // ((height // window_size) * (width // window_size))
    x = windows.view(batch, height // window_size, width // window_size, window_size,
                     window_size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


def shifted_window_mask(height: int, width: int, window_size: int, shift_size: int,
                        device: torch.device) -> Tensor:
    """Attention mask for shifted windows of a padded (H, W) map.

    Returns:
        (num_windows, ws*ws, ws*ws) with 0 where two positions share a region, -100 elsewhere.
    """
    img_mask = torch.zeros((1, height, width, 1), device=device)
    slices = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    region = 0
    for h in slices:
        for w in slices:
            img_mask[:, h, w, :] = region
            region += 1
    windows = window_partition(img_mask, window_size).reshape(-1, window_size * window_size)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


_cached_window_mask = shape_cached(shifted_window_mask)


class ShiftWindowMSA(nn.Module):
    """(Shifted) window attention over an NHWC map of any size (padded inside, cropped after).

    Args:
        shift_size: cyclic shift; 0 for regular windows.
        pad_small_map: True (mmseg): a map no larger than a window is padded and shifted like
            any other. False (official Swin, mmpretrain, timm): a map exactly one window wide
            is not shifted, and a smaller one raises.
        Others as mmseg's ``WindowMSA`` (used unchanged as ``w_msa``; mmdvit owns the
        shifting, padding and partitioning around it, which its sparse paths reuse).
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, shift_size: int,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 pad_small_map: bool = True) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f'shift_size={shift_size} must be in [0, window_size={window_size}).')
        self.window_size = window_size
        self.shift_size = shift_size
        self.pad_small_map = pad_small_map
        self.w_msa = WindowMSA(embed_dims, num_heads, (window_size, window_size), qkv_bias,
                               qk_scale, attn_drop_rate, proj_drop_rate)

    def effective_shift(self, hw_shape: HW) -> int:
        """The shift used for an (H, W) map (0 for a one-window map without ``pad_small_map``).

        Raises:
            ValueError: a map smaller than a window without ``pad_small_map``.
        """
        ws = self.window_size
        if not self.pad_small_map and min(hw_shape) <= ws:
            if min(hw_shape) < ws:
                raise ValueError(f'feature map {hw_shape[0]}x{hw_shape[1]} is smaller than the '
                                 f'window ({ws}): set pad_small_map=True or use larger inputs.')
            return 0
        return self.shift_size

    def partition(self, x: Tensor, hw_shape: HW, shift: int) -> Tuple[Tensor, HW]:
        """Pad, shift by ``-shift`` and cut into windows.

        x: (B, H*W, C) -> windows (B, nW, ws*ws, C), row-major over the padded map's window
        grid, and the padded (H', W').
        """
        batch, _, channels = x.shape
        ws = self.window_size
        x = pad_to_multiple(x.reshape(batch, *hw_shape, channels), ws, channels_last=True)
        padded = (x.shape[1], x.shape[2])
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        return window_partition(x, ws).reshape(batch, -1, ws * ws, channels), padded

    def merge(self, windows: Tensor, hw_shape: HW, padded: HW, shift: int) -> Tensor:
        """Inverse of :meth:`partition`: (B, nW, ws*ws, C) -> (B, H*W, C)."""
        batch, channels = windows.shape[0], windows.shape[-1]
        ws = self.window_size
        x = window_reverse(windows.reshape(-1, ws, ws, channels), *padded)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        height, width = hw_shape
        return x[:, :height, :width, :].reshape(batch, height * width, channels)

    def attention_mask(self, padded: HW, shift: int, x: Tensor,
                       cached: bool = False) -> Optional[Tensor]:
        """(nW, ws*ws, ws*ws) mask of the shifted windows of a padded map, ``None`` unshifted.

        ``cached``: kept per shape (:func:`~mmdvit.sparse.gather.shape_cached`), as the sparse
        blocks keep their index maps; the dense block builds it at every call, as mmseg's Swin
        does."""
        if not shift:
            return None
        build = _cached_window_mask if cached else shifted_window_mask
        return build(*padded, self.window_size, shift, x.device).to(x.dtype)

    def forward(self, x: Tensor, hw_shape: HW, cached: bool = False) -> Tensor:
        """x: (B, H*W, C) -> (B, H*W, C); ``cached``: as :meth:`attention_mask`."""
        shift = self.effective_shift(hw_shape)
        windows, padded = self.partition(x, hw_shape, shift)
        batch, num, tokens, channels = windows.shape
        out = self.w_msa(windows.view(-1, tokens, channels),
                         self.attention_mask(padded, shift, x, cached))
        return self.merge(out.view(batch, num, tokens, channels), hw_shape, padded, shift)


class DynamicSwinBlock(nn.Module):
    """A Swin block with a slow path for kept positions and a fast path (``LayerNorm ->
    Linear``) for pruned ones. Without a decision (dense blocks, or ``sparse=False``) it is
    exactly mmseg's ``SwinBlock``.

    - Token decisions (``decision.window_size is None``, the published method): only the FFN
      is split; window attention runs on every position.
    - Window decisions: a kept window runs the whole block (window attention, then FFN) as a
      rectangular batch of kept windows; a pruned window skips attention and its positions take
      ``x + fast_path(x)``. Shifted blocks use the decision carried over to the shifted window
      grid (:func:`~mmdvit.sparse.shifted_decision`).

    Args:
        sparse: build the fast path (the block runs at or after a predictor).
        pad_small_map: see :class:`ShiftWindowMSA`.
        Others as mmseg's ``SwinBlock``.
    """

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int,
                 window_size: int = 7, shift: bool = False, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, sparse: bool = False,
                 pad_small_map: bool = True, with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = ShiftWindowMSA(embed_dims, num_heads, window_size,
                                   window_size // 2 if shift else 0, qkv_bias, qk_scale,
                                   attn_drop_rate, drop_rate, pad_small_map)
        self.norm2 = nn.LayerNorm(embed_dims)
        # mmcv's FFN (as mmseg), returning the residual branch only: the block adds the
        # shortcut and drop path itself (the fast path shares them).
        self.ffn = FFN(embed_dims, feedforward_channels, ffn_drop=drop_rate, add_identity=False,
                       act_cfg=dict(type='GELU'))
        self.drop_path = DropPath(drop_path_rate)
        self.fast_path = nn.Sequential(nn.LayerNorm(embed_dims),
                                       nn.Linear(embed_dims, embed_dims)) if sparse else None

    def slow(self, x: Tensor) -> Tensor:
        """Slow path residual of token decisions: ``FFN(LN(x))``. x: (B, n, C)."""
        return self.ffn(self.norm2(x))

    def forward(self, x: Tensor, hw_shape: HW,
                decision: Optional[SparsityDecision] = None) -> Tensor:
        """x: (B, H*W, C) -> (B, H*W, C)."""

        def inner(x: Tensor) -> Tensor:
            if decision is not None and self.fast_path is None:
                raise RuntimeError('a decision reached a block built without a fast path')
            windows = decision is not None and decision.window_size is not None
            if windows and decision.num_keep != self.window_count(hw_shape, decision):
                return self.forward_windows(x, hw_shape, decision)
            # A sparse block keeps the shifted-window mask per shape, as its index maps.
            x = x + self.drop_path(self.attn(self.norm1(x), hw_shape, decision is not None))
            if decision is None or windows:
                # A window decision keeping every window is the dense block, whose FFN skips
                # the padding of the windows.
                residual = self.slow(x)
            else:
                residual = route_tokens(x, self.slow, self.fast_path, decision)
            return x + self.drop_path(residual).to(x.dtype)

        if self.with_cp and x.requires_grad:
            return torch.utils.checkpoint.checkpoint(inner, x, use_reentrant=False)
        return inner(x)

    def window_count(self, hw_shape: HW, decision: SparsityDecision) -> int:
        """The number of windows of the (H, W) map, checked against the window ``decision``.

        Raises:
            ValueError: the decision's window size or grid is not this block's.
        """
        ws = self.attn.window_size
        if decision.window_size != ws:
            raise ValueError(f'a decision over {decision.window_size}-position windows reached '
                             f'a block with window_size={ws}')
        grid = block_grid(*hw_shape, ws)
        if tuple(decision.hw_shape) != grid:
            raise ValueError(f'a decision over a {tuple(decision.hw_shape)} window grid reached '
                             f'a block whose {hw_shape[0]}x{hw_shape[1]} map has '
                             f'{grid[0]}x{grid[1]} windows')
        return grid[0] * grid[1]

    def forward_windows(self, x: Tensor, hw_shape: HW, decision: SparsityDecision) -> Tensor:
        """The block under a window decision over the regular windows of the padded map that
        does not keep every window, already checked by :meth:`window_count` (:meth:`forward`
        runs a decision keeping every window as the dense block).

        x: (B, H*W, C) -> (B, H*W, C).
        """
        attn = self.attn
        ws = attn.window_size
        grid = decision.hw_shape
        shift = attn.effective_shift(hw_shape)
        decision = shifted_decision(decision, ws, shift, hw_shape)
        mask = attn.attention_mask((grid[0] * ws, grid[1] * ws), shift, x, cached=True)
        if decision.num_keep in (None, 0):
            return self.forward_windows_merged(x, hw_shape, shift, mask, decision)
        return self.forward_windows_gathered(x, hw_shape, shift, mask, decision)

    def forward_windows_gathered(self, x: Tensor, hw_shape: HW, shift: int,
                                 mask: Optional[Tensor], decision: SparsityDecision) -> Tensor:
        """:meth:`forward_windows` at inference, keeping some windows and pruning others: one
        gather of every window (kept first) through the cached window map of the padded,
        shifted map, and in-place writes of both paths' outputs.

        x: (B, H*W, C) -> (B, H*W, C); ``mask``: the attention mask of the shifted windows.
        """
        attn = self.attn
        k, num = decision.num_keep, decision.order.shape[1]
        batch, positions, channels = x.shape
        rows, valid = window_sources(batch, tuple(hw_shape), attn.window_size, shift, x.device)
        order = decision.order
        read, write, real = window_rows(rows, order)  # (B, nW, T) each, kept windows first
        # Every window of every image, kept ones first: (B, nW, T, C), one gather.
        windows = x.reshape(batch * positions, channels).index_select(0, read.flatten())
        windows = windows.view(batch, num, -1, channels)
        # Kept windows: the whole block on a batch of windows.
        w = windows[:, :k].flatten(0, 1)  # (B * k, T, C)
        h = self.norm1(w)
        if valid is not None:
            h = h * real[:, :k].flatten(0, 1).unsqueeze(-1)  # attention sees zeros at padding
        w = w + attn.w_msa(h, None if mask is None else mask[order[:, :k]].flatten(0, 1))
        w = w + self.ffn(self.norm2(w))
        # Pruned windows: x + fast_path(x), position-wise.
        t = windows[:, k:]
        t = t + self.fast_path(t).to(t.dtype)
        out = w.new_empty((batch * positions + (valid is not None), channels))
        out.index_copy_(0, write[:, :k].flatten(), w.flatten(0, 1))
        out.index_copy_(0, write[:, k:].flatten(), t.flatten(0, 2).to(w.dtype))
        return out[:batch * positions].view(batch, positions, channels)

    def forward_windows_merged(self, x: Tensor, hw_shape: HW, shift: int,
                               mask: Optional[Tensor], decision: SparsityDecision) -> Tensor:
        """:meth:`forward_windows` in training (one merged stream of both paths, weighted by
        the straight-through window mask) and for decisions that keep no window.

        x: (B, H*W, C) -> (B, H*W, C); ``mask``: the attention mask of the shifted windows.
        """
        attn = self.attn
        windows, padded = attn.partition(x, hw_shape, shift)
        batch, num, tokens, channels = windows.shape
        # Attention sees zeros at padded positions (as the dense block, which pads after norm1).
        valid = window_sources(1, tuple(hw_shape), attn.window_size, shift, x.device)[1]

        def slow(w: Tensor) -> Tensor:
            """w: (B, nW, T, C), every window of every image."""
            h = self.norm1(w)
            if valid is not None:
                h = h * valid
            out = attn.w_msa(h.view(-1, tokens, channels), mask).view(batch, num * tokens,
                                                                       channels)
            # Drop path per image, as in the dense block.
            y = w.view(batch, num * tokens, channels) + self.drop_path(out)
            y = y + self.drop_path(self.ffn(self.norm2(y)))
            return y.view_as(w)

        def fast(t: Tensor) -> Tensor:
            return t + self.drop_path(self.fast_path(t)).to(t.dtype)

        out = route_windows(windows, slow, fast, decision)
        return attn.merge(out, hw_shape, padded, shift)


def init_swin_weights(module: nn.Module) -> None:
    """Default initialisation (as mmseg's Swin without a checkpoint): truncated normal
    (std 0.02) linear weights, zero biases, unit LayerNorms, truncated-normal position bias
    tables; patch-embedding convolutions keep PyTorch's default."""
    trunc_normal_init(module)
    for m in module.modules():
        if isinstance(m, WindowMSA):
            nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)
