"""What turns a dense kxk convolution into a spatially sparse one: a score predictor that
decides which tiles of the map are kept, and the fast path that pruned tiles take (a 1x1
convolution, optionally after a depthwise 3x3 or plus a low-rank kxk convolution)."""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .decision import decide
from .gather import block_grid, check_tile_size
from .predictor import BlockScorePredictor, score_in_float32
from .schedule import check_keep_ratio
from .sparse_conv import sparse_conv2d

FAST_PATH_KINDS = ('1x1', 'dw3x3', 'lowrank')


class SparseConvGate(nn.Module):
    """Decides the kept tiles of a map and runs a kxk convolution sparsely on it.

    The convolution's own weights stay with their owner (an mmcv ``ConvModule``, an FPN level,
    an RPN head), so upstream checkpoints load unchanged; the gate adds ``score_predictor``
    (:class:`BlockScorePredictor`) and ``fast_path`` (a 1x1 convolution), plus ``fast_path_dw``
    (a depthwise 3x3 convolution run before it) with ``fast_path_kind='dw3x3'``, or
    ``fast_path_down`` and ``fast_path_up`` (a rank-r kxk convolution added to it) with
    ``fast_path_kind='lowrank'``. Decisions are
    made per ``block x block`` tile (see :mod:`.sparse_conv`) and in float32 whatever autocast
    does around them, so mixed precision keeps the same tiles.

    The fast path starts as the kxk kernel summed over its taps: on a locally constant input
    the 1x1 convolution then gives exactly what the kxk one gives, so a pruned position of a
    flat region starts close to its dense value. The depthwise 3x3 starts as the identity
    (centre tap 1), so the ``'dw3x3'`` fast path starts equal to the 1x1 one and can learn
    the 3x3 context of a small object inside a pruned tile (9 MACs per input channel and
    position more, counted by the FLOPs tools). The low-rank kxk convolution (``fast_path_down``
    C_in -> r, kxk, with the convolution's dilation; ``fast_path_up`` r -> C_out, 1x1) starts as
    the best rank-r approximation (truncated SVD) of what the 1x1 misses: the kxk kernel with
    the summed taps taken off its centre tap. So the ``'lowrank'`` fast path starts as close to
    the kxk convolution as rank r allows, equal to it at full rank, and costs
    r * (k * k * C_in + C_out) MACs per position more than the 1x1 (k * k * C_in * C_out for
    the kxk convolution itself).

    Args:
        in_channels, out_channels: of the convolution.
        keep_ratio: target fraction of kept tiles, in (0, 1].
        index: position of this gate among its owner's gates (recorded in decisions).
        level: the pyramid level of the map it gates (0 = the finest); recorded as the
            decision's ``stage``.
        source: the owner's name, recorded in decisions (e.g. ``'decode_head'``).
        block: tile size.
        score_dims: width of the predictor (:class:`BlockScorePredictor`).
        bias: whether the fast path has a bias.
        fast_path_kind: ``'1x1'`` (default), ``'dw3x3'`` (a depthwise 3x3, then the 1x1) or
            ``'lowrank'`` (the 1x1 plus a rank ``fast_path_rank`` kxk convolution).
        fast_path_rank: r of ``'lowrank'``, in [1, min(C_out, k * k * C_in)]; only with it.
        kernel_size: k of the convolution (for ``'lowrank'``).
        detail_cue, neighbour_bonus: options of the predictor that favour tiles holding small
            or thin things, or next to strongly kept ones (:class:`BlockScorePredictor`); off
            by default.
    """

    def __init__(self, in_channels: int, out_channels: int, keep_ratio: float, index: int = 0,
                 level: int = 0, source: str = '', block: int = 16,
                 score_dims: int = 64, bias: bool = True, fast_path_kind: str = '1x1',
                 detail_cue: bool = False, neighbour_bonus: float = 0.0,
                 fast_path_rank: Optional[int] = None, kernel_size: int = 3) -> None:
        super().__init__()
        name = f'{source or "a sparse conv"} (gate {index})'
        self.keep_ratio = check_keep_ratio(keep_ratio, name)
        if fast_path_kind not in FAST_PATH_KINDS:
            raise ValueError(f'fast_path_kind={fast_path_kind!r} of {name} must be one of '
                             f'{FAST_PATH_KINDS}.')
        full = min(out_channels, kernel_size * kernel_size * in_channels)
        if fast_path_kind == 'lowrank' and not (isinstance(fast_path_rank, int)
                                                and 1 <= fast_path_rank <= full):
            raise ValueError(f"fast_path_kind='lowrank' of {name} needs fast_path_rank, an "
                             f'integer in [1, {full}]; got {fast_path_rank!r}.')
        if fast_path_kind != 'lowrank' and fast_path_rank is not None:
            raise ValueError(f'fast_path_rank={fast_path_rank!r} of {name} applies only to '
                             f"fast_path_kind='lowrank' (got {fast_path_kind!r}): remove it "
                             "or set fast_path_kind='lowrank'.")
        self.index, self.level, self.source, self.block = index, level, source, block
        self.score_predictor = BlockScorePredictor(in_channels, score_dims, block, detail_cue,
                                                   neighbour_bonus)
        self.fast_path = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.fast_path_dw = None
        if fast_path_kind == 'dw3x3':
            self.fast_path_dw = nn.Conv2d(in_channels, in_channels, 3, padding=1,
                                          groups=in_channels, bias=False)
            nn.init.dirac_(self.fast_path_dw.weight, groups=in_channels)
        self.fast_path_down = self.fast_path_up = None
        if fast_path_kind == 'lowrank':
            self.fast_path_down = nn.Conv2d(in_channels, fast_path_rank, kernel_size,
                                            bias=False)
            self.fast_path_up = nn.Conv2d(fast_path_rank, out_channels, 1, bias=False)

    @torch.no_grad()
    def init_fast_path(self, weight: Tensor, bias: Optional[Tensor]) -> None:
        """Set the fast path to the kxk kernel ``weight`` (C_out, C_in, k, k) summed over its
        taps, and its bias to ``bias``; the depthwise 3x3, if any, to the identity; the
        low-rank kxk convolution, if any, to :func:`low_rank_residual` of ``weight``."""
        self.fast_path.weight.copy_(weight.sum(dim=(2, 3), keepdim=True))
        if self.fast_path_dw is not None:
            nn.init.dirac_(self.fast_path_dw.weight, groups=self.fast_path_dw.groups)
        if self.fast_path_down is not None:
            down, up = low_rank_residual(weight, self.fast_path_down.out_channels)
            self.fast_path_down.weight.copy_(down)
            self.fast_path_up.weight.copy_(up)
        if self.fast_path.bias is not None:
            if bias is None:
                self.fast_path.bias.zero_()
            else:
                self.fast_path.bias.copy_(bias)

    def forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                dilation: int = 1) -> Tensor:
        """Decide on the tiles of x (B, C_in, H, W) (:func:`~.decision.decide`, which
        records the decision; its ``hw_shape`` is the tile grid, and the predictor is skipped
        when the ratio keeps every tile), then run the kxk convolution (``weight``, ``bias``)
        sparsely: (B, C_out, H, W)."""
        decision = decide(lambda: score_in_float32(self.score_predictor, x), self.keep_ratio,
                          self.training, self.level, self.index,
                          block_grid(*x.shape[-2:], self.block), source=self.source, like=x)
        fast_dw = None if self.fast_path_dw is None else self.fast_path_dw.weight
        low_rank = None
        if self.fast_path_down is not None:
            low_rank = (self.fast_path_down.weight, self.fast_path_up.weight)
        return sparse_conv2d(x, weight, bias, self.fast_path.weight, self.fast_path.bias,
                             decision, self.block, dilation, fast_dw, low_rank)


