"""Dense (upstream) vs dynamic models, timed in one process, interleaved, after warm-up.

Examples::

    # classification backbones at 224, batch 1 / 8 / 32, float32 and autocast
    python tools/analysis_tools/benchmark.py swin-t convnext-t deit-s --batches 1 8 32 \
        --out work_dirs/bench_224.json
    # UPerNet at 512x512, backbone and whole model, plus training-step memory
    python tools/analysis_tools/benchmark.py configs/upernet_dvit_swin.py --shape 512 512 \
        --parts backbone model --batches 1 2 --memory
    # keep ratio 1.0: the overhead of the dynamic machinery against upstream
    python tools/analysis_tools/benchmark.py swin-t --keep-ratios 1 1 1 --batches 8
    # one sparse 3x3 head convolution at its real size against F.conv2d
    python tools/analysis_tools/benchmark.py --convs upernet-fpn-bottleneck fpn-p2 \
        --conv-keep-ratio 0.35 --conv-block 16 --batches 1

Each row prints images/s of the upstream dense model and of the dynamic one, the measured
speed-up, the FLOPs-implied ideal speed-up and their quotient (realisation); with the twin
(default) also mmdvit's own dense backbone (sparsification disabled). Speed-ups print as
``N.NNx``, other figures with 2 decimals; the ``--out`` JSON keeps full precision.

Progress goes to stderr, one line per row before it is timed (rewritten in place on a
terminal). A row whose timed calls were mostly disturbed by other processes (fewer than half of
its rounds quiet: ``quiet_calls`` / ``rounds`` in the JSON) is timed once more; if it is still
disturbed, a warning line says so and how to re-time it.
"""
import argparse
import functools
import json
import os
import platform
import sys
import tempfile
from typing import List, Optional, TextIO

import torch
from mmengine.config import DictAction

from mmdvit.analysis.benchmark import (CONV_PRESETS, PARTS, amp_dtype_name, benchmark_rows,
                                       build_conv_subject, build_subject, is_disturbed,
                                       precision)
from mmdvit.analysis.inputs import sample_photos
from mmdvit.analysis.memory import training_step_memory
from mmdvit.analysis.models import backbone_config, load_config, model_config, set_keep_ratios
from mmdvit.analysis.module_timing import module_rows
from mmdvit.deploy.ort_backend import onnxruntime_calls
from mmdvit.engine.cli import add_debug_argument, run_tool
from mmdvit.engine.compile import COMPILE_MODES
from mmdvit.sparse import sparse_children

QUICK = dict(configs=['swin-test', 'convnext-test'], shape=[64, 64], batches=[1, 2],
             warmup=1, iters=2, max_seconds=5.0)
