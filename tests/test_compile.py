"""Graph capture: the whole models compile into one graph that CUDA graphs can capture, and
``tools/test.py --compile`` / ``benchmark.py --compile MODE`` run compiled models that compute
what the eager ones compute.

The graph checks use AOTAutograd with a recording compiler (the ATen graph that inductor would
compile, run as is), so each model compiles in seconds."""
from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest
import torch
from functorch.compile import make_boxed_func
from mmengine.config import Config
from PIL import Image
from test_backbone_sparsity import tiny_swin
from test_dense_e2e import metrics, run
from test_flops import load_tool
from test_sync_free import WHOLE, _outputs
from test_test_tool import SEG_CONFIG, SEG_DEMO, build_and_save
from torch._dynamo.backends.common import aot_autograd
from torch._inductor.utils import get_first_incompatible_cudagraph_node

from mmdvit.analysis.inputs import model_inputs, sample_photos
from mmdvit.analysis.models import build_model, default_scope, model_config
from mmdvit.datasets import make_ade20k_demo
from mmdvit.engine.compile import CompileHook, compile_model, inference_model
from mmdvit.sparse import record_decisions

ROOT = Path(__file__).resolve().parents[1]
BENCH_TOOL = ROOT / 'tools' / 'analysis_tools' / 'benchmark.py'


class RecordingBackend:
    """A torch.compile backend keeping every ATen graph it is given (one per graph, so one per
    graph break and per recompilation) and running it unchanged."""

    def __init__(self) -> None:
        self.graphs: List[torch.fx.GraphModule] = []
        self.backend = aot_autograd(fw_compiler=self.record)

    def record(self, gm: torch.fx.GraphModule, example_inputs) -> Callable:
        self.graphs.append(gm)
        return make_boxed_func(gm.forward)


def whole_model(name: str):
    """A whole demo model (:data:`test_sync_free.WHOLE`) and its function of the preprocessed
    data: the segmentor's ``tensor`` mode; the detector's backbone, neck and RPN convolutions."""
    cfg = Config.fromfile(str(ROOT / 'configs' / 'demo' / WHOLE[name]))
    model = build_model(model_config(cfg), cfg.default_scope)
    if name.startswith('upernet'):
        return model, (128, 128), lambda d: model(d['inputs'], d['data_samples'], mode='tensor')
    return model, (160, 256), lambda d: model.rpn_head(model.neck(model.backbone(d['inputs'])))


@pytest.mark.parametrize('name', ['upernet-swin', 'upernet-convnext', 'maskrcnn-swin'])
def test_whole_models_compile_in_one_capturable_graph(name):
    """``fullgraph=True, dynamic=False``: one graph (a graph break would raise), none more for
    a second image of the same shape (no recompilation), no node that stops CUDA-graph capture,
    and the compiled model prunes as the eager one does."""
    torch.manual_seed(0)
    model, shape, forward = whole_model(name)
    first, second = (model_inputs(model, [photo], shape) for photo in sample_photos(2))
    recorder = RecordingBackend()
    torch._dynamo.reset()
    compiled = torch.compile(forward, fullgraph=True, dynamic=False, backend=recorder.backend)
    with torch.no_grad():
        compiled(first)
        got = list(_outputs(compiled(second)))
        with record_decisions() as decisions:
            expected = list(_outputs(forward(second)))
    assert len(recorder.graphs) == 1
    assert get_first_incompatible_cudagraph_node(recorder.graphs[0]) is None
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert any(d.order is not None for d in decisions)  # it did prune


def test_a_compiled_backbone_hands_its_decisions_to_a_recorder_opened_per_call():
    """The decisions of a compiled forward reach the recorder around the call (appends traced
    as side effects: no graph break): one graph without a recorder, one more with one open,
    none for later calls each under a new recorder; the decisions equal the eager ones."""
    torch.manual_seed(0)
    backbone = tiny_swin().eval()
    x = torch.randn(2, 3, 64, 96)
    recorder = RecordingBackend()
    torch._dynamo.reset()
    compiled = torch.compile(backbone, fullgraph=True, dynamic=False, backend=recorder.backend)
    with torch.no_grad():
        compiled(x)
        for _ in range(2):
            with record_decisions() as got:
                compiled(x)
        with record_decisions() as expected:
            backbone(x)
    assert len(recorder.graphs) == 2
    assert len(got) == len(expected) == 3 and all(d.order is not None for d in got)
    for a, b in zip(got, expected):
        assert (a.stage, a.index, a.num_keep) == (b.stage, b.index, b.num_keep)
        assert torch.equal(a.order, b.order) and torch.equal(a.keep_mask, b.keep_mask)


def test_the_recording_backend_sees_graph_breaks_and_recompilation():
    """The counts above would catch a graph break and a recompilation."""
    recorder = RecordingBackend()
    torch._dynamo.reset()

    def breaks(x):
        y = x * 2
        if y.sum() > 0:  # data-dependent control flow: a graph break
            return y + 1
        return y - 1

    compiled = torch.compile(breaks, dynamic=False, backend=recorder.backend)
    compiled(torch.ones(3))
    assert len(recorder.graphs) >= 2
    count = len(recorder.graphs)
    compiled(torch.ones(4))  # another shape: compiled again
    assert len(recorder.graphs) > count
    with pytest.raises(Exception):
        torch.compile(breaks, fullgraph=True, backend=recorder.backend)(torch.ones(3))


