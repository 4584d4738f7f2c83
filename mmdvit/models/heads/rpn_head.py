"""DynamicRPNHead: mmdet's RPNHead with its shared 3x3 convolution run sparsely on chosen
levels."""
from typing import List, Optional, Sequence, Tuple

import torch.nn.functional as F
from mmdet.models.dense_heads import RPNHead
from mmdet.models.utils import multi_apply
from torch import Tensor, nn

from ...registry import MODELS
from ...sparse import (SparseConvGate, SparseModule, block_at_level, check_gate_args,
                       init_fast_path_on_load)


@MODELS.register_module()
class DynamicRPNHead(SparseModule, RPNHead):
    """mmdet's ``RPNHead`` whose 3x3 ``rpn_conv`` runs spatially sparsely on the levels in
    ``sparse_levels``.

    ``rpn_conv`` is shared by all levels, so its cost is dominated by the finest one (P2). Each
    level in ``sparse_levels`` has its own :class:`~mmdvit.sparse.SparseConvGate` in
    ``rpn_gates`` (a score predictor and a 1x1 fast path) that uses ``rpn_conv``'s weights as
    the slow path: kept ``block x block`` tiles take the 3x3 convolution, pruned ones the fast
    path; ReLU, ``rpn_cls`` and ``rpn_reg`` then run on the whole map. Other levels run as in
    mmdet. Same arguments and parameter names as ``RPNHead`` (the ``rpn_head.*`` of an mmdet
    checkpoint loads, only ``rpn_gates.*`` are new, their fast paths starting from the loaded
    ``rpn_conv`` kernel summed over its taps), and at every keep ratio 1.0 the same outputs.
    ``loss``, ``predict`` and ``loss_and_predict`` all go through :meth:`forward`.

    Padded images: mmdet pads each batch (bottom / right) to a multiple of 32; padded positions
    are treated like any other, so their tiles compete for the same budget of kept tiles (a
    trained predictor learns to prune flat padding), as in the dynamic backbones.

    Each forward pass makes one :class:`~mmdvit.sparse.SparsityDecision` per sparse level, in
    level order (:func:`~mmdvit.sparse.record_decisions` collects them), with
    ``source='rpn_head'``, ``stage`` = the level and ``hw_shape`` = the tile grid.

    Args:
        *args: ``RPNHead``'s positional arguments (``in_channels``, ...). Only
            ``num_convs=1`` (a plain shared ``Conv2d``, the mmdet default) is supported.
        keep_ratios: target fraction of kept tiles of each level in ``sparse_levels``; each in
            (0, 1].
        sparse_levels: input levels whose ``rpn_conv`` runs sparsely, distinct and increasing,
            each below the number of levels of the anchor generator (0 = the finest).
        block_size: tile size at level 0; level i uses ``block_size / 2**i`` (at least 1), so
            every tile covers the same image area.
        score_dims: width of each score predictor.
        **kwargs: ``RPNHead``'s keyword arguments.
    """

    def __init__(self,
                 *args,
                 keep_ratios: Sequence[float] = (0.5, ),
                 sparse_levels: Sequence[int] = (0, ),
                 block_size: int = 16,
                 score_dims: int = 64,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.num_convs != 1:
            raise ValueError(f'DynamicRPNHead: num_convs={self.num_convs} is not supported: '
                             'use num_convs=1 (one shared 3x3 Conv2d), or mmdet\'s RPNHead.')
        levels = tuple(sparse_levels)
        check_gate_args('DynamicRPNHead', 'sparse_levels', levels, keep_ratios, block_size,
                        self.prior_generator.num_levels, 'the anchor generator')
        self.sparse_levels = levels
        self.rpn_gates = nn.ModuleList(
            SparseConvGate(self.in_channels, self.feat_channels, ratio, index=index, level=level,
                           source='rpn_head', block=block_at_level(block_size, level),
                           score_dims=score_dims)
            for index, (level, ratio) in enumerate(zip(levels, keep_ratios)))
        self._init_fast_paths()

    def _init_fast_paths(self) -> None:
        """Start every fast path from ``rpn_conv``'s kernel summed over its taps."""
        for gate in self.rpn_gates:
            gate.init_fast_path(self.rpn_conv.weight, self.rpn_conv.bias)

    def init_weights(self) -> None:
        """``RPNHead``'s initialisation, then the fast paths re-derived from the initialised
        kernel (the ``init_cfg`` for every ``Conv2d`` also reaches the fast paths)."""
        super().init_weights()
        self._init_fast_paths()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for index, gate in enumerate(self.rpn_gates):
            init_fast_path_on_load(gate, state_dict, f'{prefix}rpn_gates.{index}.',
                                   prefix + 'rpn_conv.')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tuple[Tensor, ...]) -> Tuple[List[Tensor], List[Tensor]]:
        """x: (B, C, H_l, W_l) per level -> (cls_scores, bbox_preds), lists over levels of
        (B, A, H_l, W_l) and (B, A * D, H_l, W_l) for A anchors per position and D box
        deltas."""
        return multi_apply(self.forward_single, x, range(len(x)))

    def forward_single(self, x: Tensor, level: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """One level: x (B, C, H, W) -> cls score (B, A, H, W), bbox pred (B, A * D, H, W);
        sparse when ``level`` is in ``sparse_levels``, mmdet's otherwise."""
        if level not in self.sparse_levels:
            return super().forward_single(x)
        gate = self.rpn_gates[self.sparse_levels.index(level)]
        x = F.relu(gate(x, self.rpn_conv.weight, self.rpn_conv.bias))
        return self.rpn_cls(x), self.rpn_reg(x)