METHOD = ('Each row: models run in one process on the same device and inputs (a photograph '
          'repeated to the batch size), after warm-up rounds, in interleaved rounds (order '
          'reversed every other round); calls slower than 1.25x the same model\'s fastest '
          'call (foreign load on a shared machine) are dropped; images/s = batch / median '
          'seconds per call over the remaining calls. dense = '
          'upstream implementation (mmseg SwinTransformer / mmpretrain ConvNeXt / timm '
          'VisionTransformer, or the config with that backbone) with the dynamic model\'s '
          'weights; twin = mmdvit backbone with sparsification disabled. Whole models run in '
          "their 'tensor' mode. ideal_speedup = dense GFLOPs / dynamic GFLOPs per image; "
          'realisation = speedup / ideal_speedup. On CPU the *_cpu fields repeat this with '
          'the process CPU time per call (ips_cpu = batch * threads / median CPU seconds), '
          'which other processes on the same cores hardly disturb.')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='*', help='model configs or preset names '
                        '(swin-t, convnext-t, deit-s, swin-test, convnext-test, deit-test)')
    parser.add_argument('--convs', nargs='+', default=[], choices=sorted(CONV_PRESETS),
                        help='also time single 3x3 head convolutions at their real sizes, '
                        'dense vs sparse')
    parser.add_argument('--conv-keep-ratio', type=float, default=0.35,
                        help='kept fraction of tiles for --convs')
    parser.add_argument('--conv-block', type=int, default=16, help='tile size for --convs')
    parser.add_argument('--parts', nargs='+', default=['backbone'], choices=PARTS,
                        help='features: the backbone and neck of a whole model (what a '
                        'detector runs on the whole image)')
    parser.add_argument('--shape', type=int, nargs='+', default=[224, 224], help='H [W]')
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 8, 32])
    parser.add_argument('--dtypes', nargs='+',
                        choices=['float32', 'amp'],
                        help='amp: autocast to bfloat16 on CPU, float16 on CUDA (default: '
                        'float32 amp; onnxruntime: float32 only)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--backend', default='pytorch', choices=['pytorch', 'onnxruntime'],
                        help='onnxruntime: export every model at each batch size (ONNX, '
                        'mmdvit.deploy) and time it in ONNX Runtime on CPU, float32')
    parser.add_argument('--compile', nargs='?', const='default', choices=COMPILE_MODES,
                        help='time torch.compile (inductor) versions of the models (dense and '
                        'dynamic alike), compiled in this mode (default: %(const)s; '
                        'reduce-overhead: CUDA graphs on a GPU)')
    parser.add_argument('--onnx-dir', help='keep the exported .onnx files here (default: a '
                        'temporary folder)')
    parser.add_argument('--keep-ratios', type=float, nargs='+',
                        help="override the backbone's keep ratios")
    parser.add_argument('--warmup', type=int, default=1, help='untimed rounds per row')
    parser.add_argument('--iters', type=int, default=10, help='timed rounds per row (at most)')
    parser.add_argument('--max-seconds', type=float, default=120.0,
                        help='stop a row after this many seconds (and at least 3 rounds)')
    parser.add_argument('--no-retime', action='store_true',
                        help='do not time a disturbed row (fewer than half of its rounds '
                        'undisturbed by other processes) a second time')
    parser.add_argument('--no-twin', action='store_true',
                        help="skip mmdvit's own dense backbone")
    parser.add_argument('--channels-last', action='store_true',
                        help='run every model and input in channels-last memory format')
    parser.add_argument('--per-module', action='store_true',
                        help='instead of whole-model rows, time every sparse module (backbone '
                        'stage, head convolution) sparse against dense (keep ratios 1.0) inside '
                        'the model, mark those that lose and print the --cfg-options that make '
                        'them dense')
    parser.add_argument('--memory', action='store_true',
                        help='also measure training-step peak memory of the backbones')
    parser.add_argument('--memory-batch', type=int, default=8)
    parser.add_argument('--threads', type=int, help='torch threads (default: as configured)')
    parser.add_argument('--quick', action='store_true',
                        help='tiny models, 64x64, batches 1 and 2, 2 rounds (for tests)')
    parser.add_argument('--out', help='write machine, method and rows to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of every config, e.g. '
                        'model.student.backbone.drop_path_rate=0 for the shipped '
                        '(mmdvit.SparsityTrainer) configs')
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.configs = args.configs or QUICK['configs']
        for key in ('shape', 'batches', 'warmup', 'iters', 'max_seconds'):
            setattr(args, key, QUICK[key])
    if not args.configs and not args.convs:
        parser.error('give at least one config or preset name, --convs, or --quick')
    if len(args.shape) == 1:
        args.shape = args.shape * 2
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is visible to torch')
    if args.per_module and (args.backend != 'pytorch' or args.compile or args.convs):
        parser.error('--per-module times eager PyTorch modules of configs: drop --backend, '
                     '--compile and --convs')
    if args.compile and args.backend != 'pytorch':
        parser.error('--compile applies to the pytorch backend, not --backend onnxruntime')
    if args.backend == 'onnxruntime':
        if args.device != 'cpu':
            parser.error('--backend onnxruntime runs on CPU (--device cpu)')
        if args.dtypes not in (None, ['float32']):
            parser.error('--backend onnxruntime times float32 graphs: drop --dtypes '
                         f'{" ".join(args.dtypes)}')
    if args.dtypes is None:
        args.dtypes = ['float32'] if args.backend == 'onnxruntime' else ['float32', 'amp']
    args.backend = 'compile' if args.compile else args.backend
    return args


