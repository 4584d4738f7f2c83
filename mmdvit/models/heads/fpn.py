"""DynamicFPN: mmdet's FPN with the 3x3 output convolutions of chosen levels run sparsely."""
from typing import Sequence

from mmdet.models.necks import FPN

from ...registry import MODELS
from ..layers import SparseConvModule
from ...sparse import SparseModule, block_at_level, check_gate_args


@MODELS.register_module()
class DynamicFPN(SparseModule, FPN):
    """mmdet's ``FPN`` with spatially sparse ``fpn_convs`` at the levels in ``sparse_levels``.

    The 3x3 output convolution of the finest level (``fpn_convs.0``, P2 at 1/4 scale) is the
    neck's largest cost. Each level in ``sparse_levels`` gets a
    :class:`~mmdvit.models.layers.SparseConvModule` built with the dense module's arguments: a
    predictor scores the ``block x block`` tiles of the merged lateral map, the kept tiles take
    the 3x3 convolution, the pruned ones a 1x1 fast path. Everything else is mmdet's ``FPN``:
    same arguments, same parameter names (the ``neck.*`` of an mmdet Faster / Mask R-CNN
    checkpoint loads, only the ``gate.*`` modules are new, their fast paths starting from the
    loaded kernels), and at every keep ratio 1.0 the same outputs.

    Padded images: mmdet pads each batch (bottom / right) to a multiple of 32; padded positions
    are treated like any other, so their tiles compete for the same budget of kept tiles (a
    trained predictor learns to prune flat padding), as in the dynamic backbones.

    Each forward pass makes one :class:`~mmdvit.sparse.SparsityDecision` per sparse level, in
    level order (:func:`~mmdvit.sparse.record_decisions` collects them), with
    ``source='neck'``, ``stage`` = the output level and ``hw_shape`` = the tile grid.

    Args:
        *args: ``FPN``'s positional arguments (``in_channels``, ``out_channels``,
            ``num_outs``).
        keep_ratios: target fraction of kept tiles of each level in ``sparse_levels``; each in
            (0, 1].
        sparse_levels: output levels whose ``fpn_convs`` run sparsely, distinct and increasing,
            each below the number of levels built from the inputs (0 = the finest output, P2
            in Faster / Mask R-CNN). Extra levels (max-pooled or strided convolutions) stay
            dense.
        block_size: tile size at output level 0; level i uses ``block_size / 2**i`` (at least
            1), so every tile covers the same image area.
        score_dims: width of each score predictor.
        **kwargs: ``FPN``'s keyword arguments.
    """

    def __init__(self,
                 *args,
                 keep_ratios: Sequence[float] = (0.5, ),
                 sparse_levels: Sequence[int] = (0, ),
                 block_size: int = 16,
                 score_dims: int = 64,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        levels = tuple(sparse_levels)
        check_gate_args('DynamicFPN', 'sparse_levels', levels, keep_ratios, block_size,
                        len(self.lateral_convs), 'the fpn_convs built from input levels; '
                        'extra levels cannot be sparse')
        self.sparse_levels = levels
        for index, (level, ratio) in enumerate(zip(levels, keep_ratios)):
            self.fpn_convs[level] = SparseConvModule.from_dense(
                self.fpn_convs[level], ratio,
                dict(index=index, level=level, source='neck',
                     block=block_at_level(block_size, level), score_dims=score_dims),
                name=f"DynamicFPN's fpn_convs.{level}",
                fix=f'remove level {level} from sparse_levels')

    def init_weights(self) -> None:
        """``FPN``'s initialisation, then the fast paths re-derived from the initialised
        kernels (the ``init_cfg`` for every ``Conv2d`` also reaches the fast paths)."""
        super().init_weights()
        for level in self.sparse_levels:
            module = self.fpn_convs[level]
            module.gate.init_fast_path(module.conv.weight, module.conv.bias)
