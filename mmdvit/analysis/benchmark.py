"""Timing dense and dynamic models in one process, interleaved, on the same inputs.

A *subject* is one part (``'backbone'``, ``'features'`` or ``'model'``) of a config, built
three ways with the
same weights: ``dense`` (the upstream implementation: mmseg ``SwinTransformer``, mmpretrain
``ConvNeXt``, timm ``VisionTransformer``; for whole models the same config with that
backbone), ``dynamic`` (the config as it is) and optionally ``twin`` (mmdvit's own backbone
with sparsification disabled, which separates the sparse path's gain from implementation
differences with upstream).
"""
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from ..models.dense_twin import backbone_config, dense_twin_config, upstream_heads_config
from ..engine.compile import COMPILE_MODES
from ..sparse import SparseConvGate
from .flops import count_macs
from .inputs import model_inputs
from .models import (build_model, build_upstream_backbone, copy_shared_weights, default_scope,
                     model_config, upstream_backbone_config)

# backbone; features = backbone + neck of a whole model (its extract_feat: what a detector runs
# on the whole image); model = the whole model in its 'tensor' mode.
PARTS = ('backbone', 'features', 'model')
# How the models run: eager PyTorch, torch.compile (inductor, one graph per input shape, in
# one of COMPILE_MODES), or exported to ONNX and run in ONNX Runtime (CPU, float32).
BACKENDS = ('pytorch', 'compile', 'onnxruntime')
# A call slower than this multiple of the model's fastest one counts as disturbed by foreign
# load.
QUIET_TOLERANCE = 1.25


@dataclass
class Subject:
    """One part of a config built as dense (upstream), dynamic and (optionally) twin models.

    ``calls[name](batch)`` returns a zero-argument function running that model on a batch of
    ``batch`` copies of the input image.
    """

    name: str
    part: str
    models: Dict[str, nn.Module]
    inputs: Dict[str, Callable[[int], Tuple[tuple, dict]]] = field(default_factory=dict)

    def call(self, which: str, batch: int) -> Callable[[], Any]:
        model = self.models[which]
        args, kwargs = self.inputs[which](batch)
        return lambda: model(*args, **kwargs)


# (subject, batch) -> {model: call} running each model of the subject on a batch.
SubjectCalls = Callable[[Subject, int], Dict[str, Callable[[], Any]]]


def _same_weights(src: nn.Module, dst: nn.Module, what: str) -> None:
    """Give ``dst`` every tensor of ``src`` it has; raise if ``dst`` has tensors ``src`` lacks
    (then the two would not compute the same function)."""
    copied = copy_shared_weights(src, dst)
    if copied != len(dst.state_dict()):
        missing = sorted(set(dst.state_dict()) - set(src.state_dict()))[:5]
        raise RuntimeError(f'{what}: the dynamic model lacks {missing}...; cannot give both the '
                           'same weights')


def build_subject(cfg: Config, name: str, part: str, image: np.ndarray,
                  shape: Sequence[int], twin: bool = True, device: str = 'cpu',
                  channels_last: bool = False) -> Subject:
    """Build dense / dynamic (/ twin) models of ``part`` of ``cfg`` with the same weights.

    Args:
        cfg: the dynamic model's config (wrapper configs are measured on their student).
        name: label of the subject in the results.
        part: ``'backbone'``, ``'features'`` (the whole model's backbone and neck,
            :class:`Features`) or ``'model'`` (the whole model in its ``tensor`` mode).
        image: (H, W, 3) uint8 RGB photograph used as input.
        shape: (H, W) the image is resized to.
        twin: also build mmdvit's dense twin.
        device: ``'cpu'`` or ``'cuda'``.
        channels_last: convert models and inputs to channels-last memory format.
    """
    if part not in PARTS:
        raise ValueError(f'part={part!r}: use one of {PARTS}')
    model_cfg, scope = model_config(cfg), default_scope(cfg)
    is_bare = 'backbone' not in model_cfg
    if part != 'backbone' and is_bare:
        raise ValueError(f'{name}: the config is a bare backbone; part "{part}" needs a model '
                         'config (segmentor / detector / classifier).')
    if part == 'backbone':
        dynamic_cfg = backbone_config(model_cfg)
        dynamic = build_model(dynamic_cfg, scope)
        dense = build_upstream_backbone(dynamic_cfg)
        twin_cfg = dense_twin_config(dynamic_cfg) if twin else None
    else:
        dynamic = build_model(model_cfg, scope)
        dense_cfg = upstream_heads_config(model_cfg)
        dense_cfg.backbone = upstream_backbone_config(model_cfg.backbone)
        if dense_cfg.backbone.type.startswith('timm.'):
            raise ValueError(f'{name}: whole-model benchmarks support Swin and ConvNeXt '
                             'backbones (their upstream dense backbones are registered models).')
        dense = build_model(dense_cfg, scope)
        twin_cfg = dense_twin_config(model_cfg) if twin else None
    models = dict(dense=dense, dynamic=dynamic)
    if twin_cfg is not None:
        models['twin'] = build_model(twin_cfg, scope)
    for which in ('dense', 'twin'):
        if which in models:
            _same_weights(dynamic, models[which], f'{name} {which}')
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for model in models.values():
        model.to(device=device, memory_format=memory_format)
        model.eval()
    subject = Subject(name, part, {})
    for which, model in models.items():
        subject.inputs[which] = input_factory(model, part, image, shape, memory_format)
        subject.models[which] = Features(model) if part == 'features' else model
    return subject


