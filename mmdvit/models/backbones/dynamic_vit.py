"""DynamicViT: a DeiT-style plain ViT that drops patch tokens as it goes (docs/method.md), and
the plain-ViT base it shares with DynamicLVViT."""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import VisionTransformer as MMPretrainViT
from torch import Tensor, nn

from ...registry import MODELS
from ..checkpoint.vit import convert_vit_checkpoint, resize_pos_embed
from ...sparse import (HW, SparsityDecision, build_schedule, decide, drop_pruned,
                       trunc_normal_init)
from .base import DynamicBackbone
from .vit_layers import PatchEmbed, ViTBlock

StateDict = Dict[str, Tensor]
# DeiT and ViT sizes as timm and mmpretrain name them, read from mmpretrain's table (its
# feedforward_channels as mlp_ratio), plus 'deit-256', the narrower DeiT of the DynamicViT paper
# (in neither library).
VIT_ARCHS: Dict[str, Dict[str, float]] = {
    **{
        name: dict(embed_dims=arch['embed_dims'], num_layers=arch['num_layers'],
                   num_heads=arch['num_heads'],
                   mlp_ratio=arch['feedforward_channels'] / arch['embed_dims'])
        for name, arch in MMPretrainViT.arch_zoo.items()
        if name in ('deit-tiny', 'deit-small', 'deit-base', 'base', 'large')
    },
    'deit-256': dict(embed_dims=256, num_layers=12, num_heads=4, mlp_ratio=4.0),
}
# Published predictor placements by depth (0-based block indices; docs/method.md,
# 'Where the predictors sit').
VIT_PRUNING_LOCS: Dict[int, Tuple[int, ...]] = {12: (3, 6, 9), 16: (4, 8, 12), 20: (5, 10, 15)}
OUT_TYPES = ('cls_token', 'featmap', 'raw')


