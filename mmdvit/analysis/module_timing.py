"""Time every sparse module of a model, sparse against dense, where the model runs.

A *unit* is a part of a model whose sparsity one config entry controls: a sparse stage of a
hierarchical backbone (its blocks and predictors; Swin, ConvNeXt), the blocks after the first
predictor of a plain ViT, and each sparse head convolution (a
:class:`~mmdvit.sparse.SparseConvGate` of a neck or head). The model runs as configured
and with every keep ratio set to 1.0 (each unit then computes its dense counterpart, predictors
skipped), the same weights and inputs, in interleaved rounds; hooks time each unit (with a
device synchronisation around it on a GPU). A unit *loses* where its sparse time is not below
its dense time: setting its keep ratios to 1.0 (:func:`dense_override`) makes it dense.
"""
import copy
import statistics
import time
from collections import defaultdict
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from ..models.dense_twin import backbone_config
from ..sparse import SparseConvGate, sparse_children
from .benchmark import Features, input_factory
from .models import WRAPPER_TYPE, build_model, copy_shared_weights, default_scope, model_config

# What a unit is made of: (name, modules, (sparse child, first ratio index, number of ratios)).
Unit = Tuple[str, List[nn.Module], Tuple[str, int, int]]


def _stage_blocks(backbone: nn.Module, stage: int) -> List[nn.Module]:
    """The blocks of ``stage``: Swin's ``stages[i].blocks``, ConvNeXt's ``stages[i]``, a
    plain ViT's ``blocks`` (one stage)."""
    stages = getattr(backbone, 'stages', None)
    if stages is None:
        return list(backbone.blocks)
    return list(getattr(stages[stage], 'blocks', stages[stage]))


def sparse_units(model: nn.Module) -> List[Unit]:
    """Every unit of ``model`` (a whole model, or a bare dynamic backbone), in forward order.

    Returns:
        (name, modules timed together, (sparse child, index of its first keep ratio in the
        child's ``keep_ratios``, how many)), e.g. ``('backbone.stage2', [...],
        ('backbone', 1, 3))`` or ``('decode_head.fpn_convs.0', [gate], ('decode_head', 0, 1))``.
    """
    children = sparse_children(model) or [('backbone', model)]
    units: List[Unit] = []
    for child_name, child in children:
        schedule = getattr(child, 'schedule', None)
        if schedule is not None:  # a dynamic backbone
            for stage, sched in sorted(schedule.items()):
                predictors = list(child.score_predictors[str(stage)])
                name = (f'{child_name}.stage{stage}' if hasattr(child, 'stages') else
                        f'{child_name}.blocks')
                units.append((name, _stage_blocks(child, stage) + predictors,
                              (child_name, sched.first_index, len(sched.keep_ratios))))
            continue
        for path, module in child.named_modules():
            if isinstance(module, SparseConvGate):
                path = path[:-len('.gate')] if path.endswith('.gate') else path
                units.append((f'{child_name}.{path}', [module], (child_name, module.index, 1)))
    return units


def dense_config(model_cfg, model: nn.Module):
    """``model_cfg`` with every keep ratio of ``model``'s sparse children set to 1.0."""
    cfg = copy.deepcopy(model_cfg)
    children = sparse_children(model)
    if not children:  # a bare backbone
        backbone_config(cfg).keep_ratios = (1.0, ) * len(model.keep_ratios)
        return cfg
    for name, child in children:
        cfg[name].keep_ratios = (1.0, ) * len(child.keep_ratios)
    return cfg


def ratios_key(cfg: Config, child: str) -> str:
    """The ``--cfg-options`` key of the keep ratios of the sparse ``child`` (``'backbone'``,
    ``'decode_head'`` ...) of ``cfg``'s model."""
    prefix = 'model.student' if cfg.model.get('type') == WRAPPER_TYPE else 'model'
    if 'backbone' not in model_config(cfg):  # the config is a bare backbone
        return f'{prefix}.keep_ratios'
    return f'{prefix}.{child}.keep_ratios'


def dense_override(cfg: Config, model: nn.Module, units: Sequence[Unit]) -> Dict[str, tuple]:
    """The ``--cfg-options`` entries that make ``units`` of ``model`` (built from ``cfg``, or
    from its backbone) dense, their keep ratios 1.0, and leave the others as configured, e.g.
    ``{'model.student.decode_head.keep_ratios': (1.0, 0.4, 0.35)}``."""
    bare = not sparse_children(model)
    ratios: Dict[str, List[float]] = {}
    for _, _, (child, first, count) in units:
        module = model if bare else getattr(model, child)
        values = ratios.setdefault(ratios_key(cfg, child), list(module.keep_ratios))
        values[first:first + count] = [1.0] * count
    return {k: tuple(v) for k, v in ratios.items()}


