"""ONNX export of mmdvit models that keeps the speed-up, checked in ONNX Runtime.

At inference every predictor keeps a fixed k = max(1, int(N * keep_ratio)) positions per image,
so all tensor shapes of a forward pass depend on the input size only: the exported graph is
static in shape, and the decision itself (scores, ``TopK``, the gathers and scatters that route
kept and pruned positions) is part of it and is recomputed for every input.

Exporters (``torch.onnx.export``): the TorchScript exporter (``dynamo=False``) exports
``DynamicConvNeXt``; ``DynamicSwinTransformer`` (token granularity) trips an internal
shape-inference assert of that exporter and goes through the dynamo exporter
(``dynamo=True``), as does ``DynamicViT``, whose nested decisions use a stable sort that the
dynamo exporter translates here to an ONNX ``TopK`` (ONNX ``TopK`` breaks ties by the lower
index, which is what a stable sort does). ``dynamo=None`` tries the exporter known to work for
the model first and the other one next, and names both failures if neither works.

The file is written only after it has been checked: the exported bytes run in ONNX Runtime on
real photographs (two different batches, so a kept set frozen at export time would show) and
their outputs are compared with PyTorch's (:class:`OnnxCheck`); then the file is written
atomically (temporary file in the target folder, flushed, renamed).

onnx, onnxruntime and onnxscript are imported inside the functions that need them, so mmdvit
works without them; a missing one raises an ImportError saying
``pip install onnx onnxruntime onnxscript``.
"""
import collections
import contextlib
import importlib
import io
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Counter, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..analysis.inputs import SAMPLE_PHOTOS, model_inputs, sample_photos
from ..models.checkpoint import write_atomic
from ..sparse import ScorePredictor, SparsityDecision, keep_margin, record_decisions

INSTALL_HINT = 'pip install onnx onnxruntime onnxscript'
EXPORTERS = ('torchscript', 'dynamo')
# Backbone class name -> the exporter tried first (the other one is the fallback). Upstream
# dense backbones (the benchmark's references) are listed by their class names too.
# mmdvit's decisions rank with a stable sort, which only the dynamo exporter handles (see
# _sort_stable); upstream ConvNeXt has no decision and exports fastest with TorchScript.
PREFERRED_EXPORTER = {
    'DynamicConvNeXt': 'dynamo',
    'ConvNeXt': 'torchscript',
    'DynamicSwinTransformer': 'dynamo',
    'SwinTransformer': 'dynamo',
    'DynamicViT': 'dynamo',
    'VisionTransformer': 'dynamo',
}
# Opset of the TorchScript exporter (ONNX Runtime CPU runs it; LayerNormalization needs 17).
# The dynamo exporter uses torch's default (opset 20 with torch 2.14) unless one is given.
TORCHSCRIPT_OPSET = 17
DEFAULT_RTOL = 1e-4
# Below this gap between the last kept and the best pruned score (log-probabilities), float
# rounding (ONNX Runtime's kernels against PyTorch's) can swap which position is kept.
NEAR_TIE = 1e-5
# Photographs of the check inputs: batch i of the check uses photos (i * PHOTO_STRIDE + j) % 8
# for its images j = 0..batch-1, so every image of the second batch differs from the first's.
PHOTO_STRIDE = 3
PathLike = Union[str, os.PathLike]
OnnxModel = Union[PathLike, bytes, Any]  # a file, serialized bytes, or an onnx.ModelProto


class OnnxExportError(RuntimeError):
    """Neither exporter could export the model (the message names each failure)."""


class OnnxMismatchError(OnnxExportError):
    """The exported graph's outputs in ONNX Runtime differ from PyTorch's beyond tolerance."""