class DynamicPlainViT(DynamicBackbone):
    """A plain ViT with dynamic token sparsification: patch embedding, class token, learned
    position embedding, a stack of blocks and a final LayerNorm, pruned as
    :class:`DynamicViT` describes. The base of :class:`DynamicViT` (DeiT) and
    :class:`~mmdvit.models.backbones.dynamic_lvvit.DynamicLVViT`, which give the patch
    embedding, the block, the LayerNorm epsilon, :attr:`arch_zoo` and :attr:`convert_layout`.

    Args:
        arch: a name of :attr:`arch_zoo` or a dict (see :meth:`arch_settings`).
        embed_layer: ``embed_layer(in_channels, embed_dims, patch_size)`` builds
            ``patch_embed``, mapping (B, in_channels, H, W) to tokens (B, h*w, C) and (h, w).
        block: ``block(embed_dims, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate,
            drop_path_rate, norm_eps, with_cp)`` builds ``blocks.i``, mapping tokens (B, N, C)
            and a (B, N, 1) keep mask or None to (B, N, C).
        norm_eps: epsilon of the blocks' and the final LayerNorm.
        The others: as :class:`DynamicViT`.
    """

    # Named architectures: dict(embed_dims, num_layers, num_heads[, optional keys]).
    arch_zoo: Dict[str, Dict[str, float]] = {}
    # Optional keys of an architecture and their values when it omits them.
    arch_defaults: Dict[str, float] = dict(mlp_ratio=4.0)
    # Maps a checkpoint of any supported layout to this model's keys: (state, layout, dropped).
    convert_layout: Callable[[StateDict], Tuple[StateDict, str, List[str]]]

    def __init__(self, arch: Union[str, dict], img_size: Union[int, Sequence[int]],
                 patch_size: int, in_channels: int, qkv_bias: bool, drop_rate: float,
                 attn_drop_rate: float, drop_path_rate: float, final_norm: bool, out_type: str,
                 keep_ratios: Sequence[float], pruning_locs: Optional[Sequence[int]],
                 distill_tokens: bool, with_cp: bool, init_cfg: Optional[dict],
                 embed_layer: Callable[[int, int, int], nn.Module],
                 block: Callable[..., nn.Module], norm_eps: float) -> None:
        super().__init__(init_cfg=init_cfg)
        settings = self.arch_settings(arch)
        num_layers, num_heads = self._setup(settings, img_size, patch_size, out_type,
                                            distill_tokens, keep_ratios, pruning_locs)
        self.patch_embed = embed_layer(in_channels, self.embed_dims, patch_size)
        dpr = self._add_tokens(num_layers, drop_rate, drop_path_rate)
        self.blocks = nn.ModuleList([
            block(self.embed_dims, num_heads, float(settings['mlp_ratio']), qkv_bias, drop_rate,
                  attn_drop_rate, dpr[i], norm_eps, with_cp) for i in range(num_layers)
        ])
        self.norm = nn.LayerNorm(self.embed_dims, eps=norm_eps) if final_norm else nn.Identity()
        self.build_predictors([self.embed_dims], eps=1e-5)
        self.reset_parameters()

    def _setup(self, settings: dict, img_size: Union[int, Sequence[int]], patch_size: int,
               out_type: str, distill_tokens: bool, keep_ratios: Sequence[float],
               pruning_locs: Optional[Sequence[int]]) -> Tuple[int, int]:
        """Validate the arguments shared by plain ViTs and set ``embed_dims``, ``out_type``,
        ``distill_tokens``, ``patch_resolution`` and ``schedule``; returns (layers, heads)."""
        self.embed_dims = int(settings['embed_dims'])
        num_layers, num_heads = int(settings['num_layers']), int(settings['num_heads'])
        if out_type not in OUT_TYPES:
            raise ValueError(f'out_type={out_type!r} is not supported; use one of {OUT_TYPES}.')
        self.out_type = out_type
        self.distill_tokens = distill_tokens
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if len(img_size) != 2 or any(s % patch_size for s in img_size):
            raise ValueError(f'img_size={img_size} must be one or two multiples of '
                             f'patch_size={patch_size}.')
        self.patch_resolution = (img_size[0] // patch_size, img_size[1] // patch_size)
        keep_ratios = tuple(float(r) for r in keep_ratios)
        if pruning_locs is not None and len(pruning_locs) == 0:
            if keep_ratios:
                raise ValueError(f'pruning_locs=() builds the dense {type(self).__name__}, so '
                                 f'keep_ratios must be () too (got {keep_ratios}).')
            self.schedule = {}
        else:
            self.schedule = build_schedule([num_layers], (0, ), pruning_locs, keep_ratios,
                                           VIT_PRUNING_LOCS)
        if any(b > a for a, b in zip(keep_ratios, keep_ratios[1:])):
            raise ValueError(f'keep_ratios={keep_ratios} must be non-increasing: the masks are '
                             'nested and each ratio is a fraction of all patch tokens (published: '
                             '(rho, rho**2, rho**3)).')
        return num_layers, num_heads

    def _add_tokens(self, num_layers: int, drop_rate: float,
                    drop_path_rate: float) -> List[float]:
        """Register ``cls_token``, ``pos_embed`` and ``drop_after_pos``; returns the blocks'
        stochastic-depth rates (linear over depth)."""
        num_patches = self.patch_resolution[0] * self.patch_resolution[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, self.embed_dims))
        self.drop_after_pos = nn.Dropout(drop_rate)
        return [drop_path_rate * i / max(num_layers - 1, 1) for i in range(num_layers)]

    @classmethod
    def arch_settings(cls, arch: Union[str, dict]) -> dict:
        """The settings of ``arch``: a name of :attr:`arch_zoo`, or a dict with
        ``embed_dims``, ``num_layers`` and ``num_heads`` (and optionally the keys of
        :attr:`arch_defaults`, which fill what it omits)."""
        if isinstance(arch, str):
            if arch not in cls.arch_zoo:
                raise ValueError(f'arch={arch!r} is unknown; use one of {sorted(cls.arch_zoo)} '
                                 'or dict(embed_dims=..., num_layers=..., num_heads=...).')
            arch = cls.arch_zoo[arch]
        if not (isinstance(arch, dict) and {'embed_dims', 'num_layers', 'num_heads'} <= set(arch)):
            raise ValueError(f'arch={arch!r} must be a name or a dict with embed_dims, '
                             f'num_layers and num_heads (and optionally '
                             f'{", ".join(cls.arch_defaults)}).')
        return {**cls.arch_defaults, **arch}

    def reset_parameters(self) -> None:
        """Default initialisation (as mmpretrain's ViT and the LV-ViT releases): truncated
        normal (std 0.02) linear weights, position embedding and class token, zero biases,
        unit LayerNorms; convolutions and BatchNorms keep PyTorch's defaults."""
        trunc_normal_init(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def convert_checkpoint(self, state: StateDict) -> Tuple[StateDict, str, List[str]]:
        """Map a checkpoint of any layout :attr:`convert_layout` reads to this layout and resize
        its ``pos_embed`` to this model's grid."""
        state, layout, dropped = self.convert_layout(state)
        if 'pos_embed' in state and state['pos_embed'].shape != self.pos_embed.shape:
            state['pos_embed'] = resize_pos_embed(state['pos_embed'], self.patch_resolution)
        return state, layout, dropped

    def _pos_embed(self, grid: HW) -> Tensor:
        if grid == self.patch_resolution:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, grid)

    def forward(self, x: Tensor) -> Tuple[Tensor]:
        """x: (B, in_channels, H, W).

        Returns:
            ``(out, )`` with ``out`` the (B, C) class token, (B, C, h, w) patch map or
            (B, 1 + n, C) tokens, per ``out_type`` (h, w = ceil(H / patch_size),
            ceil(W / patch_size)); with ``distill_tokens``, ``(patch tokens (B, N, C), out)``.
        """
        batch = x.shape[0]
        x, grid = self.patch_embed(x)
        num = x.shape[1]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1) + self._pos_embed(grid)
        x = self.drop_after_pos(x)
        # Training: every token stays and attention follows the cumulative keep mask (B, N).
        # Inference: the sequence holds the class token and the patch tokens at the last
        # decision's keep_indices (all N in order before the first predictor).
        mask: Optional[Tensor] = None
        previous: Optional[SparsityDecision] = None  # the last decision so far
        pruned_map = None
        if not self.training and (self.out_type == 'featmap' or self.distill_tokens):
            pruned_map = x.new_zeros(batch, num, x.shape[-1])
        for i, block in enumerate(self.blocks):
            local = self.predictor_at(0, i)
            if local is not None:
                patches = x[:, 1:]
                decision = decide(self.predictor_scores(0, local, patches, previous, nested=True),
                                  hw_shape=grid, previous=previous, like=patches,
                                  **self.decide_args(0, local))
                if self.training:
                    if decision.num_keep is None:  # it may prune: attention follows the mask
                        mask = decision.keep_mask
                else:
                    if pruned_map is not None:
                        pruned_map = pruned_map.scatter(
                            1, self._expand(self._positions(previous, x), x),
                            x[:, 1:].to(pruned_map.dtype))
                    if decision.num_keep < x.shape[1] - 1:
                        x = torch.cat([x[:, :1], drop_pruned(x[:, 1:], decision, previous)], 1)
                previous = decision
            x = block(x, None if mask is None else F.pad(mask, (1, 0), value=1.0).unsqueeze(-1))
        x = self.norm(x)
        if self.out_type == 'cls_token':
            out = x[:, 0]
        elif self.out_type == 'raw':
            out = x
        if self.out_type == 'featmap' or self.distill_tokens:
            tokens = x[:, 1:]
            if pruned_map is not None and tokens.shape[1] < num:
                stale = self.norm(pruned_map)
                index = self._positions(previous, x)
                tokens = stale.scatter(1, self._expand(index, tokens), tokens.to(stale.dtype))
            if self.out_type == 'featmap':
                out = tokens.transpose(1, 2).reshape(batch, -1, *grid)
            if self.distill_tokens:
                return tokens, out
        return (out, )

    def feature_distill_loss(self, student_outs: Sequence[Tensor], teacher_outs: Sequence[Tensor],
                             decisions: Sequence[SparsityDecision]) -> Tensor:
        """Token distillation (docs/method.md, 'Losses and the published recipe'): MSE between
        the student's and the dense teacher's final patch tokens, over the tokens kept by the
        last predictor only.

        Used by :class:`~mmdvit.models.SparsityTrainer` when ``distill_tokens=True``.

        Args:
            student_outs, teacher_outs: the backbones' outputs; element 0 is (B, N, C).
            decisions: the decisions of the student's forward pass that gave ``student_outs``
                (:func:`~mmdvit.sparse.record_decisions`), in forward order; empty: the MSE
                over all tokens.

        Returns:
            Scalar: mean over kept tokens and channels (0 when nothing is kept).
        """
        if not self.distill_tokens:
            raise ValueError('feature_distill_loss needs the patch tokens: build DynamicViT with '
                             'distill_tokens=True (student and teacher).')
        student, teacher = student_outs[0].float(), teacher_outs[0].float()
        if not decisions:
            return (student - teacher).pow(2).mean()
        # A masked mean rather than boolean indexing: no data-dependent shape, so no host
        # synchronisation on a GPU.
        keep = (decisions[-1].keep_mask.detach() > 0.5).unsqueeze(-1)
        error = torch.where(keep, (student - teacher).pow(2), 0.0)
        count = keep.sum() * student.shape[-1]
        return error.sum() / count.clamp_min(1)

    @staticmethod
    def _expand(index: Tensor, x: Tensor) -> Tensor:
        return index.unsqueeze(-1).expand(-1, -1, x.shape[-1])

    @staticmethod
    def _positions(decision: Optional[SparsityDecision], x: Tensor) -> Tensor:
        """(B, n) original positions of the patch tokens of ``x`` (B, 1 + n, C) at inference:
        the keep_indices of the last ``decision`` (``None``: all, in order)."""
        if decision is None:
            return torch.arange(x.shape[1] - 1, device=x.device).expand(x.shape[0], -1)
        return decision.keep_indices


