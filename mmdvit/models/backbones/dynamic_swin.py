"""DynamicSwinTransformer: mmseg's Swin Transformer with dynamic spatial sparsification."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmpretrain.models.utils import resize_pos_embed
from mmseg.models.utils.embed import PatchEmbed, PatchMerging
from torch import Tensor, nn

from ...registry import MODELS
from ..checkpoint import convert_swin_checkpoint
from ..checkpoint.swin import fit_window_tables
from ...sparse import Locations, build_schedule, decide, pool_windows
from .base import DynamicBackbone
from .swin_layers import DynamicSwinBlock, init_swin_weights, to_pair

# Published predictor placements by stage depth (0-based block indices; docs/method.md,
# 'Where the predictors sit').
SWIN_PRUNING_LOCS: Dict[int, Tuple[int, ...]] = {6: (1, 2, 3), 18: (2, 4, 6)}
GRANULARITIES = ('token', 'window')


class SwinStage(nn.Module):
    """``blocks`` and an optional ``downsample`` (mmseg's ``SwinBlockSequence`` key layout)."""

    def __init__(self, blocks: List[DynamicSwinBlock], downsample: Optional[PatchMerging]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


@MODELS.register_module()
class DynamicSwinTransformer(DynamicBackbone):
    """Swin Transformer whose sparse stages route each position through a slow or fast FFN.

    Arguments, defaults and parameter names follow mmseg's ``SwinTransformer`` (plus mmdet's
    ``convert_weights``), so upstream configs and converted checkpoints carry over. A score
    predictor before each block in ``pruning_locs`` chooses which positions of the stage take
    the block's own computation (slow path); the others take ``LayerNorm -> Linear`` (fast
    path). Every output is a full (B, C, H, W) map.

    Args:
        keep_ratios: target keep ratio of each predictor, in forward order. Published:
            (rho, rho - 0.2, rho - 0.4) with rho = 0.7.
        sparse_stages: stages that get predictors (0-based). Published: (2,). ``()`` gives the
            dense Swin (no predictors, no fast paths).
        pruning_locs: 0-based block indices within each sparse stage with a predictor before
            them (flat for one sparse stage; 0 puts one before the stage's first block).
            ``None``: (1, 2, 3) for depth 6 and (2, 4, 6) for depth 18.
        granularity: what a predictor keeps or prunes. ``'token'`` (default, the published
            method): positions; kept ones take the block's FFN, window attention runs on every
            position. ``'window'``: the attention windows of the stage's padded map, scored
            from their mean positions; a kept window runs the whole block (attention and
            FFN) in a batch of kept windows, a pruned one skips attention and takes the fast
            path; shifted blocks keep as many shifted windows, those covering the most kept
            positions (docs/method.md, 'Window granularity').
        pretrain_img_size: int or (H, W): the image size of the absolute position embedding
            (``use_abs_pos_embed``), as mmseg's.
        use_abs_pos_embed: add a learned absolute position embedding after the patch embedding
            (mmseg's ``absolute_pos_embed``, (1, H/patch * W/patch, C)); other input sizes
            resize it (bicubic), as mmpretrain's Swin does.
        in_channels, embed_dims, patch_size, window_size, mlp_ratio, depths, num_heads, strides,
        out_indices, qkv_bias, qk_scale, patch_norm, drop_rate, attn_drop_rate,
        drop_path_rate, with_cp, frozen_stages: as mmseg's ``SwinTransformer``.
        act_cfg, norm_cfg: only mmseg's defaults (GELU, LN) are supported; other values raise.
        pad_small_map: True (mmseg / mmdet, default): maps no larger than a window are padded
            and shifted as any other. False (official Swin / mmpretrain / timm classification):
            a map exactly one window wide (stage 4 at 224) is not shifted; use it to reproduce
            ImageNet models at 224.
        convert_weights: accepted for mmdet compatibility; the checkpoint layout (mmseg,
            official, timm) is detected from its keys in any case.
        pretrained: deprecated alias of ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH[, prefix='backbone.'])`` loads the
            dense parts and logs missing / unexpected keys.
    """

    def __init__(self,
                 pretrain_img_size: Union[int, Sequence[int]] = 224,
                 in_channels: int = 3,
                 embed_dims: int = 96,
                 patch_size: int = 4,
                 window_size: int = 7,
                 mlp_ratio: float = 4,
                 depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24),
                 strides: Sequence[int] = (4, 2, 2, 2),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 patch_norm: bool = True,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1,
                 use_abs_pos_embed: bool = False,
                 act_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 convert_weights: bool = False,
                 frozen_stages: int = -1,
                 pad_small_map: bool = True,
                 keep_ratios: Sequence[float] = (0.7, 0.5, 0.3),
                 sparse_stages: Sequence[int] = (2, ),
                 pruning_locs: Optional[Locations] = None,
                 granularity: str = 'token',
                 init_cfg: Optional[dict] = None) -> None:
        if pretrained is not None and not isinstance(pretrained, str):
            raise TypeError(f'pretrained={pretrained!r} must be a checkpoint path (str) or None.')
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('give either pretrained or init_cfg, not both')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        if granularity not in GRANULARITIES:
            raise ValueError(f'granularity={granularity!r}: use one of {GRANULARITIES} '
                             "('token' prunes positions, 'window' prunes attention windows).")
        self.granularity = granularity
        self.window_size = window_size
        pretrain_hw = to_pair(pretrain_img_size, 'pretrain_img_size')
        if act_cfg is not None and act_cfg.get('type') != 'GELU':
            raise ValueError(f'act_cfg={act_cfg}: only GELU is supported.')
        if norm_cfg is not None and norm_cfg.get('type') != 'LN':
            raise ValueError(f'norm_cfg={norm_cfg}: only LN is supported.')
        num_stages = len(depths)
        if len(num_heads) != num_stages or len(strides) != num_stages:
            raise ValueError(f'depths={tuple(depths)}, num_heads={tuple(num_heads)} and '
                             f'strides={tuple(strides)} must have one entry per stage.')
        for i, (dims, heads) in enumerate(zip([embed_dims * 2**i for i in range(num_stages)],
                                              num_heads)):
            if heads < 1 or dims % heads:
                raise ValueError(f'num_heads={tuple(num_heads)}: stage {i} has {dims} channels '
                                 f'(embed_dims={embed_dims} * 2**{i}), which {heads} heads do '
                                 'not divide; choose num_heads dividing every stage width.')
        for name, rate in (('drop_rate', drop_rate), ('attn_drop_rate', attn_drop_rate),
                           ('drop_path_rate', drop_path_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f'{name}={rate} must be a probability in [0, 1].')
        if strides[0] != patch_size:
            raise ValueError(f'strides[0]={strides[0]} must equal patch_size={patch_size}: '
                             'Swin embeds non-overlapping patches.')
        if any(s != 2 for s in strides[1:]):
            raise ValueError(f'strides={tuple(strides)}: stages after the first merge 2x2 '
                             'patches, so strides[1:] must all be 2.')
        self.out_indices = tuple(out_indices)
        for i in self.out_indices:
            if not 0 <= i < num_stages:
                raise ValueError(f'out_indices={self.out_indices}: index {i} is out of range '
                                 f'for {num_stages} stages (use 0..{num_stages - 1}).')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages={frozen_stages} must be in [-1, {num_stages}].')
        self.frozen_stages = frozen_stages
        self.num_features = [int(embed_dims * 2**i) for i in range(num_stages)]
        self.schedule = build_schedule(depths, sparse_stages, pruning_locs, keep_ratios,
                                       SWIN_PRUNING_LOCS)

        norm = dict(type='LN') if patch_norm else None
        self.patch_embed = PatchEmbed(in_channels, embed_dims, kernel_size=patch_size,
                                      stride=strides[0], norm_cfg=norm, init_cfg=None)
        self.use_abs_pos_embed = use_abs_pos_embed
        self.abs_pos_grid = (pretrain_hw[0] // patch_size, pretrain_hw[1] // patch_size)
        if use_abs_pos_embed:
            self.absolute_pos_embed = nn.Parameter(
                torch.zeros(1, self.abs_pos_grid[0] * self.abs_pos_grid[1], embed_dims))
        self.drop_after_pos = nn.Dropout(drop_rate)
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            dims = self.num_features[i]
            sched = self.schedule.get(i)
            blocks = [
                DynamicSwinBlock(
                    embed_dims=dims,
                    num_heads=num_heads[i],
                    feedforward_channels=int(mlp_ratio * dims),
                    window_size=window_size,
                    shift=j % 2 == 1,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop_rate=drop_rate,
                    attn_drop_rate=attn_drop_rate,
                    drop_path_rate=dpr[sum(depths[:i]) + j],
                    sparse=sched is not None and sched.is_sparse(j),
                    pad_small_map=pad_small_map,
                    with_cp=with_cp) for j in range(depth)
            ]
            downsample = None
            if i < num_stages - 1:
                downsample = PatchMerging(dims, 2 * dims, stride=strides[i + 1], norm_cfg=norm,
                                          init_cfg=None)
            self.stages.append(SwinStage(blocks, downsample))
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i]))
        self.build_predictors(self.num_features, eps=1e-5)
        self.reset_parameters()
        self.freeze_stages()

    def reset_parameters(self) -> None:
        """Default (random) initialisation of every parameter, predictors included."""
        init_swin_weights(self)
        if self.use_abs_pos_embed:
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        for predictors in self.score_predictors.values():
            for predictor in predictors:
                predictor.init_weights()

    def convert_checkpoint(self, state):
        """Map an mmseg / official / timm / DynamicSwin-authors checkpoint to this layout;
        relative position bias tables of another window size and an absolute position
        embedding of another grid are resized (bicubic, logged)."""
        converted, layout, dropped = convert_swin_checkpoint(state, num_stages=len(self.stages))
        own = self.state_dict()
        resized = fit_window_tables(converted, own)
        pos = converted.get('absolute_pos_embed')
        if self.use_abs_pos_embed and pos is not None and pos.shape != own[
                'absolute_pos_embed'].shape:
            side = int(round(pos.shape[1]**0.5))
            converted['absolute_pos_embed'] = resize_pos_embed(
                pos, (side, side), self.abs_pos_grid, mode='bicubic', num_extra_tokens=0)
            resized.append(f'absolute_pos_embed {side}x{side} -> '
                           f'{self.abs_pos_grid[0]}x{self.abs_pos_grid[1]}')
        if resized:
            print_log('Swin checkpoint resized to this model (bicubic): ' + '; '.join(resized),
                      logger='current')
        return converted, layout, dropped

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """x: (B, in_channels, H, W), any H, W.

        Returns:
            One (B, num_features[i], H_i, W_i) map per ``out_indices`` entry, with
            H_i = ceil(H / (patch_size * 2**i)) (padded inside, as mmseg's Swin).
        """
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            pos = self.absolute_pos_embed
            if tuple(hw_shape) != self.abs_pos_grid:
                pos = resize_pos_embed(pos, self.abs_pos_grid, hw_shape, mode='bicubic',
                                       num_extra_tokens=0)
            x = x + pos
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            decision = None
            for j, block in enumerate(stage.blocks):
                local = self.predictor_at(i, j)
                if local is not None:
                    units, grid, window_size = self._scored_units(x, hw_shape)
                    decision = decide(self.predictor_scores(i, local, units), hw_shape=grid,
                                      window_size=window_size, like=units,
                                      **self.decide_args(i, local))
                x = block(x, hw_shape, decision)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(x)
                out = out.view(-1, *hw_shape, self.num_features[i])
                outs.append(out.permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x, hw_shape = stage.downsample(x, hw_shape)
        return tuple(outs)

    def _scored_units(self, x: Tensor,
                      hw_shape: Tuple[int, int]) -> Tuple[Tensor, Tuple[int, int], Optional[int]]:
        """What a predictor scores on the (H, W) map of tokens x (B, H*W, C): the positions
        (x, (H, W), ``None``), or with ``granularity='window'`` the pooled windows ((B, n, C),
        the window grid, the window size)."""
        if self.granularity == 'token':
            return x, hw_shape, None
        windows, grid = pool_windows(x, hw_shape, self.window_size)
        return windows, grid, self.window_size

    def frozen_parts(self) -> List[Union[nn.Module, nn.Parameter]]:
        """The patch embedding (``frozen_stages >= 0``) and stages 1..frozen_stages with their
        output norms, predictors and fast paths (as mmseg's Swin)."""
        frozen: List[Union[nn.Module, nn.Parameter]] = []
        if self.frozen_stages >= 0:
            frozen += [self.patch_embed, self.drop_after_pos]
            if self.use_abs_pos_embed:
                frozen.append(self.absolute_pos_embed)
        for i in range(self.frozen_stages):
            frozen.append(self.stages[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f'norm{i}'))
            frozen += self.stage_predictors(i)
        return frozen
