"""mmcv's ``ConvModule`` (conv, norm, activation) with the convolution computed sparsely."""
from typing import Optional

from mmcv.cnn import ConvModule
from torch import Tensor, nn

from ..sparse import SparseConvGate, SparsityDecision
from ..sparse.gate import init_fast_path_on_load


class SparseConvModule(ConvModule):
    """A ``ConvModule`` whose kxk convolution runs on kept tiles only, with a 1x1 fast path on
    pruned tiles (:class:`~mmdvit.models.sparse.SparseConvGate`); norm and activation run on
    the whole map afterwards, as in the dense module.

    Takes ``ConvModule``'s arguments and keeps its parameter names (``conv``, ``bn`` / ``gn``
    ...), so checkpoints of the dense module load; the gate adds ``gate.score_predictor.*`` and
    ``gate.fast_path.*``. When a dense checkpoint is loaded, the fast path starts from its
    kernel summed over the taps. At keep ratio 1.0 the module computes exactly the dense
    ``ConvModule`` at inference.

    Args:
        keep_ratio: target fraction of kept tiles, in (0, 1].
        gate_cfg: keyword arguments of :class:`SparseConvGate` other than the channels and the
            ratio (``index``, ``level``, ``source``, ``block``, ``score_dims``).
        *args, **kwargs: ``ConvModule``'s. Supported: stride 1, groups 1, zero padding of
            ``dilation * (k - 1) / 2`` (the same-size convolutions of heads and necks), order
            ``('conv', 'norm', 'act')``.
    """

    def __init__(self, *args, keep_ratio: float, gate_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        conv = self.conv
        k, dilation = conv.kernel_size[0], conv.dilation[0]
        problems = []
        if type(conv) is not nn.Conv2d:
            problems.append(f'a plain Conv2d (got {type(conv).__name__})')
        if conv.kernel_size != (k, k) or k % 2 == 0:
            problems.append(f'an odd square kernel (got {conv.kernel_size})')
        if conv.stride != (1, 1) or conv.groups != 1 or conv.dilation != (dilation, dilation):
            problems.append('stride 1, groups 1 and equal dilations')
        if self.with_explicit_padding or conv.padding != (dilation * (k - 1) // 2, ) * 2:
            problems.append('zero "same" padding (padding = dilation * (k - 1) / 2)')
        if self.order != ('conv', 'norm', 'act'):
            problems.append("order ('conv', 'norm', 'act')")
        if problems:
            raise ValueError('SparseConvModule supports ' + '; '.join(problems) +
                             ': build this layer as a dense ConvModule instead.')
        self.gate = SparseConvGate(conv.in_channels, conv.out_channels, keep_ratio,
                                   bias=conv.bias is not None, **(gate_cfg or {}))
        self.gate.init_fast_path(conv.weight, conv.bias)

    @classmethod
    def from_dense(cls, dense: ConvModule, keep_ratio: float,
                   gate_cfg: Optional[dict] = None) -> 'SparseConvModule':
        """A sparse module built with the settings of the dense ``ConvModule`` it replaces
        (channels, kernel, padding, conv / norm / activation configs); weights are not copied."""
        conv = dense.conv
        return cls(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                   dilation=conv.dilation, conv_cfg=dense.conv_cfg, norm_cfg=dense.norm_cfg,
                   act_cfg=dense.act_cfg, inplace=dense.inplace, keep_ratio=keep_ratio,
                   gate_cfg=gate_cfg)

    @property
    def decision(self) -> Optional[SparsityDecision]:
        """The decision of the last forward pass."""
        return self.gate.decision

    def init_weights(self) -> None:
        super().init_weights()
        if hasattr(self, 'gate'):  # ConvModule.__init__ calls this before the gate exists
            self.gate.init_fast_path(self.conv.weight, self.conv.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        init_fast_path_on_load(self.gate, state_dict, prefix + 'gate.', prefix + 'conv.')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor, activate: bool = True, norm: bool = True) -> Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H, W)."""
        x = self.gate(x, self.conv.weight, self.conv.bias, self.conv.dilation[0])
        if norm and self.with_norm:
            x = self.norm(x)
        if activate and self.with_activation:
            x = self.activate(x)
        return x
