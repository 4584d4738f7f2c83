"""``benchmark.py --per-module``: every sparse module timed sparse against dense inside the
model, the losing ones marked, and the ``--cfg-options`` that make them dense (the structure of
the output; no timing is asserted)."""
import json
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from test_flops import load_tool

from mmdvit.analysis.inputs import model_inputs, sample_photos
from mmdvit.analysis.models import build_model, load_config, model_config
from mmdvit.analysis.module_timing import dense_config, dense_override, sparse_units
from mmdvit.sparse import record_decisions

ROOT = Path(__file__).resolve().parents[1]
BENCH_TOOL = ROOT / 'tools' / 'analysis_tools' / 'benchmark.py'
SEG = ROOT / 'configs' / 'demo' / 'upernet_dvit_swin_whole_demo.py'
SEG_UNITS = ['backbone.stage0', 'backbone.stage1', 'backbone.stage2', 'decode_head.fpn_convs.0',
             'decode_head.fpn_convs.1', 'decode_head.fpn_bottleneck']


def test_units_of_a_whole_model_and_their_keep_ratios():
    cfg = Config.fromfile(str(SEG))
    model = build_model(model_config(cfg), cfg.default_scope)
    units = sparse_units(model)
    assert [u[0] for u in units] == SEG_UNITS
    # stage 2 holds the backbone's predictors 2-4 (pruning_locs (0,), (0,), (0, 1, 2))
    assert units[2][2] == ('backbone', 2, 3)
    assert set(units[2][1]) >= set(model.backbone.score_predictors['2'])
    assert units[3][1] == [model.decode_head.fpn_convs[0].gate]
    assert [u[0] for u in sparse_units(model.backbone)] == SEG_UNITS[:3]
    assert [u[0] for u in sparse_units(build_model(load_config('deit-test').model,
                                                   'mmengine'))] == ['backbone.blocks']


def test_dense_override_makes_exactly_the_chosen_units_dense():
    """Merged with ``--cfg-options``, the override keeps every position of the chosen units
    (their predictors skipped) and leaves the others pruning as configured."""
    cfg = Config.fromfile(str(SEG))
    model = build_model(model_config(cfg), cfg.default_scope)
    units = sparse_units(model)
    chosen = [units[1], units[4]]
    override = dense_override(cfg, model, chosen)
    assert override == {'model.student.backbone.keep_ratios': (0.6, 1.0, 0.6, 0.5, 0.4),
                        'model.student.decode_head.keep_ratios': (0.4, 1.0, 0.35)}
    cfg.merge_from_dict(override)
    changed = build_model(model_config(cfg), cfg.default_scope)
    data = model_inputs(changed, sample_photos(1), (128, 128))
    with torch.no_grad(), record_decisions() as decisions:
        changed(data['inputs'], data['data_samples'], mode='tensor')
    scored = [(d.source, d.stage, d.log_probs is not None) for d in decisions]
    assert scored == [('backbone', 0, True), ('backbone', 1, False), ('backbone', 2, True),
                      ('backbone', 2, True), ('backbone', 2, True), ('decode_head', 0, True),
                      ('decode_head', 1, False), ('decode_head', 0, True)]
    dense = dense_config(model_config(Config.fromfile(str(SEG))), model)
    assert dense.backbone.keep_ratios == (1.0, ) * 5
    assert dense.decode_head.keep_ratios == (1.0, ) * 3
    bare = load_config('swin-test')
    backbone = build_model(bare.model, 'mmengine')
    assert [u[0] for u in sparse_units(backbone)] == ['backbone.stage2']
    assert dense_override(bare, backbone, sparse_units(backbone)) == {
        'model.keep_ratios': (1.0, 1.0, 1.0)}


def test_benchmark_per_module_rows(tmp_path, capsys):
    tool = load_tool(BENCH_TOOL)
    out = tmp_path / 'modules.json'
    result = tool.main([str(SEG), '--parts', 'model', '--shape', '128', '--batches', '2',
                        '--dtypes', 'float32', '--per-module', '--warmup', '1', '--iters', '2',
                        '--out', str(out)])
    assert result['rows'] == []
    assert json.loads(out.read_text())['modules'] == json.loads(json.dumps(result['modules']))
    (entry, ) = result['modules']
    assert (entry['name'], entry['part'], entry['batch'], entry['dtype']) == (
        'upernet_dvit_swin_whole_demo', 'model', 2, 'float32')
    assert [u['name'] for u in entry['units']] == SEG_UNITS
    assert [u['keep_ratios'] for u in entry['units']] == [[0.6], [0.6], [0.6, 0.5, 0.4], [0.4],
                                                         [0.4], [0.35]]
    for unit in entry['units'] + [entry['total']]:
        assert unit['dense_ms'] > 0 and unit['sparse_ms'] > 0
        assert unit['speedup'] == pytest.approx(unit['dense_ms'] / unit['sparse_ms'])
        assert unit['loses'] == (unit['sparse_ms'] >= unit['dense_ms'])
    for which in ('dense_ms', 'sparse_ms'):  # the units are parts of the forward
        assert sum(u[which] for u in entry['units']) < entry['total'][which]
    losing = [u for u in entry['units'] if u['loses']]
    printed = capsys.readouterr().out
    assert printed.count('  loses') == len(losing)
    if losing:
        assert '--cfg-options' in printed and entry['dense_override']
    with pytest.raises(SystemExit):
        tool.parse_args([str(SEG), '--per-module', '--compile'])
