"""The light score predictor that rates every spatial location (docs/method.md, 'Score
predictor')."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .weight_init import trunc_normal_init
from .decision import keep_margin
from .gather import HW, check_tile_size


def score_in_float32(predictor: nn.Module, x: Tensor, *args: Optional[Tensor]) -> Tensor:
    """``predictor(x, *args)`` with autocast disabled and the tensors cast to float32, whatever
    surrounds the call: float32 log-probabilities, so decisions do not depend on the compute
    dtype (docs/method.md, 'Score predictor')."""
    with torch.autocast(x.device.type, enabled=False):
        return predictor(x.float(), *(a if a is None else a.float() for a in args))


class ScorePredictor(nn.Module):
    """Scores each position of a feature map with log-probabilities of (keep, prune), from a
    local and a global (averaged) half of ``in_conv``'s channels through ``out_conv``
    (docs/method.md, 'Score predictor'). Works for any number of positions.

    Args:
        embed_dims: C, the channels of the scored feature map.
        eps: LayerNorm epsilon.
    """

    def __init__(self, embed_dims: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.in_conv = nn.Sequential(
            nn.LayerNorm(embed_dims, eps=eps), nn.Linear(embed_dims, embed_dims), nn.GELU())
        self.out_conv = nn.Sequential(
            nn.Linear(embed_dims, embed_dims // 2), nn.GELU(),
            nn.Linear(embed_dims // 2, embed_dims // 4), nn.GELU(),
            nn.Linear(embed_dims // 4, 2), nn.LogSoftmax(dim=-1))
        self.init_weights()

    def init_weights(self) -> None:
        trunc_normal_init(self)

    def forward(self, x: Tensor, policy: Optional[Tensor] = None) -> Tensor:
        """x: (B, N, C) tokens -> (B, N, 2) log-probabilities (``[..., 0]`` = keep). With a
        ``policy`` (B, N, 1) keep mask (plain ViTs) the global half averages kept tokens only."""
        x = self.in_conv(x)
        half = x.shape[-1] // 2
        local, global_ = x[..., :half], x[..., half:]
        if policy is None:
            global_ = global_.mean(dim=1, keepdim=True)
        else:
            policy = policy.to(global_.dtype)
            global_ = (global_ * policy).sum(dim=1, keepdim=True) / policy.sum(
                dim=1, keepdim=True).clamp_min(1e-6)
        x = torch.cat([local, global_.expand(-1, x.shape[1], -1)], dim=-1)
        return self.out_conv(x)


def detail_cue(x: Tensor, block: int, eps: float = 1e-12) -> Tensor:
    """x: (B, C, H, W) -> (B, rows * cols) scale-free high-frequency cue of each row-major
    ``block x block`` tile (ceil mode): ``log(1 + energy / mean energy)``, the energy of a
    position being the channel mean of its squared differences to the next position right and
    below (0 past the border), averaged per tile, the mean over the image's tiles. Exactly 0 on
    a constant map."""
    dx = F.pad((x[..., :, 1:] - x[..., :, :-1]).pow(2).mean(dim=1, keepdim=True), (0, 1))
    dy = F.pad((x[..., 1:, :] - x[..., :-1, :]).pow(2).mean(dim=1, keepdim=True), (0, 0, 0, 1))
    energy = dx + dy
    if block > 1:
        energy = F.avg_pool2d(energy, block, ceil_mode=True)
    energy = energy.flatten(1)
    return torch.log1p(energy / energy.mean(dim=1, keepdim=True).clamp_min(eps))


def neighbour_max(margin: Tensor, grid: HW) -> Tensor:
    """(B, rows * cols) keep margins -> the largest margin of each tile's 3x3 neighbourhood on
    the ``grid`` of tiles (the tile itself included), (B, rows * cols)."""
    grid_margin = margin.view(-1, 1, *grid)
    return F.max_pool2d(grid_margin, 3, stride=1, padding=1).flatten(1)


def margin_log_probs(margin: Tensor) -> Tensor:
    """(B, n) keep margins ``log p(keep) - log p(prune)`` -> (B, n, 2) log-probabilities with
    that margin (``[..., 0]`` = keep)."""
    return F.log_softmax(torch.stack([margin, torch.zeros_like(margin)], dim=-1), dim=-1)


class BlockScorePredictor(nn.Module):
    """Scores the ``block x block`` tiles of a (B, C, H, W) map: each tile average-pooled (ceil
    mode), projected to ``embed_dims`` (1x1) and scored by a :class:`ScorePredictor`.

    Two options favour tiles holding small or thin things (docs/method.md, 'Heads and
    necks'). Both add to the keep margin ``log p(keep) - log p(prune)`` of each tile, so
    training and inference rank by the same scores and the keep ratio is unchanged; both off,
    the output is the :class:`ScorePredictor`'s.

    Args:
        in_channels: C of the scored map.
        embed_dims: width of the projection and of the score MLP, >= 4.
        block: tile size, >= 1 (1 scores every position).
        detail_cue: add ``detail_weight`` (a learned scalar, starting at 1) times the tile's
            :func:`detail_cue`, centred over the image's tiles.
        neighbour_bonus: b >= 0; adds b times the largest margin of the tile's 3x3
            neighbourhood (:func:`neighbour_max`); 0 (default) is off.

    Raises:
        ValueError: for a bad ``block``, ``embed_dims`` or ``neighbour_bonus``.
    """

    def __init__(self, in_channels: int, embed_dims: int = 64, block: int = 16,
                 detail_cue: bool = False, neighbour_bonus: float = 0.0) -> None:
        super().__init__()
        check_tile_size(block, 'BlockScorePredictor: block')
        if embed_dims < 4:
            raise ValueError(f'BlockScorePredictor: embed_dims={embed_dims} must be >= 4.')
        if neighbour_bonus < 0:
            raise ValueError(f'BlockScorePredictor: neighbour_bonus={neighbour_bonus} must be '
                             '>= 0 (0 turns it off).')
        self.block = block
        self.neighbour_bonus = float(neighbour_bonus)
        self.proj = nn.Conv2d(in_channels, embed_dims, 1)
        self.score = ScorePredictor(embed_dims)
        trunc_normal_init(self, (nn.Linear, nn.Conv2d))
        self.detail_weight = nn.Parameter(torch.ones(())) if detail_cue else None

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> (B, rows * cols, 2) log-probabilities per tile, row-major
        (``[..., 0]`` = keep)."""
        pooled = F.avg_pool2d(x, self.block, ceil_mode=True) if self.block > 1 else x
        log_probs = self.score(self.proj(pooled).flatten(2).transpose(1, 2))
        if self.detail_weight is None and not self.neighbour_bonus:
            return log_probs
        margin = keep_margin(log_probs)
        if self.detail_weight is not None:
            cue = detail_cue(x, self.block)
            margin = margin + self.detail_weight * (cue - cue.mean(dim=1, keepdim=True))
        if self.neighbour_bonus:
            margin = margin + self.neighbour_bonus * neighbour_max(margin, pooled.shape[-2:])
        return margin_log_probs(margin)
