"""FLOPs and parameters of a dynamic model and its dense twin, side by side.

Example::

    python tools/analysis_tools/get_flops.py configs/.../upernet_....py --shape 512 512 \
        --num-images 4 --out work_dirs/flops.json

The table gives GFLOPs (multiply-adds) and millions of parameters of the dense twin and the
dynamic model, and dense / dynamic as ``N.NNx`` (for FLOPs: the speed-up they imply); the
``--out`` JSON keeps full precision. ``--count-ops`` adds the kernel-launching aten ops of one
inference forward at batch 1 on the accelerator path (what a GPU launches; views excluded,
:mod:`mmdvit.analysis.op_count`), dense and dynamic, dynamic / dense, and the ops inside the
score predictors with the ratio they alone set (dense + predictors) / dense. ``--count-kernels``
adds the kernels one forward runs once compiled by ``torch.compile`` (inductor, on this
machine's CPU; fused generated kernels and library calls), dense and dynamic, for the whole
model (a detector: backbone and neck): what a compiled model launches and CUDA graphs replay.
"""
import argparse
import json
import os

from mmengine.config import DictAction

from mmdvit.analysis.complexity import complexity
from mmdvit.analysis.inputs import read_image, sample_photos
from mmdvit.analysis.models import load_config
from mmdvit.analysis.op_count import compiled_kernel_counts, op_counts
from mmdvit.engine.cli import add_debug_argument, add_trust_argument, run_tool


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Count the FLOPs (multiply-adds) and parameters of the backbone and of the '
        'whole model, dense twin and dynamic model side by side.')
    parser.add_argument('config', help='model config (mmseg / mmdet / mmpretrain model, a '
                        'mmdvit.SparsityTrainer config, or a bare mmdvit backbone)')
    parser.add_argument('--shape', type=int, nargs='+', default=[224, 224],
                        help='input size H [W] every image is resized to (default 224 224)')
    parser.add_argument('--num-images', type=int, default=1,
                        help="average over this many of scikit-image's photographs")
    parser.add_argument('--images', nargs='+', help='average over these image files instead')
    parser.add_argument('--checkpoint', help='model checkpoint (default: random weights), a '
                        'local file read safely (docs/checkpoints.md)')
    add_trust_argument(parser, '--checkpoint')
    parser.add_argument('--out', help='write the figures to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.student.backbone.keep_ratios='
                        '"(0.9,0.7,0.5)" for the shipped (mmdvit.SparsityTrainer) configs, '
                        'model.backbone.keep_ratios=... for a plain model config, '
                        'model.keep_ratios=... for a preset')
    parser.add_argument('--count-ops', action='store_true',
                        help='also count the kernel-launching aten ops of one inference forward '
                        '(batch 1, first image, the sparse modules on their GPU code path), '
                        'dense and dynamic, and those inside the score predictors')
    parser.add_argument('--count-kernels', action='store_true',
                        help='also count the kernels one inference forward (batch 1, first '
                        'image; the whole model, a detector\'s backbone and neck) runs compiled '
                        'by torch.compile (inductor, fullgraph, static shapes), dense and '
                        'dynamic; compiles both models')
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if len(args.shape) == 1:
        args.shape = args.shape * 2
    if len(args.shape) != 2:
        parser.error(f'--shape takes H [W], got {args.shape}')
    return args


def times(dense: float, dynamic: float) -> str:
    """``dense / dynamic`` as ``N.NNx`` (for FLOPs the speed-up they imply), 15 wide."""
    return (f'{dense / dynamic:.2f}x' if dense and dynamic else '-').rjust(15)


def format_report(result: dict) -> str:
    """A human-readable table of a :func:`complexity` result (GFLOPs and M params with 3
    decimals, their dense / dynamic quotient as ``N.NNx``; the JSON keeps full precision)."""
    height, width = result['shape']
    lines = [f"input {height}x{width} (after the data preprocessor: "
             f"{result['input_shape'][0]}x{result['input_shape'][1]}), "
             f"averaged over {result['num_images']} image(s)",
             f"{'':16s}{'dense':>12s}{'dynamic':>12s}{'dense/dynamic':>15s}"]
    for part in ('backbone', 'neck_and_heads', 'model'):
        dense, dyn = result[part]['dense'], result[part]['dynamic']
        lines.append(f'{part:16s}{dense:12.3f}{dyn:12.3f}{times(dense, dyn)}  GFLOPs')
    for part in ('backbone', 'model'):
        params = result['params'][part]
        lines.append(f"{part:16s}{params['dense']:12.3f}{params['dynamic']:12.3f}"
                     f"{times(params['dense'], params['dynamic'])}  M params")
    for d in result['kept']:
        where = (f"stage {d['stage']}" if d['source'] == 'backbone' else
                 f"{d['source']}, level {d['stage']}")
        lines.append(f"predictor {d['name']} ({where}, {d['hw_shape'][0]}x"
                     f"{d['hw_shape'][1]}): keeps {d['kept']} of {d['positions']} {d['unit']} "
                     f"(ratio {d['keep_ratio']:g})")
    for part, ops in result.get('ops', {}).items():
        lines.append(f"{part:16s}{ops['dense']:12d}{ops['dynamic']:12d}"
                     f"{ops['ratio']:14.2f}x  aten ops (dynamic/dense; {ops['predictors']} in "
                     f"the predictors: {ops['predictors_only']:.2f}x with nothing else added)")
    for part, kernels in result.get('kernels', {}).items():
        lines.append(f"{part:16s}{kernels['dense']:12d}{kernels['dynamic']:12d}"
                     f"{kernels['ratio']:14.2f}x  kernels compiled (torch.compile, dynamic/dense)")
    lines.append('Convention: ' + result['convention'])
    if result['note']:
        lines.append('Note: ' + result['note'])
    return '\n'.join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    images = ([read_image(p) for p in args.images] if args.images else
              sample_photos(args.num_images))
    result = complexity(cfg, args.shape, images, args.checkpoint, args.trust_checkpoint)
    if args.count_ops:
        result['ops'] = op_counts(cfg, args.shape, images[0], args.checkpoint,
                                  args.trust_checkpoint)
    if args.count_kernels:
        result['kernels'] = compiled_kernel_counts(cfg, args.shape, images[0], args.checkpoint,
                                                   args.trust_checkpoint)
    print(format_report(result))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
        print(f'wrote {args.out}')
    return result


if __name__ == '__main__':
    run_tool(main)