@MODELS.register_module()
class DynamicViT(DynamicPlainViT):
    """Plain ViT (DeiT) with dynamic token sparsification.

    A score predictor before each block in ``pruning_locs`` rates the patch tokens that are
    still kept; masks are nested (each keeps a subset of the previous one) and ``keep_ratios``
    are fractions of *all* patch tokens. The class token is always kept.

    - Training: every token stays in the sequence; the straight-through Gumbel hard mask is
      multiplied into the previous one and attention ignores pruned tokens
      (:func:`~mmdvit.models.backbones.vit_layers.policy_softmax`, float32). The predictor's
      global feature averages the tokens kept so far.
    - Inference: the top ``k_i = max(1, int(N * keep_ratios[i]))`` tokens by keep score (N =
      number of patches) are gathered and the later blocks run on the class token and them only.
    - A predictor whose ratio keeps every token (1.0) is skipped in both modes, and the blocks
      after it run unmasked, as timm's.

    The ``keep_mask`` of decision i (:func:`~mmdvit.sparse.record_decisions`) is the
    cumulative (B, N) mask over the patch tokens in their original order, so the keep-ratio
    loss compares ``mean(mask)`` with ``keep_ratios[i]``.
    At inference, ``keep_indices`` are the original positions of the kept tokens and
    ``log_probs`` is (B, N, 2) with ``(-inf, 0)`` at tokens pruned earlier.

    Parameter names are timm's (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
    ``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``), so timm /
    DeiT / DynamicViT-authors checkpoints load, as do mmpretrain ``VisionTransformer`` ones
    (converted); ``pos_embed`` is resized (bicubic) when the checkpoint's grid differs.

    Args:
        arch: a name of :data:`VIT_ARCHS` (``'deit-small'``, ``'deit-base'``...) or
            ``dict(embed_dims, num_layers, num_heads[, mlp_ratio])``.
        img_size: training image size (int or (H, W)); sets the ``pos_embed`` grid. Other
            input sizes work: the embedding is interpolated per forward (bicubic) and inputs
            are padded at the bottom / right to a multiple of ``patch_size``.
        patch_size: patch side.
        in_channels: image channels.
        qkv_bias: bias in the qkv projections.
        drop_rate, attn_drop_rate, drop_path_rate: dropout after the position embedding and in
            the blocks, attention dropout, stochastic depth (linear over depth).
        final_norm: apply the final LayerNorm ``norm``.
        out_type: ``'cls_token'``: (B, C) (for mmpretrain's ``LinearClsHead`` /
            ``VisionTransformerClsHead``); ``'featmap'``: (B, C, h, w) patch tokens, where a
            token pruned at inference holds its value from the moment it was pruned;
            ``'raw'``: (B, 1 + n, C) class token and the n tokens still in the sequence.
        keep_ratios: target fraction of all patch tokens kept by each predictor, in forward
            order, non-increasing, each in (0, 1]. Published: (rho, rho^2, rho^3), rho = 0.7.
        pruning_locs: 0-based blocks with a predictor before them. ``None``: (3, 6, 9) for 12
            blocks, (4, 8, 12) for 16, (5, 10, 15) for 20. ``()`` (with ``keep_ratios=()``)
            builds the dense ViT.
        distill_tokens: also return the final patch tokens for token distillation: the
            output becomes ``(tokens (B, N, C), out)`` (heads read the last element) and
            :meth:`feature_distill_loss` applies. Tokens pruned at inference hold their value
            from the moment they were pruned.
        with_cp: gradient checkpointing in the blocks.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH[, prefix='backbone.'])`` loads the
            dense parts and logs missing / unexpected keys.
    """

    arch_zoo = VIT_ARCHS
    convert_layout = staticmethod(convert_vit_checkpoint)

    def __init__(self,
                 arch: Union[str, dict] = 'deit-small',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 final_norm: bool = True,
                 out_type: str = 'cls_token',
                 keep_ratios: Sequence[float] = (0.7, 0.49, 0.343),
                 pruning_locs: Optional[Sequence[int]] = None,
                 distill_tokens: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(arch, img_size, patch_size, in_channels, qkv_bias, drop_rate,
                         attn_drop_rate, drop_path_rate, final_norm, out_type, keep_ratios,
                         pruning_locs, distill_tokens, with_cp, init_cfg, embed_layer=PatchEmbed,
                         block=ViTBlock, norm_eps=1e-6)
