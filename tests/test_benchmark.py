"""tools/analysis_tools/benchmark.py: quick mode writes well-formed JSON with every field and
prints progress and rounded rows, the models it compares really share their weights, a row
whose timed calls were disturbed is timed again and warned about (no timing thresholds)."""
import io
import json
import math
import os

import pytest
import torch

from mmdvit.analysis import benchmark
from mmdvit.analysis.benchmark import (Timings, benchmark_rows, build_subject, quiet_calls,
                                       time_interleaved)
from mmdvit.analysis.inputs import sample_photos
from mmdvit.analysis.models import load_config
from mmdvit.sparse import record_decisions
from test_flops import TINY_SEG, load_tool, run_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(ROOT, 'tools', 'analysis_tools', 'benchmark.py')
ROW_FIELDS = ('device', 'dtype', 'part', 'batch', 'shape', 'dense_ips', 'dynamic_ips', 'speedup',
              'ideal_speedup', 'realisation', 'twin_ips', 'twin_speedup', 'twin_realisation',
              'quiet_calls', 'dense_ips_best', 'dynamic_ips_best',
              'dense_gflops', 'dynamic_gflops', 'keep_ratios', 'rounds', 'threads',
              'dense_ips_cpu', 'dynamic_ips_cpu', 'twin_ips_cpu', 'speedup_cpu',
              'realisation_cpu', 'twin_speedup_cpu', 'twin_realisation_cpu', 'disturbed')