def machine() -> dict:
    """Where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return dict(cpu=cpu, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                omp_wait_policy=os.environ.get('OMP_WAIT_POLICY', 'default'),
                torch=torch.__version__,
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)


HEADER = (f"{'name':<44}{'part':<9}{'dtype':<18}{'batch':>5}  {'shape':<9}{'dense':>8}"
          f"{'twin':>8}{'dynamic':>9}{'speedup':>9}{'ideal':>8}{'realis.':>8}"
          f"{'cpu-time: speedup':>19}{'realis.':>8}")


def speedup(value: float, width: int) -> str:
    """A speed-up as ``N.NNx``, right-aligned in ``width`` characters."""
    return f'{value:.2f}x'.rjust(width)


def format_row(row: dict) -> str:
    if row.get('skipped'):
        reason = row['skipped'].splitlines()[0][:160]
        return f"skipped: {row['name']} {row['dtype']} batch {row['batch']}: {reason}"
    if row.get('error'):
        return (f"{row['name']:<44}{row['part']:<9}{row['dtype']:<18}{row['batch']:>5}  "
                f"failed: {row['error'][:120]}")
    twin = f"{row['twin_ips']:8.2f}" if 'twin_ips' in row else f"{'-':>8}"
    shape = 'x'.join(str(s) for s in row['shape'])
    cpu = (f"{speedup(row['speedup_cpu'], 19)}{row['realisation_cpu']:8.2f}"
           if 'speedup_cpu' in row else '')
    return (f"{row['name']:<44}{row['part']:<9}{row['dtype']:<18}{row['batch']:>5}  "
            f"{shape:<9}{row['dense_ips']:8.2f}{twin}{row['dynamic_ips']:9.2f}"
            f"{speedup(row['speedup'], 9)}{speedup(row['ideal_speedup'], 8)}"
            f"{row['realisation']:8.2f}{cpu}")


def row_label(row: dict) -> str:
    return f"{row['name']} {row['part']} {row['dtype']} batch {row['batch']}"


def disturbed_warning(row: dict) -> Optional[str]:
    """The console warning for a row whose timed calls were mostly disturbed by other
    processes (:func:`~mmdvit.analysis.benchmark.is_disturbed`), with how to re-time it;
    ``None`` for any other row."""
    if not is_disturbed(row):
        return None
    timed = 'timed twice, and both times ' if row.get('retimed') else ''
    cpu = (f"; its CPU-time speed-up ({row['speedup_cpu']:.2f}x) is hardly affected by other "
           'processes' if row.get('speedup_cpu') is not None else '')
    dtype = 'float32' if row['dtype'] == 'float32' else 'amp'
    parts = '' if row['part'] == 'conv' else f" --parts {row['part']}"
    return (f"warning: {row_label(row)}: {timed}only {row['quiet_calls']} of "
            f"{row['rounds']} timed rounds ran undisturbed by other processes, so its "
            f"wall-clock speed-up ({row['speedup']:.2f}x) is unreliable{cpu}. Re-time it when "
            f'the machine is quieter (`uptime` shows the load): the same command with'
            f"{parts} --batches {row['batch']} --dtypes {dtype}, or more --iters.")


class Progress:
    """One line per row on ``stream`` (stderr) before the row is timed: ``[i/N] what``. On a
    terminal the line is rewritten in place and cleared when the row's result prints."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total, self.stream, self.done = total, stream, 0
        self.tty = stream.isatty()

    def show(self, text: str) -> None:
        line = f'[{min(self.done + 1, self.total)}/{self.total}] {text}'
        if self.tty:
            self.stream.write('\r\x1b[K' + line)
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)

    def clear(self) -> None:
        """Remove the progress line from a terminal (before a result prints)."""
        if self.tty:
            self.stream.write('\r\x1b[K')
            self.stream.flush()

    def timing(self, row: dict, attempt: str) -> None:
        """``benchmark_rows``' ``progress`` callback."""
        what = 'timing' if attempt == 'timing' else 'disturbed by other processes, timing again'
        self.show(f'{row_label(row)}: {what}...')

    def report(self, row: dict) -> None:
        """``benchmark_rows``' ``report`` callback: the row, and its warning if disturbed."""
        self.clear()
        print(format_row(row), flush=True)
        warning = disturbed_warning(row)
        if warning is not None:
            print(warning, file=self.stream, flush=True)
        self.done += 1


def format_modules(entry: dict) -> List[str]:
    """The console lines of one ``--per-module`` measurement."""
    lines = [f"per module: {row_label(entry)} ({entry['device']}), ms per forward:",
             f"  {'module':<34}{'keep ratios':<20}{'dense':>9}{'sparse':>9}{'speedup':>9}"]
    for unit in entry['units'] + [entry['total']]:
        ratios = ' '.join(f'{r:g}' for r in unit.get('keep_ratios', []))
        lines.append(f"  {unit['name']:<34}{ratios:<20}{unit['dense_ms']:9.2f}"
                     f"{unit['sparse_ms']:9.2f}{speedup(unit['speedup'], 9)}"
                     f"{'  loses' if unit['loses'] and unit['name'] != 'total' else ''}")
    if entry['dense_override']:
        options = ' '.join(f"'{k}=({','.join(repr(float(v)) for v in values)})'"
                           for k, values in entry['dense_override'].items())
        lines.append(f'  to run the losing modules dense: --cfg-options {options}')
    return lines


def per_module(args: argparse.Namespace, cfg, label: str, image, progress: Progress) -> List[dict]:
    """``--per-module``: every sparse module of each part, dtype and batch (see
    :func:`mmdvit.analysis.module_timing.module_rows`)."""
    entries = []
    for part in args.parts:
        for dtype in args.dtypes:
            for batch in args.batches:
                entry = dict(name=label, part=part, device=args.device, batch=batch,
                             dtype=amp_dtype_name(args.device, dtype), shape=list(args.shape))
                progress.show(f'{row_label(entry)}: timing every sparse module...')
                entry.update(module_rows(cfg, part, image, args.shape, batch, args.device,
                                         args.warmup, args.iters,
                                         lambda d=dtype: precision(args.device, d)))
                progress.clear()
                print('\n'.join(format_modules(entry)), flush=True)
                progress.done += 1
                entries.append(entry)
    return entries


