"""Counting the kernel-launching aten ops of a forward pass.

At batch 1-8 a GPU runs these models launch-bound: every small kernel costs time whatever its
size, so the number of ops a forward launches is what the sparse paths must keep close to the
dense model's. :func:`count_ops` counts the aten ops that reach the dispatcher's kernels under a
``TorchDispatchMode``, with the sparse modules on their accelerator path
(:func:`~mmdvit.sparse.accelerator_path`, the code a GPU runs), and leaves
out :data:`METADATA_OPS`: views and other ops that only change a tensor's metadata (shape,
strides, offset) and launch no kernel. :func:`compiled_kernels` counts instead the kernels one
call of the ``torch.compile`` (inductor) graph runs: fused generated kernels and library calls
(matrix products, convolutions, attention, sort), what CUDA graphs would replay.
"""
from collections import Counter
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..models.dense_twin import dense_twin_config
from ..sparse import BlockScorePredictor, ScorePredictor, accelerator_path
from .complexity import backbone_of
from .inputs import model_inputs
from .models import (build_model, copy_shared_weights, default_scope, load_weights,
                     model_config)

aten = torch.ops.aten
# Ops that return a view, allocate without writing, or only read metadata: no kernel on a GPU.
# (``reshape`` / ``contiguous`` / ``flatten`` reach the dispatcher as a view or, when they copy,
# as ``clone`` / ``_unsafe_view``; the copy counts.)
METADATA_OPS = frozenset({
    aten.view, aten._unsafe_view, aten.reshape, aten._reshape_alias, aten.as_strided,
    aten.expand, aten.t, aten.permute, aten.transpose, aten.slice, aten.select, aten.unsqueeze,
    aten.squeeze, aten.detach, aten.alias, aten.unfold, aten.split, aten.split_with_sizes,
    aten.unbind, aten.chunk, aten.narrow, aten.flatten, aten.unflatten, aten.view_as,
    aten.expand_as, aten.diagonal, aten.lift_fresh, aten.empty, aten.empty_strided,
    aten.empty_like, aten.new_empty, aten.new_empty_strided, aten.sym_size, aten.sym_stride,
    aten.sym_numel, aten.sym_storage_offset, aten.dim, aten.is_contiguous, aten.stride,
    aten.size, aten.numel, aten.result_type, aten.promote_types, aten._local_scalar_dense
})


