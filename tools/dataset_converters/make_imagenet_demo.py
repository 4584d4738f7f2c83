"""Write the ImageNet-layout demo dataset read by ``configs/demo/*imagenet*``.

    python tools/dataset_converters/make_imagenet_demo.py [--out data/demo/imagenet] [--seed 0]

Five classes (ball, car, kite, person, tree), 8 training and 4 validation images each, in
ImageNet's folder layout. Deterministic for a seed; takes about a second.
"""
import argparse

from mmdvit.datasets.demo_imagenet import make_imagenet_demo
from mmdvit.engine.cli import add_debug_argument, run_tool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/demo/imagenet', help='output folder')
    parser.add_argument('--seed', type=int, default=0)
    add_debug_argument(parser)
    args = parser.parse_args()
    counts = make_imagenet_demo(args.out, seed=args.seed)
    print(f'ImageNet layout: {args.out} ({counts["train"]} train, {counts["val"]} val images)')


if __name__ == '__main__':
    run_tool(main)