@pytest.mark.parametrize('config, expected', [
    ('upernet_dvit_swin_whole_demo.py', ['encode_decode']),
    ('maskrcnn_dvit_swin_whole_demo.py', ['extract_feat', 'rpn_head.forward']),
    ('imagenet_dvit_swin_demo.py', ['extract_feat', 'head.forward']),
])
def test_compile_model_picks_the_fixed_shape_part(config, expected):
    """Segmentors compile ``encode_decode``; detectors and classifiers ``extract_feat`` and the
    dense head, through the mmdvit.SparsityTrainer wrapper."""
    cfg = Config.fromfile(str(ROOT / 'configs' / 'demo' / config))
    model = build_model(cfg.model, default_scope(cfg))
    core = inference_model(model)
    assert core is (model.student if cfg.model.type == 'mmdvit.SparsityTrainer' else model)
    assert compile_model(model, 'default') == expected
    assert all(n.split('.')[0] in core.__dict__ or n.split('.')[0] in core._modules
               for n in expected)
    with pytest.raises(ValueError, match='reduce-overhead'):
        compile_model(model, 'fast')
    with pytest.raises(ValueError, match='use one of'):
        CompileHook('fast')


@pytest.fixture(scope='module')
def seg_fixed(tmp_path_factory):
    """The tiny segmentor on 2 validation images of one size (one compilation)."""
    tmp = tmp_path_factory.mktemp('seg')
    make_ade20k_demo(str(tmp / 'ade20k'), num_train=0, num_val=2, seed=0, size_range=(64, 65))
    config = tmp / 'seg.py'
    config.write_text(SEG_CONFIG.format(base=SEG_DEMO, data=tmp / 'ade20k'))
    build_and_save(config, tmp / 'random.pth')
    return tmp, config, tmp / 'random.pth'


@pytest.mark.slow
def test_test_tool_compile_gives_the_eager_predictions(seg_fixed):
    """``tools/test.py --compile``: the same label maps (but for near-tied pixels) and metric as
    the eager run."""
    tmp, config, checkpoint = seg_fixed
    results = {}
    for label, extra in (('eager', []), ('compiled', ['--compile'])):
        out = tmp / f'{label}_pred'
        proc = run(['tools/test.py', str(config), str(checkpoint), '--work-dir',
                    str(tmp / label), '--out', str(out), *extra])
        maps = [np.array(Image.open(p)) for p in sorted(out.glob('*.png'))]
        results[label] = metrics(proc), maps
        if extra:
            assert 'torch.compile (mode default, dynamic=False) of encode_decode' in proc.stdout
    (eager_metrics, eager_maps), (metrics_c, maps_c) = results['eager'], results['compiled']
    assert len(eager_maps) == len(maps_c) == 2
    agree = np.mean([np.mean(a == b) for a, b in zip(eager_maps, maps_c)])
    assert agree >= 0.99
    assert metrics_c['mIoU'] == pytest.approx(eager_metrics['mIoU'], abs=0.5)


@pytest.mark.slow
def test_benchmark_compile_mode_times_dense_and_dynamic_compiled(tmp_path):
    """``benchmark.py --compile MODE``: dense and dynamic compiled in that mode in one run, the
    rows record it; the compiled models compute what the eager ones compute."""
    from mmdvit.analysis.benchmark import backend_calls, build_subject
    from mmdvit.analysis.models import load_config
    tool = load_tool(BENCH_TOOL)
    assert tool.parse_args(['deit-test', '--compile']).compile == 'default'
    with pytest.raises(SystemExit):
        tool.parse_args(['deit-test', '--compile', 'fastest'])
    result = tool.main(['convnext-test', '--shape', '64', '--batches', '1', '--dtypes',
                        'float32', '--no-twin', '--warmup', '1', '--iters', '3', '--no-retime',
                        '--compile', 'reduce-overhead', '--out', str(tmp_path / 'b.json')])
    (row, ) = result['rows']
    assert row['backend'] == 'compile' and row['compile_mode'] == 'reduce-overhead'
    assert result['compile_mode'] == 'reduce-overhead'
    assert row['dense_ips'] > 0 and row['dynamic_ips'] > 0
    subject = build_subject(load_config('convnext-test'), 'c', 'backbone', sample_photos(1)[0],
                            (64, 64), twin=False)
    eager = backend_calls(subject, 2, 'pytorch')
    compiled = backend_calls(subject, 2, 'compile', compile_mode='default')
    assert set(subject.compiled) == {('dense', 'default'), ('dynamic', 'default')}
    with torch.no_grad():
        for which in ('dense', 'dynamic'):
            for a, b in zip(eager[which](), compiled[which]()):
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match='use one of'):
        backend_calls(subject, 1, 'compile', compile_mode='fastest')
