"""ConvNeXt building blocks with mmpretrain's parameter names, plus the dynamic block.

Key layout (as mmpretrain's ``ConvNeXt``): ``stages.i.j.{depthwise_conv, norm, pointwise_conv1,
pointwise_conv2, gamma}``; the dynamic block adds ``fast_path.{0,1}`` (LayerNorm, Linear) and
``fast_path_gamma`` (its layer scale).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from torch import Tensor, nn

from ...sparse import SparsityDecision, route_tokens


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution (mmpretrain's ``linear_pw_conv=False`` layout: weight (C_out, C_in,
    1, 1)) applied to channels-last tokens. x: (..., C_in) -> (..., C_out)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.flatten(1), self.bias)


class DynamicConvNeXtBlock(nn.Module):
    """A ConvNeXt block whose pointwise MLP is split: kept positions take the block's own MLP
    (``LN -> Linear C->4C -> GELU -> Linear 4C->C``, times ``gamma``), pruned positions take
    ``LN -> Linear C->C`` times ``fast_path_gamma``. The 7x7 depthwise convolution always runs
    on the full map. Without a decision it is exactly mmpretrain's ``ConvNeXtBlock``.

    Args:
        in_channels: C.
        mlp_ratio: hidden width of the pointwise MLP, as a multiple of C.
        drop_path_rate: stochastic depth of the block.
        layer_scale_init_value: initial value of ``gamma`` and ``fast_path_gamma``
            (0 disables layer scale).
        sparse: build the fast path (the block runs at or after a predictor).
        with_cp: gradient checkpointing.
        linear_pw_conv: pointwise layers as ``nn.Linear`` (True) or as 1x1 convolutions
            (mmpretrain's ``linear_pw_conv=False``; same computation, conv-shaped weights).
    """

    def __init__(self, in_channels: int, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6, sparse: bool = False,
                 with_cp: bool = False, linear_pw_conv: bool = True) -> None:
        super().__init__()
        self.with_cp = with_cp
        hidden = int(mlp_ratio * in_channels)
        self.depthwise_conv = nn.Conv2d(in_channels, in_channels, 7, padding=3,
                                        groups=in_channels)
        self.norm = nn.LayerNorm(in_channels, eps=1e-6)
        pointwise = nn.Linear if linear_pw_conv else PointwiseConv
        self.pointwise_conv1 = pointwise(in_channels, hidden)
        self.act = nn.GELU()
        self.pointwise_conv2 = pointwise(hidden, in_channels)
        self.gamma = self._layer_scale(in_channels, layer_scale_init_value)
        self.drop_path = DropPath(drop_path_rate)
        self.fast_path = None
        self.fast_path_gamma = None
        if sparse:
            self.fast_path = nn.Sequential(
                nn.LayerNorm(in_channels, eps=1e-6), nn.Linear(in_channels, in_channels))
            self.fast_path_gamma = self._layer_scale(in_channels, layer_scale_init_value)

    @staticmethod
    def _layer_scale(channels: int, value: float) -> Optional[nn.Parameter]:
        return nn.Parameter(value * torch.ones(channels)) if value > 0 else None

    def slow(self, x: Tensor) -> Tensor:
        """Slow path residual. x: (B, n, C) channels-last -> (B, n, C)."""
        x = self.pointwise_conv2(self.act(self.pointwise_conv1(self.norm(x))))
        return x * self.gamma if self.gamma is not None else x

    def fast(self, x: Tensor) -> Tensor:
        """Fast path residual. x: (B, n, C) channels-last -> (B, n, C)."""
        x = self.fast_path(x)
        return x * self.fast_path_gamma if self.fast_path_gamma is not None else x

    def forward(self, x: Tensor, decision: Optional[SparsityDecision] = None) -> Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""

        def inner(x: Tensor) -> Tensor:
            batch, channels, height, width = x.shape
            h = self.depthwise_conv(x).permute(0, 2, 3, 1)
            if decision is None:
                residual = self.slow(h)
            else:
                if self.fast_path is None:
                    raise RuntimeError('a decision reached a block built without a fast path')
                tokens = h.reshape(batch, height * width, channels)
                residual = route_tokens(tokens, self.slow, self.fast, decision)
                residual = residual.view(batch, height, width, channels)
            return x + self.drop_path(residual.permute(0, 3, 1, 2)).to(x.dtype)

        if self.with_cp and x.requires_grad:
            return torch.utils.checkpoint.checkpoint(inner, x, use_reentrant=False)
        return inner(x)