class Features(nn.Module):
    """The backbone and neck of a whole model (its ``extract_feat``): what a detector runs on
    the whole image at a fixed size, before proposals and RoI heads."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.neck = getattr(model, 'neck', None)

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """inputs: (B, 3, H, W) preprocessed images -> the neck's (else the backbone's)
        maps."""
        feats = self.backbone(inputs)
        return self.neck(feats) if self.neck is not None else feats


def input_factory(model: nn.Module, part: str, image: np.ndarray, shape: Sequence[int],
                  memory_format: torch.memory_format) -> Callable[[int], Tuple[tuple, dict]]:
    """Inputs for a batch: backbones take ImageNet-normalised images; whole models (and their
    ``features`` part) take the output of their own data preprocessor (normalisation, padding),
    whole models the data samples too."""
    cache: Dict[int, Tuple[tuple, dict]] = {}

    def make(batch: int) -> Tuple[tuple, dict]:
        if batch not in cache:
            data = model_inputs(model, [image] * batch, shape)
            inputs = data['inputs'].to(memory_format=memory_format)
            cache[batch] = (((inputs, data['data_samples']), dict(mode='tensor'))
                            if part == 'model' else ((inputs, ), {}))
        return cache[batch]

    return make


# The 3x3 convolutions that dominate dense-prediction heads, at their real sizes: mmdvit's
# whole-model configs run them sparsely (``benchmark.py --convs``).
CONV_PRESETS: Dict[str, dict] = {
    # UPerNet at 512x512: fpn_bottleneck (4 x 512 -> 512 channels) and fpn_convs.0 at 1/4 scale.
    'upernet-fpn-bottleneck': dict(in_channels=2048, out_channels=512, size=(128, 128)),
    'upernet-fpn-conv': dict(in_channels=512, out_channels=512, size=(128, 128)),
    # Mask R-CNN at 800x1344: an FPN output conv / the RPN conv at P2 (1/4 scale).
    'fpn-p2': dict(in_channels=256, out_channels=256, size=(200, 336)),
}


class GatedConv(nn.Module):
    """A 3x3 convolution run through a :class:`~mmdvit.sparse.SparseConvGate` (the
    dynamic side of a convolution benchmark)."""

    def __init__(self, conv: nn.Conv2d, gate: SparseConvGate) -> None:
        super().__init__()
        self.conv, self.gate = conv, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x, self.conv.weight, self.conv.bias)


def build_conv_subject(preset: str, keep_ratio: float, block: int,
                       device: str = 'cpu') -> Subject:
    """A dense 3x3 convolution (``F.conv2d``, as upstream heads run it) and the same
    convolution run sparsely (its gate's predictor, kept tiles with halo, 1x1 fast path) at a
    size of :data:`CONV_PRESETS`, on the same random input."""
    if preset not in CONV_PRESETS:
        raise ValueError(f'--convs {preset!r}: use one of {sorted(CONV_PRESETS)}')
    spec = CONV_PRESETS[preset]
    torch.manual_seed(0)
    conv = nn.Conv2d(spec['in_channels'], spec['out_channels'], 3, padding=1)
    gate = SparseConvGate(spec['in_channels'], spec['out_channels'], keep_ratio, block=block)
    gate.init_fast_path(conv.weight, conv.bias)
    models = dict(dense=conv, dynamic=GatedConv(conv, gate))
    for model in models.values():
        model.to(device).eval()
    subject = Subject(f'{preset}-keep{keep_ratio:g}-block{block}', 'conv', models)
    image = torch.randn(1, spec['in_channels'], *spec['size'], device=device)
    for which in models:
        subject.inputs[which] = lambda batch: ((image.expand(batch, -1, -1, -1).contiguous(), ),
                                               {})
    return subject


def backend_calls(subject: Subject, batch: int, backend: str,
                  onnx_calls: Optional[SubjectCalls] = None,
                  compile_mode: str = 'default') -> Dict[str, Callable[[], Any]]:
    """``{model: call}`` running each model of ``subject`` on a batch through ``backend``.

    ``'compile'``: ``torch.compile(model, mode=compile_mode, dynamic=False)`` (one of
    :data:`~mmdvit.engine.compile.COMPILE_MODES`; compiled at the first, untimed call;
    ``reduce-overhead`` replays CUDA graphs on a GPU, each call starting a new CUDA-graph step).
    ``'onnxruntime'``: ``onnx_calls(subject, batch)``, the models exported and run in ONNX
    Runtime (``functools.partial(mmdvit.deploy.ort_backend.onnxruntime_calls, folder=...)``).
    """
    if backend not in BACKENDS:
        raise ValueError(f'backend={backend!r}: use one of {BACKENDS}')
    if backend == 'pytorch':
        return {w: subject.call(w, batch) for w in subject.models}
    if backend == 'compile':
        return _compiled_calls(subject, batch, compile_mode)
    if onnx_calls is None:
        raise ValueError('backend onnxruntime needs onnx_calls: pass functools.partial('
                         'mmdvit.deploy.ort_backend.onnxruntime_calls, folder=<a folder for the '
                         'exported graphs>).')
    return onnx_calls(subject, batch)


def _compiled_calls(subject: Subject, batch: int, mode: str) -> Dict[str, Callable[[], Any]]:
    """The ``'compile'`` backend of :func:`backend_calls`; each model is compiled once per mode
    (and once per input shape inside torch.compile)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f'compile mode {mode!r}: use one of {COMPILE_MODES}')
    compiled = subject.__dict__.setdefault('compiled', {})
    step = (torch.compiler.cudagraph_mark_step_begin if mode == 'reduce-overhead' else
            (lambda: None))
    calls = {}
    for which, model in subject.models.items():
        if (which, mode) not in compiled:
            compiled[which, mode] = torch.compile(model, mode=mode, dynamic=False)
        args, kwargs = subject.inputs[which](batch)

        def call(f=compiled[which, mode], a=args, k=kwargs):
            step()
            return f(*a, **k)

        calls[which] = call
    return calls


