"""DynamicConvNeXt: mmpretrain's ConvNeXt with dynamic spatial sparsification."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmpretrain.models.backbones import ConvNeXt as MMPretrainConvNeXt
from mmpretrain.models.utils import LayerNorm2d
from torch import Tensor, nn

from ...registry import MODELS
from ..checkpoint import convert_convnext_checkpoint
from ...sparse import Locations, build_schedule, decide, trunc_normal_init
from .base import DynamicBackbone
from .convnext_layers import DynamicConvNeXtBlock

# Widths and depths by name: mmpretrain's own table.
CONVNEXT_ARCHS: Dict[str, Dict[str, List[int]]] = MMPretrainConvNeXt.arch_settings
# Published predictor placements by stage depth (0-based block indices; docs/method.md,
# 'Where the predictors sit').
CONVNEXT_PRUNING_LOCS: Dict[int, Tuple[int, ...]] = {9: (1, 2, 3), 27: (3, 6, 9)}


@MODELS.register_module()
class DynamicConvNeXt(DynamicBackbone):
    """ConvNeXt whose sparse stages route each position through a slow or fast pointwise MLP.

    Arguments, defaults and parameter names follow mmpretrain's ``ConvNeXt``, so mmseg / mmdet
    ConvNeXt configs and mmpretrain / official / timm checkpoints carry over, and mmseg's
    ``LearningRateDecayOptimizerConstructor`` places the dense parameters as for ConvNeXt.
    Score predictors live in ``score_predictors.<stage>.<i>`` (outside ``stages``), so that
    constructor gives them the full (head) learning rate; fast paths live in their block
    (``stages.<i>.<j>.fast_path``) and share that block's decayed rate.

    Args:
        arch: a name of :data:`CONVNEXT_ARCHS` or ``dict(depths=[...], channels=[...])``.
        keep_ratios: target keep ratio of each predictor, in forward order. Published:
            (rho, rho - 0.2, rho - 0.4), rho = 0.7 or 0.9.
        sparse_stages: stages that get predictors (0-based). Published: (2,). ``()`` gives the
            dense ConvNeXt.
        pruning_locs: 0-based block indices within each sparse stage with a predictor before
            them. ``None``: (1, 2, 3) for depth 9 and (3, 6, 9) for depth 27.
        in_channels, stem_patch_size, drop_path_rate, layer_scale_init_value, out_indices,
        frozen_stages, gap_before_final_norm, with_cp, init_cfg: as mmpretrain's ``ConvNeXt``.
        linear_pw_conv: as mmpretrain: pointwise layers as ``nn.Linear`` (True) or 1x1
            convolutions (False; the same computation with conv-shaped weights).
        norm_cfg, act_cfg, use_grn: only mmpretrain's defaults (LN2d, GELU, False) are
            supported; other values raise.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 stem_patch_size: int = 4,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 linear_pw_conv: bool = True,
                 use_grn: bool = False,
                 drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6,
                 out_indices: Union[int, Sequence[int]] = -1,
                 frozen_stages: int = 0,
                 gap_before_final_norm: bool = True,
                 with_cp: bool = False,
                 keep_ratios: Sequence[float] = (0.7, 0.5, 0.3),
                 sparse_stages: Sequence[int] = (2, ),
                 pruning_locs: Optional[Locations] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in CONVNEXT_ARCHS:
                raise ValueError(f'arch={arch!r} is unknown; use one of {sorted(CONVNEXT_ARCHS)} '
                                 'or dict(depths=[...], channels=[...]).')
            arch = CONVNEXT_ARCHS[arch]
        elif not (isinstance(arch, dict) and {'depths', 'channels'} <= set(arch)):
            raise ValueError(f'arch={arch!r} must be a name or a dict with depths and channels.')
        self.depths, self.channels = list(arch['depths']), list(arch['channels'])
        if len(self.depths) != len(self.channels):
            raise ValueError(f'arch depths {self.depths} and channels {self.channels} differ in '
                             'length.')
        if norm_cfg is not None and norm_cfg.get('type') != 'LN2d':
            raise ValueError(f'norm_cfg={norm_cfg}: only LN2d is supported.')
        if act_cfg is not None and act_cfg.get('type') != 'GELU':
            raise ValueError(f'act_cfg={act_cfg}: only GELU is supported.')
        if use_grn:
            raise ValueError('use_grn=True (ConvNeXt V2) is not supported: use_grn=False.')
        num_stages = len(self.depths)
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        self.out_indices = tuple(i + num_stages if i < 0 else i for i in out_indices)
        for i, orig in zip(self.out_indices, out_indices):
            if not 0 <= i < num_stages:
                raise ValueError(f'out_indices={tuple(out_indices)}: index {orig} is out of range '
                                 f'for {num_stages} stages.')
        if not 0 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages={frozen_stages} must be in [0, {num_stages}].')
        self.frozen_stages = frozen_stages
        self.gap_before_final_norm = gap_before_final_norm
        self.schedule = build_schedule(self.depths, sparse_stages, pruning_locs, keep_ratios,
                                       CONVNEXT_PRUNING_LOCS)

        self.downsample_layers = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(in_channels, self.channels[0], stem_patch_size,
                          stride=stem_patch_size), LayerNorm2d(self.channels[0], eps=1e-6))
        ])
        for i in range(1, num_stages):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm2d(self.channels[i - 1], eps=1e-6),
                    nn.Conv2d(self.channels[i - 1], self.channels[i], 2, stride=2)))
        total = sum(self.depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList()
        for i, depth in enumerate(self.depths):
            sched = self.schedule.get(i)
            self.stages.append(
                nn.Sequential(*[
                    DynamicConvNeXtBlock(
                        self.channels[i],
                        drop_path_rate=dpr[sum(self.depths[:i]) + j],
                        layer_scale_init_value=layer_scale_init_value,
                        sparse=sched is not None and sched.is_sparse(j),
                        with_cp=with_cp, linear_pw_conv=linear_pw_conv) for j in range(depth)
                ]))
        for i in self.out_indices:
            self.add_module(f'norm{i}', LayerNorm2d(self.channels[i], eps=1e-6))
        self.build_predictors(self.channels, eps=1e-6)
        self.reset_parameters()
        self.freeze_stages()

    def reset_parameters(self) -> None:
        """Default initialisation (mmpretrain's ConvNeXt init_cfg): truncated normal (std 0.02)
        conv / linear weights, zero biases, unit LayerNorms; layer scales keep their value."""
        trunc_normal_init(self, layers=(nn.Conv2d, nn.Linear))

    def convert_checkpoint(self, state):
        """Map an mmpretrain / official / timm / DynamicCNN-authors checkpoint to this layout."""
        return convert_convnext_checkpoint(state, num_stages=len(self.stages))

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """x: (B, in_channels, H, W), any H, W >= 32.

        Returns:
            One map per ``out_indices`` entry: (B, C_i, H_i, W_i), or (B, C_i) pooled features
            when ``gap_before_final_norm``.
        """
        outs = []
        for i, stage in enumerate(self.stages):
            x = self.downsample_layers[i](x)
            decision = None
            for j, block in enumerate(stage):
                local = self.predictor_at(i, j)
                if local is not None:
                    tokens = x.flatten(2).transpose(1, 2)
                    decision = decide(self.predictor_scores(i, local, tokens),
                                      hw_shape=x.shape[-2:], like=tokens,
                                      **self.decide_args(i, local))
                x = block(x, decision)
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}')
                if self.gap_before_final_norm:
                    outs.append(norm(x.mean([-2, -1], keepdim=True)).flatten(1))
                else:
                    outs.append(norm(x))
        return tuple(outs)

    def frozen_parts(self) -> List[nn.Module]:
        """Downsample layers and stages 0..frozen_stages-1 with their predictors and fast paths
        (as mmpretrain's ConvNeXt)."""
        frozen: List[nn.Module] = []
        for i in range(self.frozen_stages):
            frozen += [self.downsample_layers[i], self.stages[i]] + self.stage_predictors(i)
        return frozen
