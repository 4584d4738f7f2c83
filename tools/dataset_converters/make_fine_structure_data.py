"""Write the fine-structure datasets: thin poles, fences, railings and many small objects (people,
cars, signboards, birds) over textured backgrounds, in the ADE20K layout and in COCO format.

    python tools/dataset_converters/make_fine_structure_data.py [--out data/fine_structure]
        [--seed 0] [--num-train 300] [--num-val 100] [--size 128 160] [--only {ade20k,coco}]

Writes ``OUT/ade20k`` (the demo UPerNet configs read it with ``data_root`` changed; see
``tools/analysis_tools/quality_benchmark.py``) and ``OUT/coco`` (the small objects as instances),
each with ``fine_structure.json`` naming the parameters and classes. Deterministic for a seed.
"""
import argparse
import os.path as osp
import time
from typing import List, Optional

from mmdvit.datasets import make_fine_structure_ade20k, make_fine_structure_coco


def size_range(values: List[int]) -> tuple:
    """``--size S`` -> every image S x S; ``--size LOW HIGH`` -> sides drawn from [LOW, HIGH)."""
    return (values[0], values[0] + 1) if len(values) == 1 else tuple(values)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/fine_structure',
                        help='output folder (default data/fine_structure)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=300, help='training images (300)')
    parser.add_argument('--num-val', type=int, default=100, help='validation images (100)')
    parser.add_argument('--size', type=int, nargs='+', default=[128, 160],
                        help='image side S, or LOW HIGH: heights and widths drawn from '
                        '[LOW, HIGH) (default 128 160)')
    parser.add_argument('--only', choices=['ade20k', 'coco'], help='write one dataset only')
    args = parser.parse_args(argv)
    if len(args.size) > 2 or args.size[0] < 32 or args.size[-1] < args.size[0] + len(
            args.size) - 1:
        parser.error(f'--size takes S or LOW HIGH with 32 <= S, LOW < HIGH; got {args.size}')
    if args.num_train < 1 or args.num_val < 1:
        parser.error('--num-train and --num-val must be at least 1')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    start = time.time()
    sizes = size_range(args.size)
    common = dict(num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                  size_range=sizes)
    if args.only in (None, 'ade20k'):
        root = osp.join(args.out, 'ade20k')
        counts = make_fine_structure_ade20k(root, **common)
        print(f'ADE20K layout: {root} ({counts["training"]} training, '
              f'{counts["validation"]} validation images)')
    if args.only in (None, 'coco'):
        root = osp.join(args.out, 'coco')
        counts = make_fine_structure_coco(root, **common)
        print(f'COCO format: {root} ({counts["train2017"]} train, {counts["val2017"]} val '
              'objects)')
    print(f'done in {time.time() - start:.1f}s')


if __name__ == '__main__':
    main()