def flops_per_image(subject: Subject, which: str) -> float:
    """GFLOPs (GMACs) of one image through ``which`` model of the subject."""
    return count_macs(subject.call(which, 1)) / 1e9


@contextlib.contextmanager
def precision(device: str, dtype: str):
    """``'float32'``: as is; ``'amp'``: autocast to bfloat16 on CPU, float16 on CUDA."""
    if dtype == 'float32':
        yield
    elif dtype == 'amp':
        with torch.autocast(device, torch.bfloat16 if device == 'cpu' else torch.float16):
            yield
    else:
        raise ValueError(f'dtype={dtype!r}: use float32 or amp')


def amp_dtype_name(device: str, dtype: str) -> str:
    """The name written in the results for a precision setting."""
    if dtype == 'float32':
        return 'float32'
    return 'bfloat16-autocast' if device == 'cpu' else 'float16-autocast'


@dataclass
class Timings:
    """Per-call measurements of each model: ``wall`` seconds, and on CPU also ``cpu`` seconds
    (CPU time of this process, all threads; ``None`` on CUDA)."""

    wall: Dict[str, List[float]]
    cpu: Optional[Dict[str, List[float]]]


def time_interleaved(calls: Dict[str, Callable[[], Any]], device: str, warmup: int, iters: int,
                     max_seconds: float) -> Timings:
    """Time each function in rounds that run every function once (order reversed every other
    round, so drifts in machine load hit all alike).

    ``warmup`` untimed rounds come first; then up to ``iters`` timed rounds, stopping early
    (after at least 3) once ``max_seconds`` have passed.
    """
    names = list(calls)
    on_cpu = device == 'cpu'
    sync = (lambda: None) if on_cpu else torch.cuda.synchronize
    wall: Dict[str, List[float]] = {n: [] for n in names}
    cpu: Dict[str, List[float]] = {n: [] for n in names}
    with torch.no_grad():
        for _ in range(warmup):
            for n in names:
                calls[n]()
        sync()
        start = time.perf_counter()
        for i in range(iters):
            for n in (names if i % 2 == 0 else names[::-1]):
                sync()
                tic, cpu_tic = time.perf_counter(), time.process_time()
                calls[n]()
                sync()
                wall[n].append(time.perf_counter() - tic)
                cpu[n].append(time.process_time() - cpu_tic)
            if i + 1 >= 3 and time.perf_counter() - start > max_seconds:
                break
    return Timings(wall, cpu if on_cpu else None)


