"""Window-granular decisions: a window of a map is the unit that is kept or pruned.

A map of H x W positions, padded at the bottom and right to multiples of the window size ``ws``
(as Swin pads it for attention), is a grid of ``rows x cols`` windows. A predictor scores each
window from its pooled positions (:func:`pool_windows`) and a decision keeps windows.

Swin's shifted blocks partition the cyclically shifted map, whose windows straddle four
windows of the regular grid. :func:`shifted_decision` carries a regular-grid decision over to
the shifted grid with the same number of kept windows per image: the shifted windows that
contain the most kept positions, ties broken by the predictor's keep margin
(``log p(keep) - log p(prune)``, which does not saturate) averaged over the window's positions
(real positions only: padding counts for neither). In training the mask
it returns is hard (the same rule applied to each image's own number of kept windows) with the
straight-through gradient of the kept fraction of each shifted window, so the shifted blocks
train the predictor too.
"""
from dataclasses import replace
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .decision import SparsityDecision, keep_margin, rank
from .gather import shifted_overlap

HW = Tuple[int, int]


def window_grid(hw_shape: HW, window_size: int) -> HW:
    """(rows, cols) of windows covering an (H, W) map padded to multiples of ``window_size``."""
    return (-(-hw_shape[0] // window_size), -(-hw_shape[1] // window_size))


def pool_windows(tokens: Tensor, hw_shape: HW, window_size: int) -> Tuple[Tensor, HW]:
    """Average the positions of every window (padding excluded).

    Args:
        tokens: (B, H*W, C), row-major positions of an (H, W) map.
        hw_shape: (H, W).
        window_size: ws.

    Returns:
        (B, rows*cols, C) window means (row-major windows) and the grid (rows, cols).
    """
    batch, _, channels = tokens.shape
    grid = tokens.transpose(1, 2).reshape(batch, channels, *hw_shape)
    # ceil_mode pools the partial last row / column over its real positions only.
    pooled = F.avg_pool2d(grid, window_size, ceil_mode=True)
    return pooled.flatten(2).transpose(1, 2), (pooled.shape[2], pooled.shape[3])


def shifted_order(kept: Tensor, margin: Tensor) -> Tensor:
    """(B, n) shifted windows ranked by kept-position count (descending), ties by mean keep
    margin (descending), then by position: a lexicographic order, as two stable sorts (by
    margin, then by count). The margin does not saturate where the keep probability does
    (see :func:`~.decision.keep_margin`), so confident windows still rank by the predictor.

    Args:
        kept: (B, n) kept positions per shifted window (rounded to whole counts here).
        margin: (B, n) mean keep margin over each shifted window's real positions.
    """
    by_margin = rank(margin)
    counts = torch.round(kept).gather(1, by_margin)
    return by_margin.gather(1, rank(counts))


def shifted_decision(decision: SparsityDecision, window_size: int, shift: int,
                     hw_shape: HW) -> SparsityDecision:
    """The decision over the windows of the map shifted by ``-shift`` that corresponds to
    ``decision`` (over the regular windows of the same padded map); see the module docstring.
    Only the real positions of the (H, W) = ``hw_shape`` map count, padding does not.

    Returns ``decision`` itself for ``shift == 0`` or when it keeps every window without
    scores.
    """
    if shift == 0 or decision.log_probs is None:
        return decision
    mask = decision.keep_mask
    # (i, j): real positions of regular window j in shifted window i (shape-only, cached).
    overlap, overlap32, size = shifted_overlap(tuple(decision.hw_shape), window_size, shift,
                                               tuple(hw_shape), mask.device)
    kept = mask @ overlap32.T
    # Summed in float64 (exact for float32 margins of similar magnitude, in any summation
    # order): windows whose means are equal (e.g. shifted windows straddling the same regular
    # windows alike) stay exactly tied in every runtime, so the tie-break by position decides
    # them alike (ONNX Runtime included).
    margin = keep_margin(decision.log_probs.detach()).double() @ overlap.T / size
    order = shifted_order(kept.detach(), margin.float())
    if decision.num_keep is not None:
        k = decision.num_keep
        hard = torch.zeros_like(mask).scatter_(1, order[:, :k], 1.0)
        return replace(decision, keep_mask=hard, order=order)
    # Training: each image keeps as many shifted windows as it keeps regular ones.
    counts = mask.detach().sum(dim=1, keepdim=True)
    ranks = torch.argsort(order, dim=1)
    hard = (ranks < counts).to(mask.dtype)
    kept_fraction = kept / size.float()
    straight_through = hard + kept_fraction - kept_fraction.detach()
    return replace(decision, keep_mask=straight_through)
