"""ONNX export of the dynamic backbones (mmdvit.deploy, tools/deployment/).

The exported graphs must reproduce PyTorch in ONNX Runtime, recompute the kept set for every
input (not freeze the one of the export example), and compute fewer MACs than the dense twin.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

from mmengine.config import ConfigDict  # noqa: E402

from mmdvit.analysis.models import build_model, copy_shared_weights, set_keep_ratios  # noqa
from mmdvit.analysis.presets import PRESETS  # noqa: E402
from mmdvit.deploy import onnx_export  # noqa: E402
from mmdvit.deploy import (OnnxExportError, export_and_verify, onnx_macs,  # noqa: E402
                           onnx_op_counts, ort_session, spread_predictor_scores)
from mmdvit.sparse import record_decisions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXPORT_TOOL = ROOT / 'tools' / 'deployment' / 'pytorch2onnx.py'
BENCH_TOOL = ROOT / 'tools' / 'analysis_tools' / 'benchmark.py'

WINDOW_SWIN = dict(PRESETS['swin-test'], granularity='window', sparse_stages=(0, 1, 2, 3),
                   pruning_locs=((0, ), (0, ), (0, ), (0, )), keep_ratios=(0.6, 0.6, 0.5, 0.5))
TINY_VIT = dict(type='mmdvit.DynamicViT', arch=dict(embed_dims=32, num_layers=4, num_heads=2),
                img_size=64, pruning_locs=(1, 2, 3), keep_ratios=(0.7, 0.49, 0.343))
# name -> (backbone config, input (H, W), exporter the automatic choice must use)
CASES = {
    'convnext': (PRESETS['convnext-test'], (64, 64), 'dynamo'),
    'swin-token': (PRESETS['swin-test'], (64, 64), 'dynamo'),
    'swin-window': (WINDOW_SWIN, (128, 128), 'dynamo'),
    'vit': (TINY_VIT, (64, 64), 'dynamo'),
}
BATCH = 2


def build(cfg: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ConfigDict(cfg), 'mmengine')
    spread_predictor_scores(model)
    return model


def twin_of(cfg: dict, model: torch.nn.Module) -> torch.nn.Module:
    """The same backbone with every keep ratio 1.0 and the same weights."""
    twin = build_model(set_keep_ratios(ConfigDict(cfg), [1.0] * len(model.keep_ratios)),
                       'mmengine')
    copy_shared_weights(model, twin)
    return twin


def kept_sets(decisions):
    return [d.keep_indices.sort(dim=1).values for d in decisions if d.order is not None]


def torch_outputs(model, x):
    with torch.no_grad():
        return [t.numpy() for t in onnx_export.flatten_outputs(model(x))]


def load_tool(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('case', sorted(CASES))
def test_export_matches_pytorch_and_recomputes_the_decision(case, tmp_path):
    cfg, shape, exporter = CASES[case]
    model = build(cfg)
    path = tmp_path / f'{case}.onnx'
    result = export_and_verify(model, path, shape, BATCH)
    assert result.path == path and path.is_file()
    assert result.exporter == exporter and not result.failures
    check = result.check
    assert check.passed and check.max_rel < 1e-4, check.summary()
    assert check.kept_differ is True  # the two check batches keep different positions

    # A third, unrelated input: PyTorch keeps other positions than for the export example,
    # and the graph still reproduces PyTorch, so the kept set is computed inside the graph.
    example = onnx_export.check_inputs(model, shape, BATCH)[0]
    with record_decisions() as decisions:
        torch_outputs(model, example)
    first = kept_sets(decisions)
    other = torch.randn(BATCH, 3, *shape, generator=torch.Generator().manual_seed(7))
    with record_decisions() as decisions:
        ref = torch_outputs(model, other)
    assert first and any(not torch.equal(a, b) for a, b in zip(first, kept_sets(decisions)))
    session = ort_session(path, threads=1)
    got = session.run(None, {session.get_inputs()[0].name: other.numpy()})
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()

    # The decisions are in the graph (one TopK per pruning decision at least) and the graph
    # computes fewer multiply-adds than the dense twin's, which has no TopK.
    assert onnx_op_counts(path)['TopK'] >= len(first)
    twin_path = tmp_path / f'{case}_twin.onnx'
    export_and_verify(twin_of(cfg, model), twin_path, shape, BATCH, inputs=[other])
    assert onnx_op_counts(twin_path)['TopK'] == 0
    assert onnx_macs(path) < 0.97 * onnx_macs(twin_path)


def test_mismatch_is_refused_and_nothing_written(tmp_path, monkeypatch):
    model = build(PRESETS['convnext-test'])
    real = onnx_export._export_bytes

    def wrong(module, example, exporter, opset, num_outputs):
        params = list(module.parameters())
        with torch.no_grad():  # a graph whose weights differ from the model's
            for param in params:
                param.add_(0.1)
            try:
                return real(module, example, exporter, opset, num_outputs)
            finally:
                for param in params:
                    param.sub_(0.1)

    monkeypatch.setattr(onnx_export, '_export_bytes', wrong)
    path = tmp_path / 'bad.onnx'
    with pytest.raises(onnx_export.OnnxMismatchError, match='was not written'):
        export_and_verify(model, path, (64, 64), 1)
    assert os.listdir(tmp_path) == []


def test_overwrite_needs_consent_and_write_is_atomic(tmp_path):
    model = build(PRESETS['convnext-test'])
    path = tmp_path / 'model.onnx'
    path.write_bytes(b'old')
    with pytest.raises(FileExistsError, match='overwrite=True'):
        onnx_export.export_onnx(model, path, (64, 64))
    assert path.read_bytes() == b'old'
    assert onnx_export.export_onnx(model, path, (64, 64), overwrite=True) == path
    assert onnx_op_counts(path)['TopK'] > 0
    assert sorted(os.listdir(tmp_path)) == ['model.onnx']  # no temporary file left


def test_both_exporter_failures_are_named(tmp_path, monkeypatch):
    def fail(module, example, exporter, opset, num_outputs):
        raise RuntimeError(f'{exporter} broke')

    monkeypatch.setattr(onnx_export, '_export_bytes', fail)
    with pytest.raises(OnnxExportError) as err:
        export_and_verify(build(PRESETS['convnext-test']), tmp_path / 'x.onnx', (64, 64))
    assert 'torchscript exporter: RuntimeError: torchscript broke' in str(err.value)
    assert 'dynamo exporter: RuntimeError: dynamo broke' in str(err.value)
    assert not (tmp_path / 'x.onnx').exists()


def test_exporter_choice():
    swin, convnext = build(PRESETS['swin-test']), build(PRESETS['convnext-test'])
    assert onnx_export.exporter_order(swin) == ['dynamo', 'torchscript']
    assert onnx_export.exporter_order(convnext) == ['dynamo', 'torchscript']
    assert onnx_export.exporter_order(convnext, dynamo=False) == ['torchscript']


def test_missing_packages_and_detectors_give_clear_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(ImportError, match='pip install onnx onnxruntime onnxscript'):
        onnx_export.require('onnxruntime')

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Identity()
            self.data_preprocessor = torch.nn.Identity()

    Detector.__module__ = 'mmdet.models.detectors.mask_rcnn'
    with pytest.raises(OnnxExportError, match='--part backbone'):
        onnx_export.exportable(Detector())


def test_export_tool_end_to_end(tmp_path):
    out = tmp_path / 'convnext.onnx'
    cmd = [sys.executable, str(EXPORT_TOOL), 'convnext-test', '--shape', '64', '64', '--batch',
           '2', '--out', str(out)]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'dynamo exporter' in run.stdout and ': OK' in run.stdout
    session = ort_session(out)
    assert session.get_inputs()[0].shape == [2, 3, 64, 64]
    content = out.read_bytes()

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode != 0
    assert '--force' in again.stderr and str(out) in again.stderr
    assert out.read_bytes() == content  # untouched


def test_export_tool_loads_checkpoint_and_forces(tmp_path):
    tool = load_tool(EXPORT_TOOL)
    model = build(PRESETS['convnext-test'])
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    ckpt = tmp_path / 'ckpt.pth'
    # a SparsityTrainer-style whole-model checkpoint: student.backbone.<key>
    torch.save(dict(state_dict={f'student.backbone.{k}': v
                                for k, v in model.state_dict().items()}), ckpt)
    out = tmp_path / 'out.onnx'
    out.write_bytes(b'old')
    with pytest.raises(tool.ToolError, match='--force'):
        tool.main(['convnext-test', '--checkpoint', str(ckpt), '--shape', '64', '--out',
                   str(out)])
    result = tool.main(['convnext-test', '--checkpoint', str(ckpt), '--shape', '64', '--out',
                        str(out), '--force'])
    assert result['check']['passed']
    x = torch.randn(1, 3, 64, 64)
    session = ort_session(out)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    model.eval()
    ref = torch_outputs(model, x)[0]
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()  # the checkpoint's weights

    with pytest.raises(tool.ToolError, match='shares no tensor'):
        torch.save(dict(state_dict={'foo.weight': torch.zeros(1)}), ckpt)
        tool.main(['convnext-test', '--checkpoint', str(ckpt), '--shape', '64', '--out',
                   str(tmp_path / 'other.onnx')])


def test_benchmark_backends_onnxruntime_and_compile(tmp_path):
    """``benchmark.py --backend onnxruntime`` exports dense, twin and dynamic at each batch size
    and times them in ONNX Runtime (the dynamic graph keeps its TopK); ``--compile`` times
    torch.compile versions. Both compute what the eager models compute."""
    from mmdvit.analysis.benchmark import backend_calls, build_subject
    from mmdvit.analysis.inputs import sample_photos
    from mmdvit.analysis.models import load_config
    tool = load_tool(BENCH_TOOL)
    onnx_dir, out = tmp_path / 'graphs', tmp_path / 'bench.json'
    result = tool.main(['deit-test', '--shape', '64', '--batches', '2', '--threads', '1',
                        '--warmup', '1', '--iters', '3', '--backend', 'onnxruntime',
                        '--onnx-dir', str(onnx_dir), '--out', str(out)])
    (row, ) = result['rows']
    assert row['backend'] == 'onnxruntime' and row['dtype'] == 'float32'
    assert row['ideal_speedup'] > 1 and all(row[k] > 0 for k in ('dense_ips', 'dynamic_ips'))
    graphs = sorted(p.name for p in onnx_dir.iterdir())
    assert graphs == [f'deit-test_backbone_{w}_b2.onnx' for w in ('dense', 'dynamic', 'twin')]
    assert onnx_op_counts(str(onnx_dir / graphs[1]))['TopK'] >= 3  # one per predictor at least
    assert onnx_op_counts(str(onnx_dir / graphs[2]))['TopK'] == 0
    with pytest.raises(SystemExit):
        tool.parse_args(['deit-test', '--backend', 'onnxruntime', '--dtypes', 'amp'])

    subject = build_subject(load_config('convnext-test'), 'c', 'backbone', sample_photos(1)[0],
                            (64, 64), twin=False)
    eager, compiled = (backend_calls(subject, 1, b) for b in ('pytorch', 'compile'))
    with torch.no_grad():
        for which in ('dense', 'dynamic'):
            for a, b in zip(eager[which](), compiled[which]()):
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