def quiet_calls(times: Sequence[float], tolerance: float = QUIET_TOLERANCE) -> List[float]:
    """The calls not disturbed by other processes: those within ``tolerance`` times the
    fastest call of the same model. On a shared machine a burst of foreign load slows a call
    several-fold; dropping such calls compares the models at their undisturbed speed."""
    fastest = min(times)
    return [t for t in times if t <= tolerance * fastest]


def is_disturbed(row: dict) -> bool:
    """Whether fewer than half of a row's timed rounds were quiet for every model
    (``quiet_calls`` of ``rounds``, see :func:`quiet_calls`): its wall-clock figures rest on
    few calls and vary with the load of the machine."""
    return row.get('quiet_calls') is not None and 2 * row['quiet_calls'] < row['rounds']


def _ratios(prefix: str, ips: Dict[str, float], gflops: Dict[str, float]) -> dict:
    """Speed-ups and realisations of the dynamic model against dense (and twin)."""
    ideal = gflops['dense'] / gflops['dynamic']
    out = {f'dense_ips{prefix}': ips['dense'], f'dynamic_ips{prefix}': ips['dynamic'],
           f'speedup{prefix}': ips['dynamic'] / ips['dense'],
           f'realisation{prefix}': ips['dynamic'] / ips['dense'] / ideal}
    if 'twin' in ips:
        twin_ideal = gflops['twin'] / gflops['dynamic']
        out.update({f'twin_ips{prefix}': ips['twin'],
                    f'twin_speedup{prefix}': ips['dynamic'] / ips['twin'],
                    f'twin_realisation{prefix}': ips['dynamic'] / ips['twin'] / twin_ideal})
    return out


def _figures(timings: Timings, batch: int, gflops: Dict[str, float]) -> dict:
    """The measured fields of a row (see :func:`benchmark_rows`)."""
    quiet = {w: quiet_calls(t) for w, t in timings.wall.items()}
    ips = {w: batch / statistics.median(t) for w, t in quiet.items()}
    threads = torch.get_num_threads()
    out = dict(ideal_speedup=gflops['dense'] / gflops['dynamic'], dense_gflops=gflops['dense'],
               dynamic_gflops=gflops['dynamic'], rounds=len(timings.wall['dynamic']),
               quiet_calls=min(len(t) for t in quiet.values()), threads=threads,
               **_ratios('', ips, gflops),
               **{f'{w}_ips_best': batch / min(t) for w, t in timings.wall.items()})
    if timings.cpu is not None:
        cpu_ips = {w: batch * threads / statistics.median(t) for w, t in timings.cpu.items()}
        out.update(_ratios('_cpu', cpu_ips, gflops))
    out['disturbed'] = is_disturbed(out)
    return out


def _quiet_share(figures: dict) -> float:
    return figures['quiet_calls'] / figures['rounds']