def test_quick_mode_writes_every_field(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    run_tool(BENCHMARK, ['--quick', 'swin-test', '--memory', '--out', str(out)])
    result = json.loads(out.read_text())
    printed = capsys.readouterr()
    for i, (dtype, batch) in enumerate([('float32', 1), ('float32', 2),
                                        ('bfloat16-autocast', 1), ('bfloat16-autocast', 2)]):
        assert f'[{i + 1}/4] swin-test backbone {dtype} batch {batch}: timing...' in printed.err
    for row in result['rows']:  # the console rounds, the JSON keeps full precision
        assert f"{row['speedup']:.2f}x" in printed.out and str(row['speedup']) not in printed.out
    assert result['machine']['cpu_count'] >= 1 and 'median' in result['method']
    rows = result['rows']
    assert {(r['name'], r['dtype'], r['batch']) for r in rows} == {
        ('swin-test', d, b) for d in ('float32', 'bfloat16-autocast') for b in (1, 2)}
    for row in rows:
        assert all(field in row for field in ROW_FIELDS), sorted(set(ROW_FIELDS) - set(row))
        assert row['device'] == 'cpu' and row['part'] == 'backbone' and row['shape'] == [64, 64]
        for key in ('dense_ips', 'dynamic_ips', 'twin_ips', 'ideal_speedup', 'dense_ips_cpu',
                    'dynamic_ips_cpu'):
            assert math.isfinite(row[key]) and row[key] > 0
        for suffix in ('', '_cpu'):
            assert row[f'speedup{suffix}'] == pytest.approx(row[f'dynamic_ips{suffix}'] /
                                                            row[f'dense_ips{suffix}'])
            assert row[f'realisation{suffix}'] == pytest.approx(row[f'speedup{suffix}'] /
                                                                row['ideal_speedup'])
        assert row['ideal_speedup'] == pytest.approx(row['dense_gflops'] / row['dynamic_gflops'])
        assert row['dense_gflops'] > row['dynamic_gflops']
        assert row['rounds'] >= 2
    assert [m['name'] for m in result['memory']] == ['swin-test']
    for mem in result['memory']:
        assert mem['dense_step_mib'] > 0 and mem['dynamic_step_mib'] > 0
        assert mem['step_ratio'] == pytest.approx(mem['dynamic_step_mib'] / mem['dense_step_mib'])


@pytest.mark.parametrize('preset, upstream', [('swin-test', 'mmseg'),
                                              ('convnext-test', 'mmpretrain'),
                                              ('deit-test', 'timm')])
def test_backbone_subject_compares_upstream_with_the_same_weights(preset, upstream):
    cfg = load_config(preset)
    cfg.model.keep_ratios = (1.0, 1.0, 1.0)
    subject = build_subject(cfg, preset, 'backbone', sample_photos(1)[0], (64, 64))
    assert type(subject.models['dense']).__module__.startswith(upstream)
    with torch.no_grad():
        outs = {w: subject.call(w, 2)() for w in subject.models}
    dense = tuple(outs['dense']) if isinstance(outs['dense'], (tuple, list)) else (
        outs['dense'], )
    assert len(dense) == len(outs['dynamic'])
    for which in ('dynamic', 'twin'):
        for out, ref in zip(outs[which], dense):
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_window_granularity_backbone_is_compared_with_upstream_swin():
    """A window-granular, every-stage config: the upstream Swin is built without mmdvit's
    sparsity arguments and, at ratio 1.0, computes what the dynamic backbone computes."""
    cfg = load_config('swin-test')
    cfg.model.update(granularity='window', sparse_stages=(0, 1, 2, 3),
                     pruning_locs=((0, ), (0, ), (0, 1, 2), (0, )), keep_ratios=(1.0, ) * 6)
    subject = build_subject(cfg, 'swin-window', 'backbone', sample_photos(1)[0], (64, 96),
                            twin=False)
    assert type(subject.models['dense']).__module__.startswith('mmseg')
    with torch.no_grad():
        dense = subject.call('dense', 1)()
        with record_decisions() as decisions:
            dynamic = subject.call('dynamic', 1)()
    for out, ref in zip(dynamic, dense):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert len(decisions) == 6


def test_whole_model_subject_uses_the_upstream_backbone(tmp_path):
    config = tmp_path / 'cfg.py'
    config.write_text(TINY_SEG)
    cfg = load_config(str(config))
    subject = build_subject(cfg, 'seg', 'model', sample_photos(1)[0], (64, 64), twin=False)
    dense, dynamic = subject.models['dense'], subject.models['dynamic']
    assert type(dense.backbone).__module__.startswith('mmseg')
    assert type(dynamic.backbone).__name__ == 'DynamicSwinTransformer'
    for key, value in dense.state_dict().items():
        assert torch.equal(value, dynamic.state_dict()[key]), key
    with torch.no_grad():
        logits = subject.call('dynamic', 1)()
    assert logits.shape[:2] == (1, 150)


def test_interleaved_timing_runs_every_function_every_round():
    calls = []
    timings = time_interleaved({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')},
                               'cpu', warmup=1, iters=4, max_seconds=60)
    assert [len(t) for t in timings.wall.values()] == [4, 4]
    assert [len(t) for t in timings.cpu.values()] == [4, 4]
    assert calls == ['a', 'b'] + ['a', 'b', 'b', 'a'] * 2


def test_cuda_request_without_a_gpu_is_refused(capsys):
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with pytest.raises(SystemExit):
        run_tool(BENCHMARK, ['swin-test', '--device', 'cuda'])
    assert 'no CUDA device' in capsys.readouterr().err


def test_calls_disturbed_by_foreign_load_are_dropped():
    assert quiet_calls([1.0, 1.1, 5.0, 1.0, 1.3]) == [1.0, 1.1, 1.0]


DISTURBED = [0.01, 0.05, 0.05]  # 1 of 3 calls within 1.25x of the fastest
QUIET = [0.02, 0.021, 0.02]


@pytest.fixture(scope='module')
def small_subject():
    return build_subject(load_config('swin-test'), 's', 'backbone', sample_photos(1)[0],
                         (64, 64), twin=False)


@pytest.mark.parametrize('measured, retime, attempts, quiet, disturbed', [
    ([DISTURBED, QUIET], True, ['timing', 'retiming'], 3, False),
    ([DISTURBED, DISTURBED], True, ['timing', 'retiming'], 1, True),
    ([QUIET, DISTURBED], True, ['timing'], 3, False),
    ([DISTURBED, QUIET], False, ['timing'], 1, True),
], ids=['quiet-again', 'disturbed-twice', 'quiet-first', 'no-retime'])
def test_a_disturbed_row_is_timed_again_keeping_the_quieter_timing(
        small_subject, monkeypatch, measured, retime, attempts, quiet, disturbed):
    """Fake timings (seconds per call, the same for both models) stand in for the machine's
    load; the row keeps the measurement with more quiet calls."""
    walls = iter(measured)

    def timed(calls, device, warmup, iters, max_seconds):
        wall = next(walls)
        return Timings({n: list(wall) for n in calls}, {n: list(wall) for n in calls})

    monkeypatch.setattr(benchmark, 'time_interleaved', timed)
    seen = []
    [row] = benchmark_rows(small_subject, (64, 64), [2], ['float32'], 'cpu', 0, 3, 10,
                           progress=lambda r, attempt: seen.append((r['batch'], attempt)),
                           retime=retime)
    assert seen == [(2, a) for a in attempts]
    assert (row['quiet_calls'], row['rounds'], row['disturbed']) == (quiet, 3, disturbed)
    assert row.get('retimed', False) == (len(attempts) == 2)
    assert row['dense_ips'] == pytest.approx(2 / (0.01 if quiet == 1 else 0.02))  # the kept one


def fake_row(**fields) -> dict:
    row = dict(name='swin-t', part='backbone', dtype='float32', batch=8, shape=[224, 224],
               dense_ips=10.0, dynamic_ips=7.6, speedup=0.76, ideal_speedup=1.66,
               realisation=0.458, speedup_cpu=1.6234, realisation_cpu=0.978, quiet_calls=1,
               rounds=3, retimed=True)
    row.update(fields)
    row['disturbed'] = benchmark.is_disturbed(row)
    return row


def test_a_disturbed_row_prints_a_warning_saying_how_to_retime_it(capsys):
    tool = load_tool(BENCHMARK)
    row = fake_row()
    assert tool.disturbed_warning(row) == (
        'warning: swin-t backbone float32 batch 8: timed twice, and both times only 1 of 3 '
        'timed rounds ran undisturbed by other processes, so its wall-clock speed-up (0.76x) '
        'is unreliable; its CPU-time speed-up (1.62x) is hardly affected by other processes. '
        'Re-time it when the machine is quieter (`uptime` shows the load): the same command '
        'with --parts backbone --batches 8 --dtypes float32, or more --iters.')
    assert tool.disturbed_warning(fake_row(quiet_calls=2)) is None  # 2 of 3 quiet
    assert tool.disturbed_warning(fake_row(quiet_calls=1, rounds=2)) is None
    stream = io.StringIO()
    progress = tool.Progress(2, stream)
    progress.report(row)
    progress.report(fake_row(quiet_calls=3, dtype='bfloat16-autocast'))
    assert capsys.readouterr().out.splitlines() == [
        tool.format_row(row), tool.format_row(fake_row(quiet_calls=3, dtype='bfloat16-autocast'))]
    assert stream.getvalue() == tool.disturbed_warning(row) + '\n'
    assert '    0.76x   1.66x    0.46              1.62x    0.98' in tool.format_row(row)


def test_channels_last_runs_give_the_same_outputs():
    cfg = load_config('convnext-test')
    image = sample_photos(1)[0]
    plain = build_subject(cfg, 'c', 'backbone', image, (64, 64), twin=False)
    channels_last = build_subject(cfg, 'c', 'backbone', image, (64, 64), twin=False,
                                  channels_last=True)
    channels_last.models['dynamic'].load_state_dict(plain.models['dynamic'].state_dict())
    with torch.no_grad():
        ref, out = plain.call('dynamic', 2)(), channels_last.call('dynamic', 2)()
    (inputs, ), _ = channels_last.inputs['dynamic'](2)
    assert inputs.is_contiguous(memory_format=torch.channels_last) and not inputs.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_upstream_swin_follows_the_config_family():
    from mmdvit.analysis.models import upstream_backbone_config
    cfg = load_config('swin-test').model
    assert upstream_backbone_config(cfg).type == 'mmseg.SwinTransformer'
    assert upstream_backbone_config(dict(cfg, convert_weights=True)).type == \
        'mmdet.SwinTransformer'
    assert 'pad_small_map' not in upstream_backbone_config(dict(cfg, pad_small_map=True))
    with pytest.raises(ValueError, match='pad_small_map=False'):
        upstream_backbone_config(dict(cfg, pad_small_map=False))


def test_a_setting_an_upstream_op_cannot_run_is_skipped_with_its_reason():
    from mmdvit.analysis.benchmark import benchmark_rows
    format_row = load_tool(BENCHMARK).format_row
    subject = build_subject(load_config('swin-test'), 's', 'backbone', sample_photos(1)[0],
                            (64, 64), twin=False)

    real_call = subject.call

    def call(which, batch):
        def run():
            if torch.is_autocast_enabled('cpu'):  # as mmcv's CPU NMS under bf16 autocast
                raise RuntimeError('expected scalar type Float but found BFloat16')
            return real_call(which, batch)()
        return run

    subject.call = call
    rows = benchmark_rows(subject, (64, 64), [1], ['float32', 'amp'], 'cpu', 0, 3, 10)
    assert 'error' not in rows[0] and 'skipped' not in rows[0] and rows[0]['speedup'] > 0
    assert rows[1]['skipped'].endswith('found BFloat16') and rows[1]['speedup'] is None
    assert 'error' not in rows[1]
    assert format_row(rows[1]) == ('skipped: s bfloat16-autocast batch 1: RuntimeError: '
                                   'expected scalar type Float but found BFloat16')
    # A failure in float32 is a failure of the models, not of a setting.

    def fail_at_batch_2(which, batch):
        def run():
            if batch == 2:
                raise RuntimeError('broken')
            return real_call(which, batch)()
        return run

    subject.call = fail_at_batch_2
    rows = benchmark_rows(subject, (64, 64), [2], ['float32'], 'cpu', 0, 3, 10)
    assert rows[0]['error'] == 'RuntimeError: broken' and 'skipped' not in rows[0]
