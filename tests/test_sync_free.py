"""No host synchronisation on the accelerator path (issue: sync-free on every accelerator).

Each dynamic backbone, the sparse heads and the whole models run with the accelerator path
forced on CPU (:func:`~mmdvit.sparse.accelerator.accelerator_path`, the path every GPU
takes) under :class:`NoHostSync`, which fails on every op that would read a value back to the
host or copy a host-built constant to the device on a GPU: at inference and in a training step
(loss + backward).
"""
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, List

import pytest
import torch
from mmengine.config import Config
from test_backbone_sparsity import tiny_convnext, tiny_swin
from test_dynamic_lvvit import tiny_lvvit
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from mmdvit.analysis.inputs import model_inputs, sample_photos
from mmdvit.analysis.models import build_model, model_config
from mmdvit.models import DynamicViT, keep_ratio_loss
from mmdvit.sparse import decide, record_decisions
from mmdvit.sparse.accelerator import accelerator_path
from mmdvit.models.wrappers.distill import feature_mse, logit_kl

ROOT = Path(__file__).resolve().parents[1]
aten = torch.ops.aten
# Ops whose result decides a shape or a Python value from tensor data: on a GPU each waits for
# the device (a value read back) ...
SYNCING_OPS = {aten._local_scalar_dense.default: 'reads a value back to the host',
               aten.nonzero.default: 'has a data-dependent output shape',
               aten.masked_select.default: 'has a data-dependent output shape',
               aten.unique_dim.default: 'has a data-dependent output shape',
               aten._unique2.default: 'has a data-dependent output shape',
               aten.repeat_interleave.Tensor: 'has a data-dependent output shape'}
INDEXING_OPS = (aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
                aten._index_put_impl_.default)
# Python-level reads of tensor data, which bypass the dispatcher on CPU tensors ...
HOST_READS = (Tensor.tolist, Tensor.numpy)
# ... and constants built from Python data on the host (copied to the device on a GPU). A
# scalar written into a tensor (``x[i] = 1.0``) is not one: on a GPU it is filled there.
HOST_CONSTANTS = (torch.tensor, Tensor.new_tensor, torch.as_tensor)


class HostSync(AssertionError):
    """An op that synchronises with the host ran on the accelerator path."""


class NoHostSync(TorchDispatchMode):
    """Fails on ops that synchronise a GPU with the host: value reads (``.item()``,
    ``bool()``) and data-dependent shapes (``nonzero``, ``masked_select``, boolean-mask
    ``index`` / ``index_put``)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNCING_OPS:
            raise HostSync(f'{func} {SYNCING_OPS[func]}')
        if func in INDEXING_OPS and any(
                isinstance(i, Tensor) and i.dtype == torch.bool for i in _indices(func, args)):
            raise HostSync(f'{func} with a boolean mask has a data-dependent shape')
        return func(*args, **kwargs)


class NoHostRead(TorchFunctionMode):
    """Fails on ``Tensor.tolist`` / ``Tensor.numpy``, which read CPU tensors without passing
    through the dispatcher (on a GPU they copy to the host and wait), and on tensors built from
    Python data (``torch.tensor``, ``new_tensor``, ``as_tensor`` of a non-tensor)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            raise HostSync(f'Tensor.{func.__name__} reads values back to the host')
        data = args[1] if func is Tensor.new_tensor else args[0] if args else None
        if func in HOST_CONSTANTS and not isinstance(data, Tensor):
            raise HostSync(f'{func.__name__} builds a constant on the host')
        return func(*args, **(kwargs or {}))


def _indices(func, args) -> List:
    """The index tensors of an ``index`` / ``index_put`` call."""
    indices = args[1] if len(args) > 1 else []
    return [i for i in indices if i is not None]


class sync_free:  # noqa: N801 - used as a context manager, like torch's modes
    """Accelerator path forced on CPU, and every host synchronisation an error."""

    def __enter__(self):
        self._stack = [accelerator_path(), NoHostRead(), NoHostSync()]
        for ctx in self._stack:
            ctx.__enter__()
        return self

    def __exit__(self, *exc):
        for ctx in reversed(self._stack):
            ctx.__exit__(*exc)
        return False


def _outputs(out) -> Iterator[Tensor]:
    """Every tensor of a nested model output."""
    if isinstance(out, Tensor):
        yield out
    elif isinstance(out, (list, tuple)):
        for item in out:
            yield from _outputs(item)
    elif isinstance(out, dict):
        for item in out.values():
            yield from _outputs(item)


def _check(model: nn.Module, forward: Callable[[], object]) -> None:
    """Inference, then a training step (a loss on every output and the keep-ratio loss of
    every decision, backward), each under :class:`sync_free`."""
    model.eval()
    with torch.no_grad(), sync_free(), record_decisions() as decisions:
        out = list(_outputs(forward()))
    assert out and all(torch.isfinite(o).all() for o in out)
    assert any(d.order is not None for d in decisions)  # something was pruned
    model.train()
    with sync_free():
        with record_decisions() as decisions:
            outs = list(_outputs(forward()))
        loss = sum(o.float().pow(2).mean() for o in outs) + keep_ratio_loss(decisions)
        loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if 'predictor' in n]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


