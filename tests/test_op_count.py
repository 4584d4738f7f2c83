"""Kernel-launching aten ops per forward (mmdvit/analysis/op_count.py): what the counter counts,
that it counts the dense twin as it counts the upstream backbone, and ceilings on the
dynamic / dense ratio of small versions of the shipped configs so the sparse paths do not
grow (docs/efficiency.md, 'Lean sparse path', has the full-size counts)."""
import os

import pytest
import torch
from test_flops import GET_FLOPS, run_tool

from mmdvit.analysis.inputs import model_inputs, sample_photos
from mmdvit.analysis.models import (build_model, build_upstream_backbone, default_scope,
                                    load_config, model_config)
from mmdvit.analysis.op_count import OpCounter, compiled_kernels, count_ops, op_counts
from mmdvit.models.dense_twin import dense_twin_config
from mmdvit.sparse import BlockScorePredictor, ScorePredictor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, 'configs', 'demo')

# config -> (input H, W, the part compared, ratio reached + 0.05 slack; with the sync-free
# accelerator path). Small widths, few blocks: the ratios differ from the full-size models'
# (docs/efficiency.md).
CEILINGS = {
    'upernet_dvit_swin_whole_demo.py': ((96, 128), 'model', 1.85),
    'upernet_dvit_convnext_whole_demo.py': ((96, 128), 'model', 2.69),
    'maskrcnn_dvit_swin_whole_demo.py': ((96, 128), 'backbone_neck', 1.89),
    'swin-test': ((96, 96), 'backbone', 1.24),
    'convnext-test': ((96, 96), 'backbone', 2.25),
    'deit-test': ((64, 64), 'backbone', 2.55),
}


def test_counter_counts_kernels_and_leaves_out_views():
    """A view chain costs nothing; a copy, an add and an activation are three kernels."""
    x = torch.randn(4, 6)

    def fn(t):
        v = t.view(6, 4).t().unsqueeze(0)  # views only (not contiguous)
        return torch.relu(v.contiguous() + 1)  # clone (the copy), add, relu

    counter = OpCounter()
    assert count_ops(fn, x, counter=counter) == 3
    assert counter.counts == {'clone': 1, 'add': 1, 'relu': 1}


@pytest.mark.parametrize('preset, exact', [('convnext-test', True), ('swin-test', False)])
def test_dense_twin_counts_like_the_upstream_backbone(preset, exact):
    """The dense twin of a dynamic backbone launches what the upstream backbone it replaces
    launches (mmpretrain's ConvNeXt: the same ops; mmseg's Swin: within 5 %, mmdvit pads and
    partitions windows itself)."""
    cfg = load_config(preset)
    dense = build_model(dense_twin_config(model_config(cfg)), default_scope(cfg)).eval()
    upstream = build_upstream_backbone(model_config(cfg))
    x = torch.randn(1, 3, 64, 64)
    ours, theirs = count_ops(dense, x), count_ops(upstream, x)
    assert theirs > 40
    if exact:
        assert ours == theirs
    else:
        assert abs(ours - theirs) <= 0.05 * theirs, (ours, theirs)


@pytest.mark.parametrize('name', CEILINGS)
def test_dynamic_over_dense_ops_stay_below_the_ceiling(name):
    shape, part, ceiling = CEILINGS[name]
    config = os.path.join(DEMO, name) if name.endswith('.py') else name
    counts = op_counts(load_config(config), shape, sample_photos(1)[0])[part]
    assert counts['dynamic'] / counts['dense'] <= ceiling, counts
    assert counts['ratio'] == round(counts['dynamic'] / counts['dense'], 4)


def test_get_flops_reports_the_op_counts(tmp_path, capsys):
    out = tmp_path / 'flops.json'
    result = run_tool(GET_FLOPS, ['swin-test', '--shape', '64', '--count-ops', '--out',
                                  str(out)])
    ops = result['ops']['backbone']
    assert 0 < ops['dense'] < ops['dynamic'] and ops['ratio'] > 1
    assert f"{ops['dense']:12d}{ops['dynamic']:12d}" in capsys.readouterr().out
    assert out.read_text().count('"ops"') == 1


