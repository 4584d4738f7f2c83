"""The GPU rows of docs/efficiency.md from one command, within a time budget.

    python tools/gpu_rows.py --out OUT_DIR [--budget 450] [--only GROUP ...]

Runs, in this order, until the budget is spent (each job in its own process, dense and dynamic
in the same process, interleaved; every job writes ``OUT_DIR/<job>.json`` and its console to
``OUT_DIR/<job>.log``):

1. eager rows: UPerNet + Swin-T and + ConvNeXt-T whole (``configs/upernet_dvit_*_whole.py``,
   the whole model, 512x512) and Mask R-CNN + Swin-T whole (backbone + neck, 800x1344), batch 1
   and 8, float32 and float16 (autocast);
2. ``pytest tests/test_cuda.py``;
3. torch.compile rows, the issue's targets first: ``reduce-overhead`` (CUDA graphs) and
   ``default``, float16, then float32.

A job that would start with less than its minimum time left is skipped; one still running at
the end of the budget is stopped. ``OUT_DIR/summary.json`` lists every job with its command,
status (``ok``, ``failed``, ``timed out``, ``skipped``) and seconds; the jobs left over run in
a later call with ``--jobs NAME ...``. ``--device cpu --quick`` runs the same jobs on the tiny
demo configs (for tests).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
BENCH = 'tools/analysis_tools/benchmark.py'
GROUPS = ('eager', 'tests', 'reduce-overhead', 'default')


@dataclass
class Subject:
    """What one benchmark job measures."""

    label: str
    configs: List[str]
    part: str
    shape: List[int]


def subjects(quick: bool) -> Dict[str, Subject]:
    """UPerNet (Swin-T, ConvNeXt-T) whole models and Mask R-CNN + Swin-T's backbone and neck;
    with ``quick`` their demo configs at the demo sizes."""
    folder, suffix = ('configs/demo/', '_demo.py') if quick else ('configs/', '.py')
    seg_shape, det_shape = ([128, 128], [160, 256]) if quick else ([512, 512], [800, 1344])
    return {
        'upernet-swin': Subject('upernet-swin', [f'{folder}upernet_dvit_swin_whole{suffix}'],
                                'model', seg_shape),
        'upernet-convnext': Subject('upernet-convnext',
                                    [f'{folder}upernet_dvit_convnext_whole{suffix}'], 'model',
                                    seg_shape),
        'maskrcnn-swin': Subject('maskrcnn-swin', [f'{folder}maskrcnn_dvit_swin_whole{suffix}'],
                                 'features', det_shape),
    }


@dataclass
class Job:
    """One process of the run: ``command`` (after the Python interpreter), its group, and the
    least time worth starting it with."""

    name: str
    group: str
    command: List[str]
    min_seconds: float
    status: str = 'pending'
    seconds: float = 0.0
    out: Optional[str] = None


def bench_job(name: str, group: str, subject: Subject, dtypes: List[str],
              args: argparse.Namespace, min_seconds: float) -> Job:
    """A ``benchmark.py`` job: dense and dynamic (no twin) of ``subject``, batches 1 and 8
    (1 and 2 with ``--quick``), in ``dtypes``, eager or compiled in ``group``'s mode."""
    out = str(Path(args.out) / f'{name}.json')
    batches = ['1', '2'] if args.quick else ['1', '8']
    rounds = ['--warmup', '1', '--iters', '2', '--max-seconds', '5'] if args.quick else [
        '--warmup', '3', '--iters', '10', '--max-seconds', '15']
    shape = [str(s) for s in subject.shape]
    command = [BENCH, *subject.configs, '--parts', subject.part, '--shape', *shape, '--batches',
               *batches, '--dtypes', *dtypes, '--device', args.device, '--no-twin',
               '--no-retime', *rounds, '--out', out]
    if group != 'eager':
        command += ['--compile', group]
    return Job(name, group, command, min_seconds, out=out)


def plan(args: argparse.Namespace) -> List[Job]:
    """Every job of the run, in the order they run (see the module docstring)."""
    subs = subjects(args.quick)
    both = ['float32', 'amp']
    jobs = [bench_job('eager-upernet-swin', 'eager', subs['upernet-swin'], both, args, 20),
            bench_job('eager-upernet-convnext', 'eager', subs['upernet-convnext'], both, args,
                      20),
            bench_job('eager-maskrcnn-swin', 'eager', subs['maskrcnn-swin'], both, args, 20),
            Job('tests', 'tests', ['-m', 'pytest', '-q', 'tests/test_cuda.py'], 30)]
    order = ['upernet-swin', 'maskrcnn-swin', 'upernet-convnext']
    for dtype, label in (('amp', 'float16'), ('float32', 'float32')):
        for mode in ('reduce-overhead', 'default'):
            for key in order:
                jobs.append(bench_job(f'{mode}-{key}-{label}', mode, subs[key], [dtype], args,
                                      60))
    return [j for j in jobs if j.group in args.only and (not args.jobs or j.name in args.jobs)]


def run_job(job: Job, deadline: float, log_dir: Path) -> None:
    """Run ``job`` if there is time (status and seconds are set on it)."""
    left = deadline - time.monotonic()
    if left < job.min_seconds:
        job.status = 'skipped'
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get('PYTHONPATH')])), PYTHONWARNINGS='ignore')
    start = time.monotonic()
    with open(log_dir / f'{job.name}.log', 'w') as log:
        try:
            proc = subprocess.run([sys.executable, *job.command], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=left)
            job.status = 'ok' if proc.returncode == 0 else f'failed (exit {proc.returncode})'
        except subprocess.TimeoutExpired:
            job.status = 'timed out'
    job.seconds = time.monotonic() - start


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='folder for the JSON files and logs')
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--budget', type=float, default=450.0,
                        help='seconds for the whole run (default: 450, within an 8-minute call)')
    parser.add_argument('--only', nargs='+', default=list(GROUPS), choices=GROUPS,
                        help='run only these groups of jobs')
    parser.add_argument('--jobs', nargs='+',
                        help='run only these jobs (names as in summary.json)')
    parser.add_argument('--quick', action='store_true',
                        help='the demo configs at their small sizes, batches 1 and 2 (tests)')
    parser.add_argument('--list', action='store_true', help='print the jobs and exit')
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not args.list:
        import torch
        if not torch.cuda.is_available():
            parser.error('--device cuda: no CUDA device is visible to torch (use --device cpu '
                         'to try the script)')
    return args


def main(argv=None) -> List[dict]:
    args = parse_args(argv)
    deadline = time.monotonic() + args.budget
    jobs = plan(args)
    if args.list:
        for job in jobs:
            print(f"{job.name}: python {' '.join(job.command)}")
        return [asdict(j) for j in jobs]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = out / 'summary.json'
    for job in jobs:
        print(f'{job.name}: running...', flush=True)
        run_job(job, deadline, out)
        print(f'{job.name}: {job.status} ({job.seconds:.0f} s)', flush=True)
        summary.write_text(json.dumps([asdict(j) for j in jobs], indent=2))
    return [asdict(j) for j in jobs]


if __name__ == '__main__':
    results = main()
    sys.exit(1 if any(r['status'].startswith('failed') for r in results) else 0)