class UnitTimer:
    """Forward hooks adding up the seconds each unit's modules take (synchronising the device
    around each module on a GPU)."""

    def __init__(self, units: Sequence[Unit], device: str) -> None:
        self.seconds: Dict[str, float] = defaultdict(float)
        self.sync = torch.cuda.synchronize if device != 'cpu' else (lambda: None)
        self.handles = []
        for name, modules, _ in units:
            for module in modules:
                self.handles.append(module.register_forward_pre_hook(self._start))
                self.handles.append(module.register_forward_hook(
                    lambda m, args, out, name=name: self._stop(m, name)))
        self.started: Dict[int, float] = {}

    def _start(self, module: nn.Module, args) -> None:
        self.sync()
        self.started[id(module)] = time.perf_counter()

    def _stop(self, module: nn.Module, name: str) -> None:
        self.sync()
        self.seconds[name] += time.perf_counter() - self.started.pop(id(module))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def time_units(models: Dict[str, nn.Module], calls: Dict[str, Callable[[], object]],
               device: str, warmup: int, iters: int) -> Dict[str, Dict[str, List[float]]]:
    """``{model: {unit or 'total': [seconds per round]}}`` over ``iters`` interleaved rounds
    (order reversed every other round) after ``warmup`` untimed ones."""
    sync = torch.cuda.synchronize if device != 'cpu' else (lambda: None)
    names = list(calls)
    times: Dict[str, Dict[str, List[float]]] = {n: defaultdict(list) for n in names}
    timers = {n: UnitTimer(sparse_units(models[n]), device) for n in names}
    try:
        with torch.no_grad():
            for i in range(warmup + iters):
                for n in (names if i % 2 == 0 else names[::-1]):
                    timers[n].seconds.clear()
                    sync()
                    tic = time.perf_counter()
                    calls[n]()
                    sync()
                    if i >= warmup:
                        times[n]['total'].append(time.perf_counter() - tic)
                        for unit, seconds in timers[n].seconds.items():
                            times[n][unit].append(seconds)
    finally:
        for timer in timers.values():
            timer.remove()
    return times


def module_rows(cfg: Config, part: str, image: np.ndarray, shape: Sequence[int],
                batch: int, device: str, warmup: int, iters: int,
                precision: Callable[[], object]) -> dict:
    """Per-unit timings of ``part`` (``'backbone'``, ``'features'`` or ``'model'``, see
    :func:`~mmdvit.analysis.benchmark.build_subject`) of ``cfg``, sparse (as
    configured) against dense (every keep ratio 1.0), in ``precision()`` (a context manager).

    Returns:
        ``units``: one dict per unit (``name``, ``keep_ratios``, ``dense_ms``, ``sparse_ms``
        medians per forward, ``speedup`` = dense / sparse, ``loses`` = speedup < 1);
        ``total``: the same for the whole forward; ``dense_override``: the ``--cfg-options``
        entries that make the losing units dense (empty when none loses).
    """
    model_cfg = model_config(cfg)
    if part == 'backbone':
        model_cfg = backbone_config(model_cfg)
    scope = default_scope(cfg)
    sparse = build_model(model_cfg, scope)
    dense = build_model(dense_config(model_cfg, sparse), scope)
    copy_shared_weights(sparse, dense)
    runs, calls = {}, {}
    for which, model in dict(dense=dense, sparse=sparse).items():
        model.to(device).eval()
        args, kwargs = input_factory(model, part, image, shape, torch.contiguous_format)(batch)
        runs[which] = Features(model) if part == 'features' else model
        calls[which] = (lambda m=runs[which], a=args, k=kwargs: m(*a, **k))
    with precision():
        times = time_units(runs, calls, device, warmup, iters)
    sparse = runs['sparse']
    units = sparse_units(sparse)
    rows = []
    for name, _, (child, first, count) in units + [('total', [], ('', 0, 0))]:
        dense_ms, sparse_ms = (1e3 * statistics.median(times[w][name])
                               for w in ('dense', 'sparse'))
        row = dict(name=name, dense_ms=dense_ms, sparse_ms=sparse_ms,
                   speedup=dense_ms / sparse_ms, loses=sparse_ms >= dense_ms)
        if name != 'total':
            module = sparse if not sparse_children(sparse) else getattr(sparse, child)
            row['keep_ratios'] = list(module.keep_ratios)[first:first + count]
        rows.append(row)
    losing = [u for u, row in zip(units, rows) if row['loses']]
    return dict(units=rows[:-1], total=rows[-1],
                dense_override=dense_override(cfg, sparse, losing) if losing else {})