def require(module: str) -> Any:
    """Import ``module`` (onnx, onnxruntime, onnxscript) or raise an ImportError that says how
    to install the export dependencies."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f'ONNX export needs {module!r}, which is not installed: '
                          f'{INSTALL_HINT} (they are in requirements/tests.txt; mmdvit itself '
                          f'does not need them).') from err


@dataclass
class OnnxCheck:
    """ONNX Runtime against PyTorch on the same inputs.

    Attributes:
        max_abs: largest |onnx - torch| over every element of every output and check input.
        max_rel: largest max|onnx - torch| / max|torch| of an output (the error relative to
            the output's scale, which element-wise ratios near zero would inflate).
        rtol: the tolerance on ``max_rel``.
        input_shape: (B, 3, H, W) of each check input.
        num_inputs: how many different batches were compared.
        output_shapes: shape of every output.
        kept_differ: whether the positions the model kept differ between the check inputs
            in PyTorch (``None``: not a dynamic model / nothing pruned). ``True`` together
            with a passing check shows that the graph recomputes the decision per input.
        min_margin: the smallest gap, over the decisions, images and check inputs, between
            the lowest kept and the highest pruned keep score in PyTorch (``None``: nothing
            pruned). Below :data:`NEAR_TIE` the kept set is decided by float rounding, and
            ONNX Runtime may keep another position than PyTorch (untrained predictors score
            every position almost alike: see :func:`spread_predictor_scores`).
    """

    max_abs: float
    max_rel: float
    rtol: float
    input_shape: List[int]
    num_inputs: int
    output_shapes: List[List[int]]
    kept_differ: Optional[bool] = None
    min_margin: Optional[float] = None

    @property
    def passed(self) -> bool:
        return self.max_rel <= self.rtol

    def summary(self) -> str:
        verdict = 'OK' if self.passed else 'FAILED'
        kept = {None: '', True: '; the kept positions differ between them, as they should',
                False: '; the kept positions are the same for both'}[self.kept_differ]
        text = (f'ONNX Runtime vs PyTorch on {self.num_inputs} different input batches of shape '
                f'{tuple(self.input_shape)}: max abs diff {self.max_abs:.3g}, max rel diff '
                f'{self.max_rel:.3g} (tolerance {self.rtol:g}): {verdict}{kept}')
        if not self.passed and self.min_margin is not None and self.min_margin < NEAR_TIE:
            text += (f'. Some kept and pruned positions have near-tied scores (gap '
                     f'{self.min_margin:.2g} < {NEAR_TIE:g}), so float rounding decides which '
                     'is kept: untrained (random) predictors do this. Export a trained '
                     'checkpoint, or spread the scores of random predictors '
                     '(spread_predictor_scores; the export tool does it without --checkpoint)')
        return text


@dataclass
class ExportResult:
    """What :func:`export_and_verify` did: the file, the exporter and opset used, the check
    (``None`` when not verified) and the exporters that failed before (name -> error)."""

    path: Path
    exporter: str
    opset: int
    check: Optional[OnnxCheck]
    failures: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out['path'] = str(self.path)
        if self.check is not None:
            out['check']['passed'] = self.check.passed
        return out


class TensorMode(nn.Module):
    """An OpenMMLab model (mmseg segmentor, mmpretrain classifier ...) in its ``tensor`` mode:
    (B, 3, H, W) preprocessed images -> the flat tuple of the tensors it returns."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        return tuple(flatten_outputs(self.model(inputs, None, mode='tensor')))


def flatten_outputs(out: Any) -> List[Tensor]:
    """The tensors of a nested tuple / list / dict output, in order."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in flatten_outputs(item)]
    raise TypeError(f'cannot export an output of type {type(out).__name__}: the model must '
                    'return tensors (whole models: their `tensor` mode)')


def exportable(model: nn.Module) -> nn.Module:
    """The module to export: a backbone as it is, a whole OpenMMLab model (one with a data
    preprocessor and a backbone) wrapped in :class:`TensorMode`.

    Raises:
        OnnxExportError: for whole mmdet detectors (their tensor mode needs image metas and
            runs NMS).
    """
    if isinstance(model, TensorMode):
        return model
    if hasattr(model, 'backbone') and hasattr(model, 'data_preprocessor'):
        if type(model).__module__.startswith('mmdet'):
            raise OnnxExportError(
                f'whole mmdet detectors ({type(model).__name__}) are not exported: their tensor '
                "mode needs image metas and runs the RPN's proposal selection (NMS, mmcv ops), "
                'which this exporter does not handle. Export the backbone (--part backbone).')
        return TensorMode(model)
    return model


def _inner(module: nn.Module) -> nn.Module:
    return module.model if isinstance(module, TensorMode) else module


def _backbone(module: nn.Module) -> nn.Module:
    inner = _inner(module)
    return getattr(inner, 'backbone', inner)


def exporter_order(model: nn.Module, dynamo: Optional[bool] = None) -> List[str]:
    """The exporters to try, in order: ``dynamo=True`` / ``False`` force one, ``None`` tries
    the one known to work for the model's backbone (:data:`PREFERRED_EXPORTER`; dynamo for
    unknown ones) and then the other."""
    if dynamo is not None:
        return ['dynamo' if dynamo else 'torchscript']
    first = PREFERRED_EXPORTER.get(type(_backbone(model)).__name__, 'dynamo')
    return [first] + [e for e in EXPORTERS if e != first]


def check_inputs(model: nn.Module, shape: Sequence[int], batch: int = 1,
                 num: int = 2) -> List[Tensor]:
    """``num`` different input batches of real photographs, prepared as the model's data
    preprocessor would (whole models) or ImageNet-normalised (backbones).

    Returns:
        ``num`` float tensors (B, 3, H', W') (H', W': ``shape`` plus the preprocessor's
        padding, if any).
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f'shape={tuple(shape)}: give the input size as (H, W)')
    if batch < 1:
        raise ValueError(f'batch={batch}: use a positive batch size')
    ids = [[(i * PHOTO_STRIDE + j) % len(SAMPLE_PHOTOS) for j in range(batch)]
           for i in range(num)]
    photos = sample_photos(max(max(row) for row in ids) + 1)
    inner = _inner(model)
    return [model_inputs(inner, [photos[k] for k in row], shape)['inputs'] for row in ids]


