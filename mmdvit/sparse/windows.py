"""Window-granular decisions: the attention window is the unit kept or pruned, on the grid of
windows of the map padded to multiples of the window size (docs/method.md, 'Window granularity
(Swin) and every stage sparse')."""
from dataclasses import replace
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .accelerator import is_tracing
from .decision import SparsityDecision, keep_margin, rank
from .gather import HW, shifted_overlap


def pool_windows(tokens: Tensor, hw_shape: HW, window_size: int) -> Tuple[Tensor, HW]:
    """tokens (B, H*W, C) of an (H, W) = ``hw_shape`` map -> (B, rows*cols, C) means of the
    real positions of each window (row-major) and the grid (rows, cols)."""
    batch, _, channels = tokens.shape
    grid = tokens.transpose(1, 2).reshape(batch, channels, *hw_shape)
    # ceil_mode pools the partial last row / column over its real positions only.
    pooled = F.avg_pool2d(grid, window_size, ceil_mode=True)
    return pooled.flatten(2).transpose(1, 2), (pooled.shape[2], pooled.shape[3])


def shifted_order(kept: Tensor, margin: Tensor) -> Tensor:
    """(B, n) shifted windows ranked by kept-position count (descending), ties by mean keep
    margin (descending), then by position (two stable sorts).

    Args:
        kept: (B, n) kept positions per shifted window, whole counts.
        margin: (B, n) mean keep margin over each shifted window's real positions.
    """
    by_margin = rank(margin)
    return by_margin.gather(1, rank(kept.gather(1, by_margin)))


def _window_means(margin: Tensor, overlap: Tensor, size: Tensor) -> Tensor:
    """(B, N) float32 keep margins -> (B, n) float32 means over the real positions of each
    shifted window (``overlap``, ``size`` from :func:`~.gather.shifted_overlap`).

    Summed and divided in float64, so that equal means stay exactly tied in every runtime (ONNX
    Runtime included) and the tie-break by position decides them alike; the division writes
    float32 (the rounding of ``.float()``, without a separate cast) except while tracing,
    where ``out=`` is not recorded.
    """
    sums = margin.double() @ overlap.T
    if is_tracing():
        return (sums / size).float()
    return torch.div(sums, size, out=margin.new_empty(sums.shape))


def shifted_decision(decision: SparsityDecision, window_size: int, shift: int,
                     hw_shape: HW) -> SparsityDecision:
    """Carry ``decision`` (over the regular windows of the padded (H, W) = ``hw_shape`` map) to
    the windows of the map shifted by ``-shift``, keeping as many windows per image, ranked by
    :func:`shifted_order` (kept real positions counted, padding not).

    Returns:
        ``decision`` itself for ``shift == 0`` or when it keeps every window without scores.
        At inference a decision with the same ``num_keep`` (its mask built when read); in
        training a hard mask with the straight-through gradient of each shifted window's kept
        fraction, so shifted blocks train the predictor too.
    """
    if shift == 0 or decision.log_probs is None:
        return decision
    margin = decision.margin
    if margin is None:
        margin = keep_margin(decision.log_probs.detach())
    overlap, overlap32, size = shifted_overlap(tuple(decision.hw_shape), window_size, shift,
                                               tuple(hw_shape), margin.device)
    margin = _window_means(margin, overlap, size)
    k = decision.num_keep
    if k is not None:
        # The kept real positions of each shifted window: the overlap rows of the kept regular
        # windows summed (whole numbers, exact; from the mask for a decision without order).
        kept = (decision.keep_mask @ overlap32.T if decision.order is None
                else overlap32.T[decision.order[:, :k]].sum(dim=1))
        return replace(decision, keep_mask=None, order=shifted_order(kept, margin),
                       margin=None)
    # Training: each image keeps as many shifted windows as it keeps regular ones (the hard
    # mask may be off 0 / 1 by rounding: the counts are rounded).
    mask = decision.keep_mask
    kept = mask @ overlap32.T
    order = shifted_order(torch.round(kept.detach()), margin)
    counts = mask.detach().sum(dim=1, keepdim=True)
    ranks = torch.argsort(order, dim=1)
    hard = (ranks < counts).to(mask.dtype)
    kept_fraction = kept / size.float()
    straight_through = hard + kept_fraction - kept_fraction.detach()
    return replace(decision, keep_mask=straight_through)
