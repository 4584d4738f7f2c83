"""mmcv's ``ConvModule`` (conv, norm, activation) with the convolution computed sparsely."""
from typing import Dict, List, Optional

from mmcv.cnn import ConvModule
from torch import Tensor, nn

from ...sparse import SparseConvGate, init_fast_path_on_load

SUPPORTED = ('a plain Conv2d with an odd square kernel, stride 1, groups 1, equal dilations, '
             "zero padding of dilation * (k - 1) / 2 (padding_mode 'zeros'), no spectral norm, "
             "order ('conv', 'norm', 'act')")
# ConvModule's own flags that shape its computation (its layers' settings are in their reprs).
FLAGS = ('order', 'with_norm', 'with_activation', 'with_bias', 'with_explicit_padding',
         'with_spectral_norm', 'norm_name', 'inplace')


def unsupported(module: ConvModule) -> List[str]:
    """What a ``ConvModule`` does that the sparse convolution
    (:func:`~mmdvit.sparse.sparse_conv2d`) cannot compute; empty when it can compute all of it."""
    conv = module.conv
    if type(conv) is not nn.Conv2d:
        return [f'a {type(conv).__name__} convolution (conv_cfg={module.conv_cfg})']
    problems = []
    k, dilation = conv.kernel_size[0], conv.dilation[0]
    if conv.kernel_size != (k, k) or k % 2 == 0:
        problems.append(f'kernel size {conv.kernel_size}')
    if conv.stride != (1, 1):
        problems.append(f'stride {conv.stride}')
    if conv.groups != 1:
        problems.append(f'groups {conv.groups}')
    if conv.dilation != (dilation, dilation):
        problems.append(f'dilation {conv.dilation}')
    if module.with_explicit_padding or conv.padding_mode != 'zeros':
        mode = type(module.padding_layer).__name__ if module.with_explicit_padding else (
            repr(conv.padding_mode))
        problems.append(f'padding_mode {mode}')
    elif conv.padding != (dilation * (k - 1) // 2, ) * 2:
        problems.append(f'padding {conv.padding} for kernel {k} and dilation {dilation} (not '
                        'the size-keeping dilation * (k - 1) / 2)')
    if module.with_spectral_norm:
        problems.append('spectral norm')
    if tuple(module.order) != ('conv', 'norm', 'act'):
        problems.append(f'order {module.order}')
    return problems


def settings(module: ConvModule) -> Dict[str, str]:
    """Everything that shapes a ``ConvModule``'s computation: its layers' reprs (which list
    their hyperparameters: channels, kernel, stride, padding, padding mode, bias, norm eps /
    momentum, activation ...), its flags and whether conv + BN fuse at evaluation."""
    out = {name: repr(child) for name, child in module.named_children() if name != 'gate'}
    out.update({flag: repr(getattr(module, flag, None)) for flag in FLAGS})
    out['efficient_conv_bn_eval'] = repr(
        getattr(module, 'efficient_conv_bn_eval_forward', None) is not None)
    return out


class SparseConvModule(ConvModule):
    """A ``ConvModule`` whose kxk convolution runs on kept tiles only, with a 1x1 fast path on
    pruned tiles (:class:`~mmdvit.sparse.SparseConvGate`); norm and activation run on
    the whole map afterwards, as in the dense module.

    Takes ``ConvModule``'s arguments and keeps its parameter names (``conv``, ``bn`` / ``gn``
    ...), so checkpoints of the dense module load; the gate adds ``gate.score_predictor.*`` and
    ``gate.fast_path.*`` (and ``gate.fast_path_dw.*`` with ``fast_path_kind='dw3x3'``,
    ``gate.fast_path_down.*`` / ``gate.fast_path_up.*`` with ``'lowrank'``). When a
    dense checkpoint is loaded, the fast path starts from its kernel summed over the taps. At
    keep ratio 1.0 the predictor is skipped and the module computes the dense ``ConvModule``,
    in training and at inference.

    Args:
        keep_ratio: target fraction of kept tiles, in (0, 1].
        gate_cfg: keyword arguments of :class:`SparseConvGate` other than the channels, the
            ratio and the kernel size (``index``, ``level``, ``source``, ``block``,
            ``score_dims``, ``fast_path_kind``, ``fast_path_rank``).
        *args, **kwargs: ``ConvModule``'s. Supported: :data:`SUPPORTED` (the same-size
            convolutions of heads and necks); anything else raises. ``efficient_conv_bn_eval``
            is accepted, but conv and norm run one after the other (the same values).
    """

    def __init__(self, *args, keep_ratio: float, gate_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        problems = unsupported(self)
        if problems:
            raise ValueError(f'SparseConvModule computes only {SUPPORTED}; got '
                             f'{"; ".join(problems)}: build this layer as a dense ConvModule '
                             'instead.')
        conv = self.conv
        self.gate = SparseConvGate(conv.in_channels, conv.out_channels, keep_ratio,
                                   bias=conv.bias is not None, kernel_size=conv.kernel_size[0],
                                   **(gate_cfg or {}))
        self.gate.init_fast_path(conv.weight, conv.bias)

    @classmethod
    def from_dense(cls, dense: ConvModule, keep_ratio: float, gate_cfg: Optional[dict] = None,
                   name: str = 'the ConvModule',
                   fix: str = 'keep it a dense ConvModule') -> 'SparseConvModule':
        """A sparse module with every setting of the dense ``ConvModule`` it replaces (weights
        are not copied).

        Args:
            dense: the module to replace.
            keep_ratio, gate_cfg: as for the constructor.
            name: how errors name ``dense`` (e.g. ``"DynamicUPerHead's fpn_bottleneck"``).
            fix: what errors advise instead (e.g. ``"remove 'fpn_bottleneck' from
                sparse_convs"``).

        Raises:
            ValueError: naming ``dense``, what the sparse convolution cannot compute in it
                (:func:`unsupported`) and ``fix``; or a setting that the rebuilt module does
                not reproduce.
        """
        problems = unsupported(dense)
        if problems:
            raise ValueError(f'{name} cannot run sparsely: it has {"; ".join(problems)}, and '
                             f'SparseConvModule computes only {SUPPORTED}. To use it, {fix}.')
        conv = dense.conv
        sparse = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                     padding=dense.padding, dilation=conv.dilation, groups=conv.groups,
                     bias=dense.with_bias, conv_cfg=dense.conv_cfg, norm_cfg=dense.norm_cfg,
                     act_cfg=dense.act_cfg, inplace=dense.inplace,
                     with_spectral_norm=dense.with_spectral_norm,
                     padding_mode=conv.padding_mode, order=dense.order,
                     efficient_conv_bn_eval=getattr(dense, 'efficient_conv_bn_eval_forward',
                                                    None) is not None,
                     keep_ratio=keep_ratio, gate_cfg=gate_cfg)
        want, got = settings(dense), settings(sparse)
        differ = [f'{key}: {want.get(key)} != {got.get(key)}'
                  for key in sorted(set(want) | set(got)) if want.get(key) != got.get(key)]
        if differ:
            raise ValueError(f'{name}: the sparse module rebuilt from it differs in '
                             f'{"; ".join(differ)}. To use it, {fix}.')
        return sparse

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
