"""Show which locations each score predictor keeps, for images of any size.

Example::

    python tools/analysis_tools/visualize_sparsity.py configs/upernet_dvit_swin.py \
        work_dirs/upernet_dvit_swin/iter_160000.pth demo.jpg --out-dir work_dirs/vis

For every image, ``<out-dir>/<image stem>_sparsity.png`` holds the input and one panel per
predictor in forward order, the pruned locations faded to white (a legend row says so); each
caption gives the stage (0-based, as ``sparse_stages``) or the head / neck and its level, the
predictor index and kept / all locations. Weights the checkpoint does not set (all of them
with ``none``) are drawn from ``--seed``, so a figure of random weights is reproducible.
"""
import argparse
import os
from typing import List

import torch
from mmengine.config import DictAction

from mmdvit.analysis.inputs import read_image, resize
from mmdvit.analysis.models import (build_model, default_scope, load_config, load_weights,
                                    model_config)
from mmdvit.analysis.visualize import caption, kept_maps, render
from mmdvit.engine.cli import add_debug_argument, add_trust_argument, run_tool


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw the locations each predictor keeps.')
    parser.add_argument('config', help='model config (or preset name, e.g. swin-t)')
    parser.add_argument('checkpoint', help="model checkpoint (a local file, read safely: "
                        "docs/checkpoints.md), or 'none' for random weights")
    parser.add_argument('images', nargs='+', help='image files (any size)')
    parser.add_argument('--out-dir', required=True, help='where the PNGs go')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='resize every image to H x W first (default: native size)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the random weights (those the checkpoint does not set; '
                        "all of them with 'none'); default 0")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.student.backbone.keep_ratios='
                        '"(0.9,0.7,0.5)" for the shipped (wrapper) configs, '
                        'model.backbone.keep_ratios=... for a plain model config')
    add_trust_argument(parser, 'CHECKPOINT')
    add_debug_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    torch.manual_seed(args.seed)
    model = build_model(model_config(cfg), default_scope(cfg))
    loaded, missing = load_weights(model, args.checkpoint, args.trust_checkpoint)
    if args.checkpoint.lower() == 'none':
        print(f'random weights (seed {args.seed}): the kept locations show the mechanics, not '
              'learned saliency')
    else:
        print(f'loaded {loaded} tensors from {args.checkpoint}; {len(missing)} model tensors '
              f'missing from it{": " + ", ".join(missing[:5]) if missing else ""}')
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for path in args.images:
        image = resize(read_image(path), args.shape)
        maps = kept_maps(model, image)
        out = os.path.join(args.out_dir,
                           os.path.splitext(os.path.basename(path))[0] + '_sparsity.png')
        render(image, maps).save(out)
        print(f'{out}: ' + ', '.join(caption(info) for info, _ in maps))
        written.append(out)
    return written


if __name__ == '__main__':
    run_tool(main)
