"""The light score predictor that rates every spatial location (docs/method.md, 'Score
predictor')."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..weight_init import trunc_normal_init


def score_in_float32(predictor: nn.Module, x: Tensor, *args: Optional[Tensor]) -> Tensor:
    """Run a predictor in float32 with autocast disabled, whatever surrounds the call.

    Decisions (scores, Gumbel draws, top-k) must not depend on the compute dtype: under bf16 /
    fp16 autocast, rounded scores reorder near-tied positions and change which ones are kept.
    The tensor arguments are cast to float32 (the predictor's weights are float32); the result
    is float32 log-probabilities.
    """
    with torch.autocast(x.device.type, enabled=False):
        return predictor(x.float(), *(a if a is None else a.float() for a in args))


class ScorePredictor(nn.Module):
    """Scores each position of a feature map with log-probabilities of (keep, prune).

    ``in_conv`` embeds every position; half of the channels stay local, the other half are
    averaged over positions (a global summary) and broadcast back; ``out_conv`` maps the
    concatenation to two log-probabilities. Channel 0 means *keep*. Works for any number of
    positions, so any H x W.

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
        """Score positions.

        Args:
            x: (B, N, C) tokens of the feature map (row-major H x W positions).
            policy: optional (B, N, 1) keep mask; when given, the global summary averages only
                the kept positions (plain ViTs). ``None`` averages all positions.

        Returns:
            (B, N, 2) log-probabilities; ``[..., 0]`` is the keep score.
        """
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


class BlockScorePredictor(nn.Module):
    """Scores the ``block x block`` tiles of a (B, C, H, W) map, cheaply.

    Each tile is average-pooled to one vector (ceil mode: the last row / column of tiles may be
    partial), projected to ``embed_dims`` channels (1x1) and scored by a
    :class:`ScorePredictor` (local half per tile, global half averaged over the tiles of the
    image). Working on pooled tiles and a narrow projection keeps the predictor a small
    fraction of the convolution it gates, even at 1/4 scale.

    Args:
        in_channels: C of the scored map.
        embed_dims: width of the projection and of the score MLP.
        block: tile size (1 scores every position).
    """

    def __init__(self, in_channels: int, embed_dims: int = 64, block: int = 16) -> None:
        super().__init__()
        if block < 1 or embed_dims < 4:
            raise ValueError(f'BlockScorePredictor: block={block} must be >= 1 and '
                             f'embed_dims={embed_dims} >= 4.')
        self.block = block
        self.proj = nn.Conv2d(in_channels, embed_dims, 1)
        self.score = ScorePredictor(embed_dims)
        trunc_normal_init(self, (nn.Linear, nn.Conv2d))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> (B, rows * cols, 2) log-probabilities per tile, row-major
        (``[..., 0]`` = keep)."""
        if self.block > 1:
            x = F.avg_pool2d(x, self.block, ceil_mode=True)
        return self.score(self.proj(x).flatten(2).transpose(1, 2))
