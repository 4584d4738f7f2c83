"""Plain ViT building blocks with timm's parameter names, and attention that ignores pruned tokens.

Key layout (as timm's ``VisionTransformer`` / DeiT): ``patch_embed.proj``,
``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``. timm's ``Mlp`` and mmcv's
``DropPath`` are used unchanged; the attention is mmdvit's (it masks pruned tokens in training).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from timm.layers import Mlp
from torch import Tensor, nn

from ...sparse import HW, pad_to_multiple


def policy_softmax(attn: Tensor, policy: Tensor, eps: float = 1e-6) -> Tensor:
    """Softmax over keys that ignores pruned tokens, in float32 (docs/method.md, 'Token
    pruning in plain ViTs').

    With keep mask D over the tokens, ``G_ij = D_j + (1 - D_j) [i == j]`` (a pruned token still
    attends to itself, nobody attends to it) and
    ``A_ij = (exp(a_ij - max_k a_ik) G_ij + eps / N) / (sum_k exp(a_ik - max_k a_ik) G_ik + eps)``.

    Args:
        attn: (B, heads, N, N) attention logits.
        policy: (B, N, 1) keep mask, 1 = kept (the class token is always 1).
        eps: the stabiliser.

    Returns:
        (B, heads, N, N) attention weights in ``attn``'s dtype.
    """
    num = policy.shape[1]
    keep = policy.reshape(-1, 1, 1, num).float()
    eye = torch.eye(num, device=attn.device, dtype=torch.float32).view(1, 1, num, num)
    gate = keep + (1.0 - keep) * eye
    shifted = attn.float() - attn.float().amax(dim=-1, keepdim=True)
    weights = shifted.exp() * gate
    return ((weights + eps / num) / (weights.sum(dim=-1, keepdim=True) + eps)).to(attn.dtype)


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding; pads bottom/right to a multiple of the patch size.

    mmdvit's own (timm's returns the tokens only): the pruning and the ``featmap`` output need
    the (h, w) patch grid it returns.

    Args:
        in_channels: image channels.
        embed_dims: C.
        patch_size: kernel size and stride.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tuple[Tensor, HW]:
        """x: (B, 3, H, W) -> tokens (B, h*w, C) and (h, w) = ceil((H, W) / patch)."""
        x = pad_to_multiple(x, self.patch_size)
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class Attention(nn.Module):
    """Multi-head self-attention; with a ``policy`` no token attends to a pruned one.

    The masked attention of training (``policy`` given, gradients on) runs under activation
    checkpointing: its (B, heads, N, N) intermediates are recomputed in the backward pass
    (docs/efficiency.md, 'The sparse path and what makes it fast'), with values and gradients
    bitwise those of the plain computation (dropout replays its RNG state).

    Args:
        embed_dims: C.
        num_heads: attention heads.
        qkv_bias: bias in the qkv projection.
        attn_drop_rate, proj_drop_rate: dropout rates.
    """

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims={embed_dims} is not divisible by '
                             f'num_heads={num_heads}.')
        self.num_heads = num_heads
        self.scale = (embed_dims // num_heads)**-0.5
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop_rate)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)

    def forward(self, x: Tensor, policy: Optional[Tensor] = None) -> Tensor:
        """x: (B, N, C); policy: (B, N, 1) keep mask or None (all kept) -> (B, N, C)."""
        batch, num, channels = x.shape
        qkv = self.qkv(x).reshape(batch, num, 3, self.num_heads, channels // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if policy is None:
            drop = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        elif torch.is_grad_enabled() and q.requires_grad:
            x = torch.utils.checkpoint.checkpoint(self.masked_attention, q, k, v, policy,
                                                  use_reentrant=False)
        else:
            x = self.masked_attention(q, k, v, policy)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(batch, num, channels)))

    def masked_attention(self, q: Tensor, k: Tensor, v: Tensor, policy: Tensor) -> Tensor:
        """q, k, v: (B, heads, N, d); policy: (B, N, 1) -> (B, heads, N, d)."""
        attn = policy_softmax((q * self.scale) @ k.transpose(-2, -1), policy)
        return self.attn_drop(attn) @ v


class ViTBlock(nn.Module):
    """Pre-norm transformer block (timm's ``Block`` without layer scale):
    ``x + attn(norm1(x)) / skip_lam``, then ``x + mlp(norm2(x)) / skip_lam``.

    Args:
        embed_dims: C.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of C.
        qkv_bias: bias in the qkv projection.
        drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout, stochastic depth.
        norm_eps: LayerNorm epsilon (1e-6 in DeiT, 1e-5 in LV-ViT).
        with_cp: gradient checkpointing.
        skip_lam: divisor of both residual branches (1.0 in DeiT, 2.0 in LV-ViT-S / M).
    """

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, norm_eps: float = 1e-6,
                 with_cp: bool = False, skip_lam: float = 1.0) -> None:
        super().__init__()
        if skip_lam <= 0:
            raise ValueError(f'skip_lam={skip_lam} must be > 0 (LV-ViT-S / M use 2.0).')
        self.skip_lam = skip_lam
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = Attention(embed_dims, num_heads, qkv_bias, attn_drop_rate, drop_rate)
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio), drop=drop_rate)
        self.drop_path = DropPath(drop_path_rate)

    def _scaled(self, branch: Tensor) -> Tensor:
        """A residual branch (B, N, C) divided by ``skip_lam`` (no op for 1.0, where it is
        exact)."""
        return branch if self.skip_lam == 1.0 else branch / self.skip_lam

    def forward(self, x: Tensor, policy: Optional[Tensor] = None) -> Tensor:
        """x: (B, N, C); policy: (B, N, 1) keep mask (training) or None -> (B, N, C)."""

        def inner(x: Tensor) -> Tensor:
            x = x + self._scaled(self.drop_path(self.attn(self.norm1(x), policy)))
            return x + self._scaled(self.drop_path(self.mlp(self.norm2(x))))

        if self.with_cp and x.requires_grad:
            return torch.utils.checkpoint.checkpoint(inner, x, use_reentrant=False)
        return inner(x)