def _timed_figures(calls: Dict[str, Callable[[], Any]], row: dict, gflops: Dict[str, float],
                   timing: Tuple[str, str, int, int, float], retime: bool,
                   progress: Optional[Callable[[dict, str], None]]) -> dict:
    """The measured fields of ``row`` (:func:`_figures`); a disturbed measurement
    (:func:`is_disturbed`) is repeated once if ``retime``, and the one with the larger share of
    quiet rounds kept (``retimed=True``)."""
    device, dtype, warmup, iters, max_seconds = timing

    def measure(attempt: str) -> dict:
        if progress is not None:
            progress(row, attempt)
        with precision(device, dtype):
            timings = time_interleaved(calls, device, warmup, iters, max_seconds)
        return _figures(timings, row['batch'], gflops)

    figures = measure('timing')
    if not (retime and figures['disturbed']):
        return figures
    again = measure('retiming')
    return dict(again if _quiet_share(again) >= _quiet_share(figures) else figures, retimed=True)


def benchmark_rows(subject: Subject, shape: Sequence[int], batches: Sequence[int],
                   dtypes: Sequence[str], device: str, warmup: int, iters: int,
                   max_seconds: float,
                   report: Optional[Callable[[dict], None]] = None,
                   backend: str = 'pytorch', onnx_calls: Optional[SubjectCalls] = None,
                   progress: Optional[Callable[[dict, str], None]] = None,
                   retime: bool = True, compile_mode: str = 'default') -> List[dict]:
    """One result row per (dtype, batch), the models run through ``backend`` (see
    :func:`backend_calls`; ONNX Runtime rows are float32 on CPU only; ``compile`` rows record
    their ``compile_mode``).

    Wall clock: ``*_ips`` = batch / median seconds over the model's quiet calls (see
    :func:`quiet_calls`), ``*_ips_best`` from its fastest call; ``speedup`` (dynamic over the
    upstream dense model), ``ideal_speedup`` (dense GFLOPs / dynamic GFLOPs) and
    ``realisation`` (their quotient); ``twin_*`` the same against mmdvit's dense twin.
    CPU only, the same with the suffix ``_cpu`` from the process CPU time per call:
    ``*_ips_cpu`` = batch * threads / median CPU seconds, the throughput the threads would give
    undisturbed; unlike wall time it hardly changes when other processes share the cores.
    ``quiet_calls`` of the ``rounds`` were quiet for every model; ``disturbed``
    (:func:`is_disturbed`): fewer than half were. A disturbed row is timed once more if
    ``retime`` (``retimed``: the better of the two measurements is kept).
    A setting the models cannot run (a ``RuntimeError``) gives a row with ``None`` figures and
    the reason: under autocast as ``skipped`` (an upstream op without a kernel for the reduced
    precision, e.g. mmcv's CPU RoIAlign / NMS under bfloat16), in float32 as ``error``.

    Args:
        onnx_calls: the ``'onnxruntime'`` backend (see :func:`backend_calls`).
        report: called with each finished row.
        progress: called with a row's identifying fields and ``'timing'`` before it is timed,
            ``'retiming'`` before a disturbed row is timed again.
    """
    gflops = {which: flops_per_image(subject, which) for which in subject.models}
    rows = []
    for dtype in dtypes:
        for batch in batches:
            row = dict(name=subject.name, device=device, dtype=amp_dtype_name(device, dtype),
                       part=subject.part, batch=batch, shape=list(shape), backend=backend)
            if backend == 'compile':
                row['compile_mode'] = compile_mode
            if backend == 'onnxruntime' and (dtype != 'float32' or device != 'cpu'):
                row.update(skipped='onnxruntime rows run in float32 on CPU only',
                           **{k: None for k in ('dense_ips', 'dynamic_ips', 'speedup',
                                                'ideal_speedup', 'realisation')})
                rows.append(row)
                if report is not None:
                    report(row)
                continue
            try:
                calls = backend_calls(subject, batch, backend, onnx_calls, compile_mode)
                figures = _timed_figures(calls, row, gflops,
                                         (device, dtype, warmup, iters, max_seconds), retime,
                                         progress)
            except RuntimeError as err:  # e.g. an upstream op without a kernel for the dtype
                row.update({'error' if dtype == 'float32' else 'skipped':
                            f'{type(err).__name__}: {err}'},
                           **{k: None for k in ('dense_ips', 'dynamic_ips', 'speedup',
                                                'ideal_speedup', 'realisation')})
            else:
                row.update(figures)
            rows.append(row)
            if report is not None:
                report(row)
    return rows