@pytest.mark.parametrize('preset', ['deit-test', 'convnext-test'])
def test_predictor_ops_are_those_the_predictors_launch_on_their_own(preset):
    """The predictor share of the count equals the ops of every score predictor run on its
    own on the inputs it received in the forward (captured by hooks), and ``predictors_only``
    is (dense + predictors) / dense."""
    cfg = load_config(preset)
    counts = op_counts(cfg, (64, 64), sample_photos(1)[0])['backbone']
    model = build_model(model_config(cfg), default_scope(cfg)).eval()
    dense = build_model(dense_twin_config(model_config(cfg)), default_scope(cfg)).eval()
    calls = []
    predictors = [m for m in model.modules() if isinstance(m, (ScorePredictor,
                                                                BlockScorePredictor))]
    handles = [m.register_forward_pre_hook(lambda m, args: calls.append((m, args)))
               for m in predictors]
    x = model_inputs(model, [sample_photos(1)[0]], (64, 64))['inputs']
    count_ops(model, x)
    for handle in handles:
        handle.remove()
    steady = calls[len(calls) // 2:]  # count_ops runs a warm-up call, then the counted one
    assert len(steady) == len(predictors) > 0
    alone = sum(count_ops(m, *args) for m, args in steady)
    assert counts['predictors'] == alone > 0
    assert counts['dense'] == count_ops(dense, x)
    assert counts['predictors_only'] == round((counts['dense'] + alone) / counts['dense'], 4)
    assert counts['ratio'] >= counts['predictors_only']


def test_compiled_kernels_are_those_in_the_generated_code():
    """What the profiler sees the compiled graph run equals the kernel calls in the code
    inductor generated: a pointwise chain fuses into one kernel (three eagerly), the two matrix
    products stay library calls, LayerNorm, GELU and log-softmax become generated kernels."""
    import re

    from torch._inductor.utils import run_and_get_code
    def pointwise(t):
        return torch.relu(t + 1) * 2

    assert compiled_kernels(pointwise, torch.randn(8, 8)) == {'generated': 1}
    assert count_ops(pointwise, torch.randn(8, 8)) == 3
    mlp = torch.nn.Sequential(torch.nn.LayerNorm(16), torch.nn.Linear(16, 16), torch.nn.GELU(),
                              torch.nn.Linear(16, 2), torch.nn.LogSoftmax(-1)).eval()
    x = torch.randn(1, 10, 16)
    kinds = compiled_kernels(mlp, x)
    assert kinds['aten::addmm'] == 2 and kinds['generated'] == 3, kinds
    with torch.no_grad():
        code = run_and_get_code(torch.compile(mlp, fullgraph=True, dynamic=False), x)[1][0]
    calls = re.findall(r'^\s+(cpp_fused_\w+|extern_kernels\.\w+)\(', code, re.M)
    assert len(calls) == sum(kinds.values())
    assert count_ops(mlp, x) == 5  # eager: nothing here fuses, one kernel per layer too


def test_get_flops_reports_the_compiled_kernels(tmp_path, capsys):
    """``--count-kernels``: the whole model compiled, dense and dynamic; the dynamic model runs
    more kernels (its predictors, decisions and routing) and fewer than it launches eagerly."""
    result = run_tool(GET_FLOPS, ['deit-test', '--shape', '64', '--count-ops', '--count-kernels',
                                  '--out', str(tmp_path / 'flops.json')])
    kernels, ops = result['kernels']['model'], result['ops']['model']
    assert 0 < kernels['dense'] < kernels['dynamic'] < ops['dynamic']
    assert kernels['dense'] < ops['dense']
    assert kernels['dynamic'] == sum(kernels['dynamic_kinds'].values())
    assert kernels['dynamic_kinds']['aten::addmm'] > kernels['dense_kinds']['aten::addmm']
    assert kernels['ratio'] == round(kernels['dynamic'] / kernels['dense'], 4)
    assert 'kernels compiled' in capsys.readouterr().out