BACKBONES = {
    'swin-token': lambda: tiny_swin(),
    'swin-window': lambda: tiny_swin(granularity='window', window_size=4,
                                     sparse_stages=(0, 1, 2), pruning_locs=((0, ), (0, ), (0, 1)),
                                     keep_ratios=(0.6, 0.6, 0.5, 0.4)),
    'convnext': lambda: tiny_convnext(),
    'deit': lambda: DynamicViT(arch=dict(embed_dims=32, num_layers=4, num_heads=2), img_size=64,
                               pruning_locs=(1, 2, 3), keep_ratios=(0.7, 0.49, 0.343)),
    'lvvit': lambda: tiny_lvvit(),
}


@pytest.mark.parametrize('name', BACKBONES)
def test_dynamic_backbones_run_without_host_sync(name):
    torch.manual_seed(0)
    backbone = BACKBONES[name]()
    x = torch.randn(2, 3, 64, 64)
    _check(backbone, lambda: backbone(x))


WHOLE = {'upernet-swin': 'upernet_dvit_swin_whole_demo.py',
         'upernet-convnext': 'upernet_dvit_convnext_whole_demo.py',
         'maskrcnn-swin': 'maskrcnn_dvit_swin_whole_demo.py',
         'maskrcnn-convnext': 'maskrcnn_dvit_convnext_whole_demo.py'}


@pytest.mark.parametrize('name', WHOLE)
def test_whole_models_run_without_host_sync(name):
    """UPerNet (backbone + sparse decode head, the segmentor's ``tensor`` mode) and Mask R-CNN
    (backbone + sparse FPN + the sparse RPN convolutions) at the demo widths."""
    torch.manual_seed(0)
    cfg = Config.fromfile(str(ROOT / 'configs' / 'demo' / WHOLE[name]))
    model = build_model(model_config(cfg), cfg.default_scope)
    shape = (128, 128) if name.startswith('upernet') else (160, 256)
    data = model_inputs(model, sample_photos(1) * 2, shape)
    if name.startswith('upernet'):
        _check(model, lambda: model(data['inputs'], data['data_samples'], mode='tensor'))
    else:
        _check(model, lambda: model.rpn_head(model.neck(model.backbone(data['inputs']))))


def test_the_sync_check_catches_host_reads():
    """Each kind of host synchronisation fails under :class:`sync_free`."""
    x = torch.randn(4, 3)
    cases = {'item': lambda: x[0, 0].item(), 'bool': lambda: bool(x.sum() > 0),
             'tolist': lambda: x.tolist(), 'nonzero': lambda: x.nonzero(),
             'mask': lambda: x[x > 0], 'mask-put': lambda: x.clone().__setitem__(x > 0, 0.0),
             'constant': lambda: x.new_tensor([1.0, 2.0]), 'tensor': lambda: torch.tensor(3)}
    for name, case in cases.items():
        with pytest.raises(HostSync), sync_free():
            case()
    with sync_free():  # index arithmetic on tensors is fine
        x.index_select(0, torch.arange(2)).masked_fill(x[:2] > 0, 0.0)


def test_distillation_terms_run_without_host_sync():
    """The terms :class:`~mmdvit.models.SparsityTrainer` adds: DynamicViT's token distillation
    (over the tokens kept last), feature MSE, logit KL and the keep-ratio loss; the token term
    equals the mean over the kept tokens, and is 0 when none is kept."""
    torch.manual_seed(0)
    model = DynamicViT(arch=dict(embed_dims=32, num_layers=4, num_heads=2), img_size=64,
                       pruning_locs=(1, 2, 3), keep_ratios=(0.7, 0.49, 0.343),
                       distill_tokens=True).train()
    x = torch.randn(2, 3, 64, 64)
    with sync_free():
        with record_decisions() as decisions:
            student = model(x)
        teacher = tuple(s.detach() + torch.randn_like(s) for s in student)
        loss = (model.feature_distill_loss(student, teacher, decisions)
                + feature_mse(student, teacher) + logit_kl(student[1], teacher[1])
                + keep_ratio_loss(decisions))
        loss.backward()
    kept = decisions[-1].keep_mask.bool()
    expected = (student[0] - teacher[0])[kept].pow(2).mean()
    torch.testing.assert_close(model.feature_distill_loss(student, teacher, decisions), expected)
    none_kept = replace(decisions[-1], keep_mask=torch.zeros_like(decisions[-1].keep_mask))
    assert model.feature_distill_loss(student, teacher, [none_kept]).item() == 0.0


def test_non_finite_scores_are_refused_on_the_device():
    """On the accelerator path the check of non-finite scores is queued on the device
    (``torch._assert_async``: no host read); on CPU it fails at once with the message naming
    the predictor. ``off`` skips it."""
    log_probs = torch.randn(2, 20, 2).log_softmax(-1)
    with sync_free():
        decide(log_probs, 0.5, False, 1, 2, (4, 5))
        log_probs[1, 3] = float('nan')
        with pytest.raises(RuntimeError, match=r'backbone predictor 2 \(stage 1\) produced non'):
            decide(log_probs, 0.5, False, 1, 2, (4, 5))