def measure(args: argparse.Namespace, onnx_dir: str) -> dict:
    """Every row the arguments ask for (ONNX graphs go to ``onnx_dir``)."""
    image = sample_photos(1)[0]
    result = dict(machine=machine(), method=METHOD, backend=args.backend, rows=[], memory=[],
                  modules=[])
    mode = f' (mode {args.compile})' if args.compile else ''
    if args.compile:
        result['compile_mode'] = args.compile
    print(f"machine: {result['machine']}\nbackend: {args.backend}{mode}")
    if not args.per_module:
        print(f'images/s (higher is better)\n{HEADER}')
    subjects = len(args.convs) + len(args.configs) * len(args.parts)
    progress = Progress(subjects * len(args.dtypes) * len(args.batches))
    onnx_calls = (functools.partial(onnxruntime_calls, folder=onnx_dir)
                  if args.backend == 'onnxruntime' else None)
    callbacks = dict(report=progress.report, progress=progress.timing,
                     retime=not args.no_retime, backend=args.backend, onnx_calls=onnx_calls,
                     compile_mode=args.compile or 'default')
    for preset in args.convs:
        progress.show(f'{preset}: building the convolutions, counting FLOPs...')
        subject = build_conv_subject(preset, args.conv_keep_ratio, args.conv_block, args.device)
        shape = list(CONV_PRESETS[preset]['size'])
        rows = benchmark_rows(subject, shape, args.batches, args.dtypes, args.device,
                              args.warmup, args.iters, args.max_seconds, **callbacks)
        for row in rows:
            row.update(keep_ratio=args.conv_keep_ratio, block=args.conv_block,
                       channels=[CONV_PRESETS[preset]['in_channels'],
                                 CONV_PRESETS[preset]['out_channels']])
        result['rows'] += rows
    for name in args.configs:
        cfg = load_config(name, args.cfg_options)
        if args.keep_ratios:
            cfg.model = set_keep_ratios(model_config(cfg), args.keep_ratios)
        label = os.path.splitext(os.path.basename(name))[0]
        if args.per_module:
            result['modules'] += per_module(args, cfg, label, image, progress)
            continue
        for part in args.parts:
            progress.show(f'{label} {part}: building the models, counting FLOPs...')
            subject = build_subject(cfg, label, part, image, args.shape, twin=not args.no_twin,
                                    device=args.device, channels_last=args.channels_last)
            rows = benchmark_rows(subject, args.shape, args.batches, args.dtypes, args.device,
                                  args.warmup, args.iters, args.max_seconds, **callbacks)
            dynamic = subject.models['dynamic']
            ratios = ({'backbone': list(dynamic.keep_ratios)} if part == 'backbone' else
                      {name: list(child.keep_ratios) for name, child in sparse_children(dynamic)})
            for row in rows:
                row.update(channels_last=args.channels_last, keep_ratios=ratios['backbone'],
                           sparse_keep_ratios=ratios)
            result['rows'] += rows
            del subject
        if args.memory:
            batch = 2 if args.quick else args.memory_batch
            progress.show(f'{label} backbone: training-step memory at batch {batch}...')
            mem = training_step_memory(backbone_config(model_config(cfg)), batch, args.shape,
                                       image, args.device)
            entry = dict(name=label, device=args.device, batch=batch, shape=list(args.shape),
                         dense_step_mib=mem['dense']['step_mib'],
                         dynamic_step_mib=mem['dynamic']['step_mib'],
                         step_ratio=mem['dynamic']['step_mib'] / mem['dense']['step_mib'],
                         dense_peak_mib=mem['dense']['peak_mib'],
                         dynamic_peak_mib=mem['dynamic']['peak_mib'],
                         method=mem['dynamic']['method'])
            result['memory'].append(entry)
            progress.clear()
            print(f"training-step memory, {label} backbone, batch {batch}: dense "
                  f"{entry['dense_step_mib']:.0f} MiB, dynamic {entry['dynamic_step_mib']:.0f} "
                  f"MiB ({entry['step_ratio']:.2f}x; {entry['method']})", flush=True)
    disturbed = [row_label(r) for r in result['rows'] if is_disturbed(r)]
    if disturbed:
        print(f"warning: {len(disturbed)} of {len(result['rows'])} rows disturbed by other "
              f"processes (see the warnings above): {', '.join(disturbed)}", file=sys.stderr)
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = args.onnx_dir or tmp
        os.makedirs(onnx_dir, exist_ok=True)
        result = measure(args, onnx_dir)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
        print(f'wrote {args.out}')
    return result


if __name__ == '__main__':
    run_tool(main)
