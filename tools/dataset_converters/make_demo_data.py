"""Write the demo datasets: a small ADE20K-layout set and a small COCO-format set.

    python tools/dataset_converters/make_demo_data.py [--out data/demo] [--seed 0]

Writes ``OUT/ade20k`` (read by ``configs/demo/*upernet*``) and ``OUT/coco`` (read by
``configs/demo/*rcnn*``). Deterministic for a seed; takes a few seconds.
"""
import argparse
import os.path as osp
import time

from mmdvit.datasets import make_ade20k_demo, make_coco_demo
from mmdvit.engine.cli import add_debug_argument, run_tool


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/demo', help='output folder (default data/demo)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--only', choices=['ade20k', 'coco'], help='write one dataset only')
    add_debug_argument(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    start = time.time()
    if args.only in (None, 'ade20k'):
        counts = make_ade20k_demo(osp.join(args.out, 'ade20k'), seed=args.seed)
        print(f'ADE20K layout: {osp.join(args.out, "ade20k")} ({counts["training"]} training, '
              f'{counts["validation"]} validation images)')
    if args.only in (None, 'coco'):
        counts = make_coco_demo(osp.join(args.out, 'coco'), seed=args.seed)
        print(f'COCO format: {osp.join(args.out, "coco")} ({counts["train2017"]} train, '
              f'{counts["val2017"]} val objects)')
    print(f'done in {time.time() - start:.1f}s')


if __name__ == '__main__':
    run_tool(main)
