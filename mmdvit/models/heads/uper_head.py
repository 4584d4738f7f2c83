"""DynamicUPerHead: mmseg's UPerHead with its high-resolution 3x3 convolutions run sparsely."""
from typing import Optional, Sequence

from mmseg.models.decode_heads import UPerHead

from ...registry import MODELS
from ..layers import SparseConvModule
from ...sparse import SparseModule, block_at_level, check_gate_args


@MODELS.register_module()
class DynamicUPerHead(SparseModule, UPerHead):
    """UPerNet's decode head with spatially sparse ``fpn_convs`` / ``fpn_bottleneck``.

    Most of a UPerNet's cost is this head's 3x3 convolutions at 1/4 scale: ``fpn_bottleneck``
    (4 x channels -> channels) and ``fpn_convs.0``. Each convolution named in
    ``sparse_convs`` becomes a :class:`~mmdvit.models.layers.SparseConvModule`: a predictor
    scores the tiles of its input, the kept tiles take the full convolution, the pruned ones a
    cheap fast path (``fast_path_kind``), then norm and activation run on the whole map.
    Everything else is mmseg's ``UPerHead``: same arguments, same parameter names (an mmseg
    UPerNet checkpoint loads, with only the ``gate.*`` modules new), and at every keep ratio
    1.0 the same output.

    Each forward pass makes one :class:`~mmdvit.sparse.SparsityDecision` per sparse
    convolution (:func:`~mmdvit.sparse.record_decisions` collects them), in forward order
    (``fpn_convs.<i>`` by level, then ``fpn_bottleneck``), with ``source='decode_head'`` and
    ``stage`` = the pyramid level (0 = 1/4 scale).

    Args:
        keep_ratios: target fraction of kept tiles of each sparse convolution, in forward
            order; each in (0, 1].
        sparse_convs: which convolutions run sparsely: ``'fpn_convs.<i>'`` (i < number of
            input levels - 1) and / or ``'fpn_bottleneck'``.
        block_size: tile size at level 0 (1/4 scale); level i uses ``block_size / 2**i``, so
            every tile covers the same image area.
        score_dims: width of each score predictor.
        fast_path_kind: what pruned tiles compute: ``'1x1'`` (default), ``'dw3x3'`` (a
            depthwise 3x3, then the 1x1; adds ``gate.fast_path_dw``) or ``'lowrank'`` (the 1x1
            plus a rank-``fast_path_rank`` 3x3; adds ``gate.fast_path_down`` / ``_up``), see
            :class:`~mmdvit.sparse.SparseConvGate`.
        fast_path_rank: the rank of every ``'lowrank'`` fast path; only with it.
        detail_cue, neighbour_bonus: options of every predictor that favour tiles holding small
            or thin things (:class:`~mmdvit.sparse.BlockScorePredictor`); off by default.
        **kwargs: ``UPerHead``'s arguments (``pool_scales``, ``in_channels``, ``channels``,
            ``norm_cfg``, ...).
    """

    def __init__(self,
                 keep_ratios: Sequence[float] = (0.5, 0.5),
                 sparse_convs: Sequence[str] = ('fpn_convs.0', 'fpn_bottleneck'),
                 block_size: int = 16,
                 score_dims: int = 64,
                 fast_path_kind: str = '1x1',
                 fast_path_rank: Optional[int] = None,
                 detail_cue: bool = False,
                 neighbour_bonus: float = 0.0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        names = [f'fpn_convs.{i}' for i in range(len(self.fpn_convs))] + ['fpn_bottleneck']
        unknown = [n for n in sparse_convs if n not in names]
        if unknown or len(set(sparse_convs)) != len(sparse_convs):
            raise ValueError(f'DynamicUPerHead: sparse_convs={tuple(sparse_convs)} must name '
                             f'distinct convolutions among {names} (unknown: {unknown}).')
        check_gate_args('DynamicUPerHead', 'sparse_convs', sparse_convs, keep_ratios, block_size)
        ratio_of = dict(zip(sparse_convs, keep_ratios))
        self.sparse_convs = tuple(n for n in names if n in ratio_of)  # forward order
        for index, name in enumerate(self.sparse_convs):
            level = int(name.split('.')[1]) if name.startswith('fpn_convs.') else 0
            gate_cfg = dict(index=index, level=level, source='decode_head',
                            block=block_at_level(block_size, level), score_dims=score_dims,
                            fast_path_kind=fast_path_kind, fast_path_rank=fast_path_rank,
                            detail_cue=detail_cue, neighbour_bonus=neighbour_bonus)
            sparse = SparseConvModule.from_dense(
                self.get_submodule(name), ratio_of[name], gate_cfg,
                name=f"DynamicUPerHead's {name}", fix=f'remove {name!r} from sparse_convs')
            if name.startswith('fpn_convs.'):
                self.fpn_convs[level] = sparse
            else:
                self.fpn_bottleneck = sparse