class OpCounter(TorchDispatchMode):
    """Counts the kernel-launching aten ops (by overload packet) run inside the mode, and
    apart, in ``predictor_ops``, those run inside the score predictors (:func:`in_predictors`)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()
        self.predictor_ops = 0
        self.predictor_depth = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet not in METADATA_OPS:
            self.counts[str(packet).replace('aten.', '')] += 1
            self.predictor_ops += self.predictor_depth > 0
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """Kernel-launching ops counted so far."""
        return sum(self.counts.values())


@contextmanager
def in_predictors(model: nn.Module, counter: OpCounter) -> Iterator[None]:
    """While open, ``counter`` also counts apart the ops run inside ``model``'s score
    predictors (:class:`~mmdvit.sparse.ScorePredictor`,
    :class:`~mmdvit.sparse.BlockScorePredictor`): the share of the sparse model's ops that no
    leaner routing can remove."""

    def enter(module: nn.Module, args: Any) -> None:
        counter.predictor_depth += 1

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        counter.predictor_depth -= 1

    handles: List[Any] = []
    for module in model.modules():
        if isinstance(module, (ScorePredictor, BlockScorePredictor)):
            handles += [module.register_forward_pre_hook(enter),
                        module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_ops(fn: Callable[..., Any], *args: Any, counter: Optional[OpCounter] = None,
              **kwargs: Any) -> int:
    """Kernel-launching aten ops of ``fn(*args, **kwargs)`` without gradients, with the sparse
    modules on their accelerator path (what a GPU runs; :data:`METADATA_OPS` left out).

    The call is counted in the steady state of a model serving inputs of one shape: after one
    uncounted warm-up call, which builds the index maps the sparse modules keep per input
    shape (:func:`~mmdvit.sparse.gather.shape_cached`).

    Args:
        counter: an :class:`OpCounter` to count into (to read the per-op ``counts``); a fresh
            one by default.
    """
    counter = OpCounter() if counter is None else counter
    with torch.no_grad(), accelerator_path():
        fn(*args, **kwargs)
        with counter:
            fn(*args, **kwargs)
    return counter.total


COMPILED_GRAPH_CALL = '## Call CompiledFxGraph'
_METADATA_EVENTS = frozenset('aten::' + str(op).replace('aten.', '') for op in METADATA_OPS)


def compiled_kernels(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Counter:
    """The kernels one steady-state call of ``fn`` compiled by inductor
    (``torch.compile(fullgraph=True, dynamic=False)``, no gradients, sparse modules on the
    accelerator path) runs, by kind: ``generated`` (kernels inductor wrote, fusing pointwise
    ops and reductions) and the library ops it calls (``aten::addmm``, ``aten::convolution``,
    ...). Read by ``torch.profiler`` as the direct children of the compiled graph's call; the
    first call (compilation) is not counted. Resets dynamo's caches first, so each model
    compiles afresh.
    """
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, dynamic=False)
    # CPU kernels report to the profiler only when compiled to (CUDA launches always do).
    with torch.no_grad(), accelerator_path():
        with torch._inductor.config.patch({'cpp.enable_kernel_profile': True}):
            compiled(*args, **kwargs)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            compiled(*args, **kwargs)
    kinds: Counter = Counter()
    for event in prof.events():
        parent = event.cpu_parent
        if (parent is not None and parent.name.startswith(COMPILED_GRAPH_CALL)
                and event.name not in _METADATA_EVENTS):
            kinds['generated' if 'fused' in event.name else event.name] += 1
    return kinds


def compiled_kernel_counts(cfg: Config, shape: Optional[Sequence[int]], image: np.ndarray,
                           checkpoint: Optional[str] = None,
                           trust: bool = False) -> Dict[str, Any]:
    """:func:`compiled_kernels` of one inference forward of the config's model and of its
    dense twin, batch 1; arguments as for :func:`op_counts`. The part is the one that compiles
    as one graph: the backbone and neck of a detector (``backbone_neck``; proposals and RoI
    heads depend on the data), the whole model otherwise (``model``: its ``'tensor'`` mode, or
    the backbone for a bare backbone).

    Returns:
        ``{part: {"dense", "dynamic", "ratio", "dense_kinds", "dynamic_kinds"}}``: kernels
        per forward, ``ratio`` = dynamic / dense, and the kernels by kind.
    """
    dense, dynamic, data = _dense_and_dynamic(cfg, shape, image, checkpoint, trust)
    detector = any(hasattr(dynamic, head) for head in ('rpn_head', 'bbox_head'))
    part = 'backbone_neck' if detector else 'model'
    kinds = {}
    for name, model in (('dense', dense), ('dynamic', dynamic)):
        if detector:
            kinds[name] = compiled_kernels(model.extract_feat, data['inputs'])
        elif hasattr(model, 'backbone'):
            kinds[name] = compiled_kernels(model, data['inputs'], data['data_samples'],
                                           mode='tensor')
        else:
            kinds[name] = compiled_kernels(model, data['inputs'])
    totals = {name: sum(counter.values()) for name, counter in kinds.items()}
    return {part: {'dense': totals['dense'], 'dynamic': totals['dynamic'],
                   'ratio': round(totals['dynamic'] / totals['dense'], 4),
                   'dense_kinds': dict(sorted(kinds['dense'].items())),
                   'dynamic_kinds': dict(sorted(kinds['dynamic'].items()))}}


def _dense_and_dynamic(cfg: Config, shape: Optional[Sequence[int]], image: np.ndarray,
                       checkpoint: Optional[str], trust: bool):
    """The config's model (weights loaded), its dense twin with the shared weights, and the
    model inputs of ``image`` at batch 1, both in eval mode."""
    model_cfg, scope = model_config(cfg), default_scope(cfg)
    dynamic = build_model(model_cfg, scope).eval()
    load_weights(dynamic, checkpoint, trust)
    dense = build_model(dense_twin_config(model_cfg), scope).eval()
    copy_shared_weights(dynamic, dense)
    return dense, dynamic, model_inputs(dynamic, [image], shape)


def model_ops(model: nn.Module, inputs: Tensor, samples: Any) -> Dict[str, OpCounter]:
    """The counters (:class:`OpCounter`, predictor ops apart) of one forward of ``inputs``
    (B, 3, H, W) through the backbone, the backbone and neck (``extract_feat``, models with a
    neck) and the whole model (its ``'tensor'`` mode; the backbone for a bare backbone)."""

    def count(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> OpCounter:
        counter = OpCounter()
        with in_predictors(model, counter):
            count_ops(fn, *args, counter=counter, **kwargs)
        return counter

    counts = {'backbone': count(backbone_of(model), inputs)}
    if getattr(model, 'with_neck', False) or getattr(model, 'neck', None) is not None:
        counts['backbone_neck'] = count(model.extract_feat, inputs)
    if hasattr(model, 'backbone'):
        counts['model'] = count(model, inputs, samples, mode='tensor')
    else:
        counts['model'] = counts['backbone']
    return counts


def op_counts(cfg: Config, shape: Optional[Sequence[int]], image: np.ndarray,
              checkpoint: Optional[str] = None, trust: bool = False) -> Dict[str, Any]:
    """Kernel-launching aten ops per forward of the config's model (dynamic) and of its dense
    twin at batch 1, inference, on the accelerator path (:func:`count_ops`); ``shape``,
    ``checkpoint`` and ``trust`` as for :func:`~.complexity.complexity`.

    Returns:
        ``{"backbone" | "backbone_neck" | "model": {"dense", "dynamic", "ratio", "predictors",
        "predictors_only"}}``: ``ratio`` = dynamic / dense (``backbone_neck``: backbone and
        neck, for models with a neck); ``predictors``, the dynamic model's ops inside its score
        predictors; ``predictors_only`` = (dense + predictors) / dense, the ratio the part
        would have if the rest of it launched what the dense model launches.
    """
    dense, dynamic, data = _dense_and_dynamic(cfg, shape, image, checkpoint, trust)
    counts = {name: model_ops(model, data['inputs'], data['data_samples'])
              for name, model in (('dense', dense), ('dynamic', dynamic))}
    result = {}
    for part, counter in counts['dynamic'].items():
        dense_ops, predictor_ops = counts['dense'][part].total, counter.predictor_ops
        result[part] = {'dense': dense_ops, 'dynamic': counter.total,
                        'ratio': round(counter.total / dense_ops, 4),
                        'predictors': predictor_ops,
                        'predictors_only': round((dense_ops + predictor_ops) / dense_ops, 4)}
    return result