def _sort_stable(self: Any, stable: Optional[bool] = None, dim: int = -1,
                 descending: bool = False) -> Tuple[Any, Any]:
    """``aten::sort.stable`` for the dynamo exporter: ONNX ``TopK`` over the whole axis, which
    orders equal values by index (a stable sort). Traced by onnxscript (self: an ONNX
    value)."""
    from onnxscript import opset18 as op
    size = op.Gather(op.Shape(self), op.Constant(value_ints=[dim]), axis=0)
    return op.TopK(self, size, axis=dim, largest=int(bool(descending)), sorted=1)


def _export_bytes(module: nn.Module, example: Tensor, exporter: str, opset: Optional[int],
                  num_outputs: int) -> bytes:
    """Export ``module`` at the shape of ``example`` with one exporter; the serialized ONNX
    model (nothing is written to disk)."""
    names = dict(input_names=['input'], output_names=[f'output{i}' for i in range(num_outputs)])
    log = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(log), torch.no_grad():
        warnings.simplefilter('ignore')
        if exporter == 'torchscript':
            buffer = io.BytesIO()
            torch.onnx.export(module, (example, ), buffer, dynamo=False,
                              opset_version=opset or TORCHSCRIPT_OPSET,
                              do_constant_folding=True, **names)
            return buffer.getvalue()
        require('onnxscript')
        program = torch.onnx.export(
            module, (example, ), None, dynamo=True, opset_version=opset, verbose=False,
            optimize=True, custom_translation_table={torch.ops.aten.sort.stable: _sort_stable},
            **names)
        return program.model_proto.SerializeToString()


