"""LV-ViT building blocks (Jiang et al., 2021, "All Tokens Matter: Token Labeling for Training
Better Vision Transformers") with the parameter names of the TokenLabeling and DynamicViT
releases.

Key layout: ``patch_embed.{conv1, bn1, conv2, bn2, conv3, bn3, proj}``,
``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`` (no qkv bias). The blocks
are :class:`~mmdvit.models.backbones.vit_layers.ViTBlock` with ``skip_lam``.
"""
from typing import Tuple

from torch import Tensor, nn

from ...sparse import HW, pad_to_multiple


class ConvPatchEmbed(nn.Module):
    """LV-ViT's four-convolution patch embedding (``p_emb='4_2'`` in the releases).

    ``conv1`` 7x7 stride 2 -> BN -> ReLU -> ``conv2`` 3x3 -> BN -> ReLU -> ``conv3`` 3x3 -> BN ->
    ReLU -> ``proj`` (patch_size / 2) x (patch_size / 2) with that stride; the three stem
    convolutions have no bias. The input is padded at the bottom / right to a multiple of
    ``patch_size``.

    Args:
        in_channels: image channels.
        embed_dims: C.
        patch_size: total stride (even).
        stem_channels: width of the three stem convolutions (64 in LV-ViT-S / M).
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = 16,
                 stem_channels: int = 64) -> None:
        super().__init__()
        if patch_size % 2:
            raise ValueError(f'patch_size={patch_size} must be even: the stem halves the image '
                             'and proj covers patch_size / 2.')
        self.patch_size = patch_size
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_channels)
        self.conv3 = nn.Conv2d(stem_channels, stem_channels, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.proj = nn.Conv2d(stem_channels, embed_dims, patch_size // 2,
                              stride=patch_size // 2)

    def forward(self, x: Tensor) -> Tuple[Tensor, HW]:
        """x: (B, 3, H, W) -> tokens (B, h*w, C) and (h, w) = ceil((H, W) / patch)."""
        x = pad_to_multiple(x, self.patch_size)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.proj(self.relu(self.bn3(self.conv3(x))))
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])
