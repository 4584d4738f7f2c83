"""tools/gpu_rows.py: the prepared GPU run covers every row docs/efficiency.md needs, and runs
on CPU with ``--device cpu --quick`` (the demo configs, eager rows and the CUDA tests, which
skip without a GPU)."""
import json
from pathlib import Path

from test_dense_e2e import run
from test_flops import load_tool

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'tools' / 'gpu_rows.py'


def option(command, name, count=1):
    """The values after ``name`` in a command line."""
    i = command.index(name)
    return command[i + 1:i + 1 + count]


def test_the_gpu_plan_covers_every_row(tmp_path):
    """UPerNet Swin-T / ConvNeXt-T whole and Mask R-CNN Swin-T backbone + neck at their real
    sizes, batches 1 and 8, float32 and float16, eager / compile / reduce-overhead, dense and
    dynamic in each job; eager rows and the CUDA tests first, then the issue's targets."""
    tool = load_tool(TOOL)
    jobs = tool.plan(tool.parse_args(['--out', str(tmp_path), '--list']))
    assert [j.name for j in jobs[:4]] == ['eager-upernet-swin', 'eager-upernet-convnext',
                                          'eager-maskrcnn-swin', 'tests']
    assert jobs[3].command == ['-m', 'pytest', '-q', 'tests/test_cuda.py']
    assert jobs[4].name == 'reduce-overhead-upernet-swin-float16'
    covered = set()
    for job in jobs[:3] + jobs[4:]:
        command = job.command
        mode = option(command, '--compile')[0] if '--compile' in command else 'eager'
        assert mode == job.group and option(command, '--device') == ['cuda']
        assert option(command, '--batches', 2) == ['1', '8'] and '--no-twin' in command
        config, part = command[1], option(command, '--parts')[0]
        shape = option(command, '--shape', 2)
        assert (part, shape) == (('features', ['800', '1344']) if 'maskrcnn' in config else
                                 ('model', ['512', '512']))
        assert option(command, '--out')[0] == str(tmp_path / f'{job.name}.json')
        dtypes = command[command.index('--dtypes') + 1:command.index('--device')]
        covered |= {(Path(config).name, mode, d) for d in dtypes}
    configs = ['upernet_dvit_swin_whole.py', 'upernet_dvit_convnext_whole.py',
               'maskrcnn_dvit_swin_whole.py']
    assert covered == {(c, m, d) for c in configs for m in ('eager', 'reduce-overhead', 'default')
                       for d in ('float32', 'amp')}
    assert all((ROOT / 'configs' / c).is_file() for c in configs)


def test_gpu_rows_run_on_cpu(tmp_path):
    out = tmp_path / 'rows'
    run(['tools/gpu_rows.py', '--device', 'cpu', '--quick', '--out', str(out), '--only', 'eager',
         'tests'])
    summary = json.loads((out / 'summary.json').read_text())
    assert [(j['name'], j['status']) for j in summary] == [
        ('eager-upernet-swin', 'ok'), ('eager-upernet-convnext', 'ok'),
        ('eager-maskrcnn-swin', 'ok'), ('tests', 'ok')]
    for job in summary[:3]:
        rows = json.loads(Path(job['out']).read_text())['rows']
        assert sorted((r['dtype'], r['batch']) for r in rows) == [
            ('bfloat16-autocast', 1), ('bfloat16-autocast', 2), ('float32', 1), ('float32', 2)]
        for row in rows:
            assert row['dense_ips'] > 0 and row['dynamic_ips'] > 0 and row['ideal_speedup'] > 1
    assert 'skipped' in (out / 'tests.log').read_text()  # no GPU here


def test_jobs_without_time_left_are_skipped(tmp_path):
    tool = load_tool(TOOL)
    results = tool.main(['--device', 'cpu', '--quick', '--out', str(tmp_path), '--budget', '0'])
    assert len(results) == 16 and {r['status'] for r in results} == {'skipped'}
    assert json.loads((tmp_path / 'summary.json').read_text()) == results