def _first_line(err: BaseException) -> str:
    """A short description of an exporter failure (torch's messages run to pages)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    useful = [ln for ln in lines if ln.startswith(('<class', 'No ONNX', 'RuntimeError'))]
    text = (useful or lines or [''])[-1 if useful else 0]
    return f'{type(err).__name__}: {text[:300]}'


def _pruning(decisions: Sequence[SparsityDecision]) -> List[SparsityDecision]:
    """The inference decisions among ``decisions`` that prune (``order`` is set)."""
    return [d for d in decisions if d.order is not None and d.num_keep is not None]


def _kept_sets(decisions: Sequence[SparsityDecision]) -> List[Tensor]:
    """The kept positions of every decision, sorted per image."""
    return [d.keep_indices.sort(dim=1).values for d in decisions]


def _margin(decisions: Sequence[SparsityDecision]) -> Optional[float]:
    """The smallest gap between the lowest kept and the highest pruned score (see
    :attr:`OnnxCheck.min_margin`)."""
    gaps = []
    for d in decisions:
        if d.log_probs is None:
            continue
        scores = keep_margin(d.log_probs).gather(1, d.order)
        kept, pruned = scores[:, :d.num_keep], scores[:, d.num_keep:]
        pruned = pruned.masked_fill(~torch.isfinite(pruned), float('-inf'))
        gap = kept.min(dim=1).values - pruned.max(dim=1).values
        gaps += [float(g) for g in gap if torch.isfinite(g)]
    return min(gaps) if gaps else None


def ort_session(onnx_model: OnnxModel, threads: Optional[int] = None) -> Any:
    """An ONNX Runtime CPU session (all graph optimisations, sequential execution).

    Args:
        onnx_model: a file path, serialized bytes or an ``onnx.ModelProto``.
        threads: intra-op threads (``None``: ONNX Runtime's default, one per core).
    """
    ort = require('onnxruntime')
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    if isinstance(onnx_model, (str, os.PathLike)):
        onnx_model = os.fspath(onnx_model)
    elif not isinstance(onnx_model, bytes):
        onnx_model = onnx_model.SerializeToString()
    return ort.InferenceSession(onnx_model, sess_options=options,
                                providers=['CPUExecutionProvider'])


def verify_onnx(onnx_model: OnnxModel, model: nn.Module, inputs: Sequence[Tensor],
                rtol: float = DEFAULT_RTOL, threads: Optional[int] = None) -> OnnxCheck:
    """Run the exported graph in ONNX Runtime and ``model`` in PyTorch on each of ``inputs``.

    Args:
        onnx_model: the exported graph (file path, serialized bytes or ``onnx.ModelProto``).
        model: the PyTorch model it was exported from (a backbone, or a whole model that
            :func:`exportable` wraps), run in eval mode.
        inputs: float tensors (B, 3, H, W) of the exported shape, e.g. from
            :func:`check_inputs`.
        rtol: tolerance on the scale-relative difference (see :class:`OnnxCheck`).
        threads: ONNX Runtime intra-op threads (default: torch's thread count).

    Raises:
        OnnxMismatchError: an output count or shape differs (the difference is measured and
            reported in the returned check otherwise; see :attr:`OnnxCheck.passed`).
    """
    module = exportable(model)
    module.eval()  # not chained: some upstream train() overrides return None
    session = ort_session(onnx_model, threads or torch.get_num_threads())
    name = session.get_inputs()[0].name
    max_abs = max_rel = 0.0
    kept, margins = [], []
    shapes: List[List[int]] = []
    for x in inputs:
        with torch.no_grad(), record_decisions() as recorded:
            ref = [t.float().numpy() for t in flatten_outputs(module(x))]
        decisions = _pruning(recorded)
        kept.append(_kept_sets(decisions))
        margins.append(_margin(decisions))
        got = session.run(None, {name: x.numpy()})
        if len(got) != len(ref):
            raise OnnxMismatchError(f'the ONNX graph returns {len(got)} outputs, PyTorch '
                                    f'{len(ref)}')
        shapes = [list(r.shape) for r in ref]
        for i, (a, b) in enumerate(zip(got, ref)):
            if a.shape != b.shape:
                raise OnnxMismatchError(f'output {i}: ONNX shape {a.shape}, PyTorch {b.shape}')
            diff = float(np.abs(a.astype(np.float64) - b).max()) if b.size else 0.0
            scale = float(np.abs(b).max()) if b.size else 0.0
            max_abs = max(max_abs, diff)
            max_rel = max(max_rel, diff / scale if scale > 0 else diff)
    kept_differ = None
    if len(kept) > 1 and kept[0]:
        kept_differ = any(not all(torch.equal(a, b) for a, b in zip(kept[0], other))
                          for other in kept[1:])
    margins = [m for m in margins if m is not None]
    return OnnxCheck(max_abs, max_rel, float(rtol), list(inputs[0].shape), len(inputs), shapes,
                     kept_differ, min(margins) if margins else None)


def spread_predictor_scores(model: nn.Module, gain: float = 4.0, seed: int = 0) -> int:
    """Re-draw the linear layers of every score predictor of ``model`` (random weights only):
    std ``1 / sqrt(fan_in)`` for the hidden layers and ``gain / sqrt(fan_in)`` for the last
    one, zero biases.

    Untrained predictors (std 0.02 initialisation) give every position almost the same
    score (log-probabilities within ~1e-6 of log 0.5), so which position is kept depends on
    float rounding and differs between PyTorch and ONNX Runtime. With these weights the keep
    scores spread over a few units without saturating, the kept set is well defined and an
    export check is meaningful. Do not use it on trained models.

    Returns:
        The number of predictors re-drawn.
    """
    generator = torch.Generator().manual_seed(seed)
    count = 0
    for module in model.modules():
        if not isinstance(module, ScorePredictor):
            continue
        count += 1
        layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
        for layer in layers:
            std = (gain if layer is layers[-1] else 1.0) / layer.in_features**0.5
            with torch.no_grad():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
                layer.bias.zero_()
    return count


def _opset_of(data: bytes) -> int:
    onnx = require('onnx')
    proto = onnx.load_from_string(data)
    return max(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx'))


def export_and_verify(model: nn.Module, path: PathLike, shape: Sequence[int] = (224, 224),
                      batch: int = 1, opset: Optional[int] = None, dynamo: Optional[bool] = None,
                      overwrite: bool = False, verify: bool = True, rtol: float = DEFAULT_RTOL,
                      inputs: Optional[Sequence[Tensor]] = None) -> ExportResult:
    """Export ``model`` to ``path`` in ONNX, check it in ONNX Runtime, then write the file.

    Args:
        model: an mmdvit backbone (or its dense twin / an upstream backbone), or a whole
            mmseg / mmpretrain model, exported in its ``tensor`` mode (see
            :class:`TensorMode`). Put in eval mode (and left in it).
        path: the ``.onnx`` file to write.
        shape: (H, W) of the input images; the graph takes (batch, 3, H', W') float32
            (whole models: H', W' after their preprocessor's padding) and is fixed to it.
        batch: the batch size the graph is fixed to.
        opset: ONNX opset (default: 17 for the TorchScript exporter, torch's for dynamo).
        dynamo: ``True`` / ``False`` use that exporter; ``None`` picks (see
            :func:`exporter_order`) and falls back to the other.
        overwrite: replace an existing ``path`` (refused otherwise).
        verify: compare with PyTorch in ONNX Runtime before writing (see :func:`verify_onnx`);
            the file is not written when the check fails.
        rtol: tolerance of the check on the scale-relative difference.
        inputs: the check inputs, float tensors (batch, 3, H', W') (default: two batches of
            different photographs from :func:`check_inputs`); the first is the export example.

    Returns:
        An :class:`ExportResult` (path, exporter, opset, check, failed exporters).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OnnxExportError: no exporter could export the model (names every failure).
        OnnxMismatchError: ONNX Runtime's outputs differ beyond ``rtol``.
        ImportError: onnx / onnxruntime / onnxscript are missing.
    """
    path = Path(os.path.expanduser(os.fspath(path))).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(f'{path} exists: pass overwrite=True (tools: --force) to replace '
                              'it, or choose another output file.')
    require('onnx')
    require('onnxruntime')
    module = exportable(model)
    module.eval()  # not chained: some upstream train() overrides return None
    if inputs is None:
        inputs = check_inputs(module, shape, batch)
    inputs = [x.detach().float().cpu().contiguous() for x in inputs]
    with torch.no_grad():
        num_outputs = len(flatten_outputs(module(inputs[0])))
    failures: Dict[str, str] = {}
    for exporter in exporter_order(module, dynamo):
        try:
            data = _export_bytes(module, inputs[0], exporter, opset, num_outputs)
            break
        except Exception as err:  # exporters raise anything; each failure is reported
            failures[exporter] = _first_line(err)
    else:
        tried = '; '.join(f'{name} exporter: {msg}' for name, msg in failures.items())
        raise OnnxExportError(
            f'cannot export {type(_inner(module)).__name__} to ONNX ({tried}). Try the other '
            'exporter (dynamo=True / False, tools: --exporter), another opset, or export the '
            'backbone only (--part backbone).')
    check = verify_onnx(data, module, inputs, rtol) if verify else None
    if check is not None and not check.passed:
        raise OnnxMismatchError(
            f'{check.summary()}. The {exporter} export of {type(_inner(module)).__name__} does '
            f'not reproduce PyTorch, so {path} was not written. Try the other exporter '
            '(dynamo=True / False, tools: --exporter) or report the model and shape.')
    if path.exists() and not overwrite:  # appeared while exporting
        raise FileExistsError(f'{path} was created while exporting: pass overwrite=True '
                              '(tools: --force) to replace it.')
    write_atomic(os.fspath(path), lambda f: f.write(data))
    return ExportResult(path, exporter, _opset_of(data), check, failures)


def export_onnx(model: nn.Module, path: PathLike, shape: Sequence[int] = (224, 224),
                batch: int = 1, opset: Optional[int] = None, dynamo: Optional[bool] = None,
                overwrite: bool = False, verify: bool = True,
                rtol: float = DEFAULT_RTOL) -> Path:
    """Export ``model`` to ``path`` (ONNX), verified in ONNX Runtime; returns the path.

    :func:`export_and_verify` with the same arguments, returning only the written file:
    a (batch, 3, H, W) float32 input ``'input'`` and outputs ``'output0'``, ``'output1'`` ...
    (a backbone's feature maps, e.g. (batch, C_i, H / s_i, W / s_i) for Swin and ConvNeXt, or
    (batch, C) for DynamicViT's class token).
    """
    return export_and_verify(model, path, shape, batch, opset, dynamo, overwrite, verify,
                             rtol).path


def _load_proto(onnx_model: OnnxModel) -> Any:
    onnx = require('onnx')
    if isinstance(onnx_model, bytes):
        return onnx.load_from_string(onnx_model)
    if isinstance(onnx_model, (str, os.PathLike)):
        return onnx.load(os.fspath(onnx_model))
    return onnx_model


def onnx_op_counts(onnx_model: OnnxModel) -> Counter[str]:
    """How many nodes of each op type (``'TopK'``, ``'MatMul'`` ...) the main graph has."""
    return collections.Counter(node.op_type for node in _load_proto(onnx_model).graph.node)


def _runtime_shapes(proto: Any, names: Sequence[str]) -> Dict[str, List[int]]:
    """The shapes of the tensors ``names`` in one ONNX Runtime run of the graph on random
    inputs (for graphs whose shapes ONNX shape inference cannot follow; the exported graphs
    are static in shape, so any input of the right size gives the same shapes)."""
    onnx = require('onnx')
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in known)
    session = ort_session(probe, threads=torch.get_num_threads())
    feeds = {}
    for arg in session.get_inputs():
        if not all(isinstance(d, int) for d in arg.shape):
            raise ValueError(f'onnx_macs: input {arg.name!r} has a dynamic shape {arg.shape}; '
                             'export with static shapes')
        feeds[arg.name] = np.random.default_rng(0).standard_normal(arg.shape, np.float32)
    wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
    return {n: list(v.shape) for n, v in zip(wanted, session.run(wanted, feeds))}


def onnx_macs(onnx_model: OnnxModel) -> int:
    """Multiply-accumulates of the ``MatMul``, ``Gemm`` and ``Conv`` nodes of the graph: what
    the exported file computes per call, whatever the exporter. Shapes come from ONNX shape
    inference, or, where it cannot follow them, from one ONNX Runtime run. Element-wise ops,
    normalisation and softmax are not counted.
    """
    onnx = require('onnx')
    proto = _load_proto(onnx_model)
    graph = onnx.shape_inference.infer_shapes(proto).graph
    shapes: Dict[str, List[int]] = {t.name: list(t.dims) for t in graph.initializer}
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField('dim_value') for d in dims):
            shapes[info.name] = [d.dim_value for d in dims]
    nodes = [n for n in graph.node if n.op_type in ('MatMul', 'Gemm', 'Conv')]
    missing = sorted({name for n in nodes for name in (n.input[0], n.input[1], n.output[0])
                      if name not in shapes})
    if missing:
        shapes.update(_runtime_shapes(proto, missing))
    total = 0
    for node in nodes:
        a, b, out = (shapes[name] for name in (node.input[0], node.input[1], node.output[0]))
        if node.op_type == 'Conv':
            total += int(np.prod(out)) * int(np.prod(b[1:]))
        elif node.op_type == 'MatMul':
            total += int(np.prod(out)) * a[-1]
        else:
            trans_a = any(att.name == 'transA' and att.i for att in node.attribute)
            total += int(np.prod(out)) * (a[0] if trans_a else a[1])
    return total
