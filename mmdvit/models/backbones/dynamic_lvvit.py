"""DynamicViT on LV-ViT: the token-labelling ViT (four-convolution stem, residual scaling) that
drops patch tokens as it goes, as the DynamicViT authors' ``LVViTDiffPruning``
(docs/lvvit.md)."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

from torch import Tensor, nn

from ...registry import MODELS
from ..checkpoint.lvvit import convert_lvvit_checkpoint
from ..checkpoint.vit import resize_pos_embed
from ...sparse import trunc_normal_init
from .base import DynamicBackbone
from .dynamic_vit import DynamicViT
from .lvvit_layers import ConvPatchEmbed
from .vit_layers import ViTBlock

StateDict = Dict[str, Tensor]

# (embed_dims, num_layers, num_heads, mlp_ratio, skip_lam) of TokenLabeling's lvvit_s / lvvit_m,
# which the DynamicViT authors sparsify (their main.py / infer.py, models 'lvvit-s' / 'lvvit-m').
LVVIT_ARCHS: Dict[str, Dict[str, float]] = {
    'lvvit-s': dict(embed_dims=384, num_layers=16, num_heads=6, mlp_ratio=3.0, skip_lam=2.0),
    'lvvit-m': dict(embed_dims=512, num_layers=20, num_heads=8, mlp_ratio=3.0, skip_lam=2.0),
}


@MODELS.register_module()
class DynamicLVViT(DynamicViT):
    """LV-ViT with dynamic token sparsification (DynamicViT-LVViT).

    The architecture of TokenLabeling's ``lvvit_s`` / ``lvvit_m``: a four-convolution patch
    embedding (:class:`~mmdvit.models.backbones.lvvit_layers.ConvPatchEmbed`), a class token, a
    learned position embedding, pre-norm blocks without qkv bias whose residual branches are
    divided by ``skip_lam`` (:class:`~mmdvit.models.backbones.vit_layers.ViTBlock`) and a
    final LayerNorm (eps 1e-5 throughout). The forward pass, and so the sparsification, is
    :class:`~mmdvit.models.backbones.dynamic_vit.DynamicViT`'s: nested keep masks and masked
    attention in training, the top ``max(1, int(N * keep_ratios[i]))`` patch tokens gathered at
    inference, the class token always kept.

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
        # DynamicViT's forward is reused as is; its constructor (DeiT stem and blocks) is not.
        DynamicBackbone.__init__(self, init_cfg=init_cfg)
        settings = self._arch_settings(arch)
        num_layers, num_heads = self._setup(settings, img_size, patch_size, out_type,
                                            distill_tokens, keep_ratios, pruning_locs)
        self.patch_embed = ConvPatchEmbed(in_channels, self.embed_dims, patch_size,
                                          stem_channels)
        dpr = self._add_tokens(num_layers, drop_rate, drop_path_rate)
        self.blocks = nn.ModuleList([
            ViTBlock(self.embed_dims, num_heads, float(settings.get('mlp_ratio', 3.0)), qkv_bias,
                     drop_rate, attn_drop_rate, dpr[i], 1e-5, with_cp,
                     float(settings.get('skip_lam', 1.0)))
            for i in range(num_layers)
        ])
        self.norm = nn.LayerNorm(self.embed_dims) if final_norm else nn.Identity()
        self.build_predictors([self.embed_dims], eps=1e-5)
        self.reset_parameters()

    @staticmethod
    def _arch_settings(arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch not in LVVIT_ARCHS:
                raise ValueError(f'arch={arch!r} is unknown; use one of {sorted(LVVIT_ARCHS)} or '
                                 'dict(embed_dims=..., num_layers=..., num_heads=...).')
            return LVVIT_ARCHS[arch]
        if not (isinstance(arch, dict) and {'embed_dims', 'num_layers', 'num_heads'} <= set(arch)):
            raise ValueError(f'arch={arch!r} must be a name or a dict with embed_dims, '
                             'num_layers and num_heads (and optionally mlp_ratio, skip_lam).')
        return arch

    def reset_parameters(self) -> None:
        """The releases' initialisation: truncated normal (std 0.02) linear weights, position
        embedding and class token, zero biases, unit LayerNorms; the stem convolutions and
        BatchNorms keep PyTorch's defaults."""
        trunc_normal_init(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def convert_checkpoint(self, state: StateDict) -> Tuple[StateDict, str, List[str]]:
        """Map a TokenLabeling / DynamicViT-LVViT / mmdvit checkpoint to this layout and resize
        its ``pos_embed`` to this model's grid."""
        state, layout, dropped = convert_lvvit_checkpoint(state)
        if 'pos_embed' in state and state['pos_embed'].shape != self.pos_embed.shape:
            state['pos_embed'] = resize_pos_embed(state['pos_embed'], self.patch_resolution)
        return state, layout, dropped
