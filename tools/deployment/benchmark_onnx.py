"""ONNX Runtime CPU throughput of a dynamic backbone against its dense twin (and upstream).

Examples::

    python tools/deployment/benchmark_onnx.py swin-t convnext-t deit-s --batches 1 8 \
        --threads 2 --out docs/benchmarks/onnxruntime_cpu_224.json
    python tools/deployment/benchmark_onnx.py configs/upernet_dvit_swin_whole.py \
        --shape 512 512 --batches 1 --threads 2

For each config and batch size three graphs are exported (each checked against PyTorch in
ONNX Runtime before use, see docs/deployment.md): ``dynamic`` (the backbone as configured),
``twin`` (the same backbone with every keep ratio 1.0: no predictor runs, nothing is pruned)
and ``upstream`` (mmseg SwinTransformer / mmpretrain ConvNeXt / timm VisionTransformer with
the same weights; skipped with a note when it cannot be built or exported). They run in one
process in ONNX Runtime CPU sessions with the same thread count, on the same photographs,
after warm-up rounds, in interleaved rounds (order reversed every other round); images/s =
batch / median seconds per call over the calls not slowed by foreign load (within 1.25x of
the model's fastest call). ``ideal`` speed-ups are the MAC ratios of the exported graphs
(MatMul / Gemm / Conv nodes).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
from typing import Dict, List, Optional

import torch
from mmengine.config import DictAction

from mmdvit.analysis.benchmark import quiet_calls, time_interleaved
from mmdvit.analysis.models import (backbone_config, build_model, build_upstream_backbone,
                                    copy_shared_weights, default_scope, load_config, model_config,
                                    set_keep_ratios)

MODELS = ('dynamic', 'twin', 'upstream')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='+', help='model configs or preset names (swin-t, '
                        'convnext-t, deit-s, swin-test, convnext-test, deit-test)')
    parser.add_argument('--shape', type=int, nargs='+', default=[224, 224], help='H [W]')
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--threads', type=int, default=2, help='ONNX Runtime intra-op threads')
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds per row')
    parser.add_argument('--iters', type=int, default=20, help='timed rounds per row (at most)')
    parser.add_argument('--max-seconds', type=float, default=60.0,
                        help='stop a row after this many seconds (and at least 3 rounds)')
    parser.add_argument('--keep-ratios', type=float, nargs='+',
                        help="override the dynamic backbone's keep ratios")
    parser.add_argument('--no-upstream', action='store_true',
                        help='skip the upstream dense backbone')
    parser.add_argument('--work-dir', help='keep the exported .onnx files here (default: a '
                        'temporary folder, removed at the end)')
    parser.add_argument('--out', help='write machine, method and rows to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of every config')
    args = parser.parse_args(argv)
    if len(args.shape) == 1:
        args.shape = args.shape * 2
    if len(args.shape) != 2:
        parser.error(f'--shape takes H [W], got {args.shape}')
    return args


def machine(threads: int) -> dict:
    """Where the numbers were measured."""
    import onnxruntime
    cpu = 'unknown'
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return dict(cpu=cpu, cpu_count=os.cpu_count(), ort_threads=threads,
                onnxruntime=onnxruntime.__version__, torch=torch.__version__)


def build_models(name: str, args: argparse.Namespace) -> Dict[str, torch.nn.Module]:
    """dynamic / twin / upstream backbones of one config with the same (random) weights."""
    from mmdvit.deploy import spread_predictor_scores
    cfg = load_config(name, args.cfg_options)
    model_cfg = model_config(cfg)
    if args.keep_ratios:
        model_cfg = set_keep_ratios(model_cfg, args.keep_ratios)
    dyn_cfg, scope = backbone_config(model_cfg), default_scope(cfg)
    torch.manual_seed(0)
    models = dict(dynamic=build_model(dyn_cfg, scope))
    spread_predictor_scores(models['dynamic'])
    ones = [1.0] * len(models['dynamic'].keep_ratios)
    models['twin'] = build_model(set_keep_ratios(dyn_cfg, ones), scope)
    if not args.no_upstream:
        try:
            models['upstream'] = build_upstream_backbone(dyn_cfg)
        except (ValueError, KeyError, ImportError) as err:
            print(f'{name}: no upstream model ({err})')
    for which in ('twin', 'upstream'):
        if which in models:
            copy_shared_weights(models['dynamic'], models[which])
            models[which].eval()
    return models


def bench_row(name: str, models: Dict[str, torch.nn.Module], batch: int, folder: str,
              args: argparse.Namespace) -> dict:
    """Export, check and time every model at one batch size."""
    from mmdvit.deploy import export_and_verify, onnx_macs, ort_session
    from mmdvit.deploy.onnx_export import check_inputs
    inputs = check_inputs(models['dynamic'], args.shape, batch)
    label = os.path.splitext(os.path.basename(name))[0]
    row = dict(name=label, part='backbone', batch=batch, shape=list(args.shape),
               threads=args.threads, keep_ratios=list(models['dynamic'].keep_ratios),
               models={}, notes=[])
    sessions = {}
    for which, model in models.items():
        path = os.path.join(folder, f'{label}_{which}_b{batch}.onnx')
        try:
            result = export_and_verify(model, path, args.shape, batch, overwrite=True,
                                       inputs=inputs)
        except Exception as err:  # a reference that does not export is skipped, not fatal
            if which == 'dynamic':
                raise
            row['notes'].append(f'{which} skipped: {type(err).__name__}: {str(err)[:300]}')
            continue
        sessions[which] = ort_session(path, args.threads)
        row['models'][which] = dict(exporter=result.exporter, opset=result.opset,
                                    gmacs=onnx_macs(path) / 1e9 / batch,
                                    max_rel_diff=result.check.max_rel)
    feed = inputs[0].numpy()
    calls = {w: (lambda s=s: s.run(None, {s.get_inputs()[0].name: feed}))
             for w, s in sessions.items()}
    timings = time_interleaved(calls, 'cpu', args.warmup, args.iters, args.max_seconds)
    for which in sessions:
        quiet = quiet_calls(timings.wall[which])
        info = row['models'][which]
        info.update(ips=batch / statistics.median(quiet), ips_best=batch / min(quiet),
                    calls=len(timings.wall[which]), quiet_calls=len(quiet),
                    ips_cpu=batch * args.threads / statistics.median(timings.cpu[which]))
    dyn = row['models']['dynamic']
    for ref in ('twin', 'upstream'):
        if ref in row['models']:
            other = row['models'][ref]
            ideal = other['gmacs'] / dyn['gmacs']
            row[f'speedup_vs_{ref}'] = dyn['ips'] / other['ips']
            row[f'ideal_vs_{ref}'] = ideal
            row[f'realisation_vs_{ref}'] = dyn['ips'] / other['ips'] / ideal
            row[f'speedup_cpu_vs_{ref}'] = dyn['ips_cpu'] / other['ips_cpu']
    return row


def format_row(row: dict) -> str:
    ips = '  '.join(f"{w} {row['models'][w]['ips']:7.2f}" if w in row['models'] else
                    f'{w}       -' for w in MODELS)
    ratios = '  '.join(f"vs {ref}: {row[f'speedup_vs_{ref}']:.3f}x (ideal "
                       f"{row[f'ideal_vs_{ref}']:.3f}x)" for ref in ('twin', 'upstream')
                       if f'speedup_vs_{ref}' in row)
    shape = 'x'.join(str(s) for s in row['shape'])
    return (f"{row['name']:<28} batch {row['batch']:>2} {shape:<8} images/s: {ips}  "
            f'speed-up {ratios}')


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    from mmdvit.deploy.onnx_export import require
    require('onnxruntime')
    torch.set_num_threads(args.threads)  # the PyTorch side of the export checks
    result = dict(machine=machine(args.threads), method=__doc__.split('\n\n', 2)[2].strip(),
                  rows=[])
    print(f"machine: {result['machine']}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.work_dir or tmp
        os.makedirs(folder, exist_ok=True)
        for name in args.configs:
            models = build_models(name, args)
            for batch in args.batches:
                row = bench_row(name, models, batch, folder, args)
                for note in row['notes']:
                    print(f'{name}: {note}')
                print(format_row(row), flush=True)
                result['rows'].append(row)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
        print(f'wrote {args.out}')
    return result


if __name__ == '__main__':
    main(sys.argv[1:])
