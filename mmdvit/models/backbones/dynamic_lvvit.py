"""DynamicViT on LV-ViT: the token-labelling ViT (four-convolution stem, residual scaling) that
drops patch tokens as it goes, as the DynamicViT authors' ``LVViTDiffPruning``
(docs/lvvit.md)."""
from functools import partial
from typing import Dict, Optional, Sequence, Union

from ...registry import MODELS
from ..checkpoint.lvvit import convert_lvvit_checkpoint
from .dynamic_vit import DynamicPlainViT
from .lvvit_layers import ConvPatchEmbed
from .vit_layers import ViTBlock

# (embed_dims, num_layers, num_heads, mlp_ratio, skip_lam) of TokenLabeling's lvvit_s / lvvit_m,
# which the DynamicViT authors sparsify (their main.py / infer.py, models 'lvvit-s' / 'lvvit-m').
LVVIT_ARCHS: Dict[str, Dict[str, float]] = {
    'lvvit-s': dict(embed_dims=384, num_layers=16, num_heads=6, mlp_ratio=3.0, skip_lam=2.0),
    'lvvit-m': dict(embed_dims=512, num_layers=20, num_heads=8, mlp_ratio=3.0, skip_lam=2.0),
}


@MODELS.register_module()
class DynamicLVViT(DynamicPlainViT):
    """LV-ViT with dynamic token sparsification (DynamicViT-LVViT).

    The architecture of TokenLabeling's ``lvvit_s`` / ``lvvit_m``: a four-convolution patch
    embedding (:class:`~mmdvit.models.backbones.lvvit_layers.ConvPatchEmbed`), a class token, a
    learned position embedding, pre-norm blocks without qkv bias whose residual branches are
    divided by ``skip_lam`` (:class:`~mmdvit.models.backbones.vit_layers.ViTBlock`) and a
    final LayerNorm (eps 1e-5 throughout). The forward pass, and so the sparsification, is
    that of the plain-ViT base it shares with DynamicViT
    (:class:`~mmdvit.models.backbones.dynamic_vit.DynamicPlainViT`): nested keep masks and
    masked attention in training, the top ``max(1, int(N * keep_ratios[i]))`` patch tokens
    gathered at inference, the class token always kept.

    The classifiers of the releases (class-token ``head`` and token-labelling ``aux_head``) live
    in :class:`~mmdvit.models.heads.lvvit_head.LVViTClsHead`, which needs
    ``out_type='raw'``: at inference it adds 0.5 x the maximum over the *kept* tokens of the
    auxiliary logits to the class-token logits, as the authors' evaluation does.

    Parameter names are the releases' (``patch_embed.conv1``, ``blocks.i.attn.qkv``...), so
    TokenLabeling and DynamicViT-LVViT checkpoints load (:func:`convert_lvvit_checkpoint`);
    ``pos_embed`` is resized (bicubic) when the checkpoint's grid differs.

    Args:
        arch: ``'lvvit-s'``, ``'lvvit-m'`` or ``dict(embed_dims, num_layers, num_heads[,
            mlp_ratio=3.0, skip_lam=1.0])``.
        img_size: training image size (int or (H, W)), a multiple of ``patch_size``; other
            input sizes work as in DynamicViT (padding, interpolated position embedding).
        patch_size: total stride of the patch embedding (even).
        in_channels: image channels.
        stem_channels: width of the three stem convolutions.
        qkv_bias: bias in the qkv projections (none in LV-ViT).
        drop_rate, attn_drop_rate, drop_path_rate: dropout after the position embedding and in
            the blocks, attention dropout, stochastic depth (linear over depth).
        final_norm: apply the final LayerNorm ``norm``.
        out_type: ``'raw'``: (B, 1 + n, C) class token and the n patch tokens still in the
            sequence (for ``LVViTClsHead``); ``'cls_token'``: (B, C); ``'featmap'``:
            (B, C, h, w), a token pruned at inference holding its value from when it was pruned.
        keep_ratios: fraction of all patch tokens kept by each predictor, non-increasing, each
            in (0, 1]. Published: (rho, rho^2, rho^3), rho = 0.5 or 0.7.
        pruning_locs: 0-based blocks with a predictor before them. ``None``: (4, 8, 12) for 16
            blocks, (5, 10, 15) for 20. ``()`` (with ``keep_ratios=()``) builds the dense LV-ViT.
        distill_tokens: also return the final patch tokens: ``(tokens (B, N, C), out)``, and
            :meth:`feature_distill_loss` applies (as DynamicViT's).
        with_cp: gradient checkpointing in the blocks.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH[, prefix='backbone.'])`` loads an
            LV-ViT checkpoint of any layout of :func:`detect_lvvit_layout` and logs missing /
            unexpected keys.
    """

    arch_zoo = LVVIT_ARCHS
    arch_defaults = dict(mlp_ratio=3.0, skip_lam=1.0)
    convert_layout = staticmethod(convert_lvvit_checkpoint)

    def __init__(self,
                 arch: Union[str, dict] = 'lvvit-s',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 qkv_bias: bool = False,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 final_norm: bool = True,
                 out_type: str = 'raw',
                 keep_ratios: Sequence[float] = (0.7, 0.49, 0.343),
                 pruning_locs: Optional[Sequence[int]] = None,
                 distill_tokens: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        settings = self.arch_settings(arch)
        super().__init__(settings, img_size, patch_size, in_channels, qkv_bias, drop_rate,
                         attn_drop_rate, drop_path_rate, final_norm, out_type, keep_ratios,
                         pruning_locs, distill_tokens, with_cp, init_cfg,
                         embed_layer=partial(ConvPatchEmbed, stem_channels=stem_channels),
                         block=partial(ViTBlock, skip_lam=float(settings['skip_lam'])),
                         norm_eps=1e-5)