@torch.no_grad()
def low_rank_residual(weight: Tensor, rank: int) -> Tuple[Tensor, Tensor]:
    """The best rank-``rank`` factors (truncated SVD) of what a 1x1 convolution with the summed
    taps misses of the kxk kernel ``weight`` (C_out, C_in, k, k), k odd: the kernel with the
    summed taps subtracted from its centre tap (zero on a locally constant input).

    Returns:
        down (r, C_in, k, k) and up (C_out, r, 1, 1), each carrying the square root of the
        singular values: ``up @ down`` is the truncated residual kernel.
    """
    out_channels, in_channels, k, _ = weight.shape
    residual = weight.float().clone()
    residual[:, :, k // 2, k // 2] -= weight.float().sum(dim=(2, 3))
    u, s, vh = torch.linalg.svd(residual.flatten(1), full_matrices=False)
    root = s[:rank].sqrt()
    up = (u[:, :rank] * root).view(out_channels, rank, 1, 1)
    down = (root[:, None] * vh[:rank]).view(rank, in_channels, k, k)
    return down.to(weight.dtype), up.to(weight.dtype)


def init_fast_path_on_load(gate: SparseConvGate, state_dict: dict, gate_prefix: str,
                           conv_prefix: str) -> None:
    """Called while ``state_dict`` is being loaded: when it holds the convolution
    (``<conv_prefix>weight`` / ``bias``) but not the gate's fast path (a dense upstream
    checkpoint), start the fast path from the checkpoint's kernel
    (:meth:`SparseConvGate.init_fast_path`). The fast path's keys still count as missing."""
    weight = state_dict.get(conv_prefix + 'weight')
    if weight is not None and gate_prefix + 'fast_path.weight' not in state_dict:
        gate.init_fast_path(weight, state_dict.get(conv_prefix + 'bias'))


def check_gate_args(owner: str, argument: str, chosen: Sequence, keep_ratios: Sequence[float],
                    block_size: int, num_levels: Optional[int] = None,
                    levels_of: str = '') -> None:
    """Validate the sparsity arguments of a module with gates (one keep ratio per chosen
    convolution or level, a positive tile size, and, with ``num_levels``, distinct increasing
    levels below it); each error names the argument and the fix.

    Args:
        owner: the module's name for the message (``'DynamicFPN'``).
        argument: the argument that chooses what is sparse (``'sparse_levels'``).
        chosen: its value.
        num_levels: how many levels there are, when ``chosen`` are levels.
        levels_of: what the levels are, for the message (``'the anchor generator'``).
    """
    if num_levels is not None and (list(chosen) != sorted(set(chosen))
                                   or not all(0 <= lv < num_levels for lv in chosen)):
        raise ValueError(f'{owner}: {argument}={tuple(chosen)} must be distinct, increasing '
                         f'levels in [0, {num_levels - 1}] (the levels of {levels_of}).')
    if len(keep_ratios) != len(chosen):
        raise ValueError(f'{owner}: keep_ratios={tuple(keep_ratios)} has {len(keep_ratios)} '
                         f'value(s) for {len(chosen)} entries of {argument}={tuple(chosen)}: '
                         f'give one ratio per entry of {argument}.')
    check_tile_size(block_size, f'{owner}: block_size')


def block_at_level(block_size: int, level: int) -> int:
    """Tile size at pyramid level ``level`` for ``block_size`` at level 0: halved per level (at
    least 1), so every tile covers the same image area."""
    return max(1, block_size >> level)
