"""Fine-structure quality benchmark: a sparse student against a dense model trained as long, on
thin and small things.

    python tools/analysis_tools/quality_benchmark.py [--work-dir work_dirs/quality_benchmark]
        [--data-root data/fine_structure/ade20k] [--num-train 300] [--num-val 100]
        [--data-seed 0] [--size 128 160] [--teacher-iters 600] [--iters 300] [--seed 0]
        [--teacher-seed SEED]
        [--dense-config configs/demo/upernet_swin_dense_demo.py]
        [--student-config configs/demo/upernet_dvit_swin_whole_demo.py]
        [--distill-from {teacher,dense}] [--variant whole] [--student-options KEY=VALUE ...]
        [--dry-run]

Writes the fine-structure set (tools/dataset_converters/make_fine_structure_data.py) if the
data folder does not exist, trains a dense teacher for --teacher-iters iterations, then from
its checkpoint --iters more iterations of (a) the dense model and (b) the student (started from
and distilled from the teacher, or with ``--distill-from dense`` from the dense model trained as
long as the student in total), the demo schedule rescaled and the same seed, evaluates the
three with tools/test.py, counts the student's FLOPs with get_flops.py, and prints mIoU and
per-class IoU of the dense model and the student side by side (also in
WORK_DIR/VARIANT/report.json). Stages whose outputs exist with the same settings are skipped,
so an interrupted run resumes and student variants share the teacher and the dense model:

    python tools/analysis_tools/quality_benchmark.py --variant keep05 \\
        --student-options model.student.decode_head.keep_ratios="(0.5,0.5,0.5)"

Single runs differ by several IoU on the small classes the dense model is still learning, so
compare points over seeds (``--seed N``, one work dir per seed) and print the runs side by side
with the mean and the worst difference per class:

    python tools/analysis_tools/quality_benchmark.py --summarize \\
        work_dirs/qb_seed*/VARIANT/report.json

How much a run moves by chance: train the dense model and the student again from the same
teacher with another seed, in the same work dir (``--teacher-seed``: the teacher's seed; they
go to ``dense_seed11`` and ``VARIANT_seed11``), then summarize both runs; the summary sets the
two dense models side by side:

    python tools/analysis_tools/quality_benchmark.py --work-dir work_dirs/qb_seed1 --seed 1 ...
    python tools/analysis_tools/quality_benchmark.py --work-dir work_dirs/qb_seed1 --seed 11 \\
        --teacher-seed 1 ...
    python tools/analysis_tools/quality_benchmark.py --summarize \\
        work_dirs/qb_seed1/VARIANT/report.json work_dirs/qb_seed1/VARIANT_seed11/report.json

A student config with ``teacher=None`` (configs/demo/upernet_dvit_swin_whole_fine_demo.py)
starts from the teacher's checkpoint and trains without distillation:

    python tools/analysis_tools/quality_benchmark.py --variant fine \\
        --student-config configs/demo/upernet_dvit_swin_whole_fine_demo.py
"""
import argparse
import sys
from typing import List, Optional

from mmdvit.analysis.quality import (ROOT, BenchmarkError, format_summary, plan, read_reports,
                                     run_benchmark, summarize)

DENSE_CONFIG = 'configs/demo/upernet_swin_dense_demo.py'
STUDENT_CONFIG = 'configs/demo/upernet_dvit_swin_whole_demo.py'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train a dense teacher, then equally long a dense model and a sparse '
        'student from it, on the fine-structure set; print their per-class IoU side by side.')
    parser.add_argument('--work-dir', default='work_dirs/quality_benchmark',
                        help='where every stage writes (default work_dirs/quality_benchmark)')
    data = parser.add_argument_group('data (written when --data-root does not exist)')
    data.add_argument('--data-root', default='data/fine_structure/ade20k',
                      help='ADE20K-layout folder (default data/fine_structure/ade20k)')
    data.add_argument('--num-train', type=int, default=300, help='training images (300)')
    data.add_argument('--num-val', type=int, default=100, help='validation images (100)')
    data.add_argument('--data-seed', type=int, default=0, help="the generator's seed (0)")
    data.add_argument('--size', type=int, nargs=2, default=[128, 160], metavar=('LOW', 'HIGH'),
                      help='image heights and widths are drawn from [LOW, HIGH) (128 160)')
    train = parser.add_argument_group('training')
    train.add_argument('--teacher-iters', type=int, default=600,
                       help="the dense teacher's iterations (600)")
    train.add_argument('--iters', type=int, default=300,
                       help='iterations of the dense model and of the student from the '
                       'teacher (300)')
    train.add_argument('--seed', type=int, default=0, help='randomness.seed of every training')
    train.add_argument('--teacher-seed', type=int, default=None,
                       help="the teacher's randomness.seed (default: --seed); with another "
                       '--seed, the dense model and the student train again from the same '
                       'teacher (in dense_seedN and VARIANT_seedN of the work dir): two runs '
                       'of the dense model show how much a run varies')
    train.add_argument('--dense-config', default=str(ROOT / DENSE_CONFIG),
                       help=f'the dense model (default {DENSE_CONFIG})')
    train.add_argument('--student-config', default=str(ROOT / STUDENT_CONFIG),
                       help='the sparse student, an mmdvit.SparsityTrainer config whose '
                       'teacher is the dense model, or without a teacher (teacher=None: no '
                       f'distillation) (default {STUDENT_CONFIG})')
    train.add_argument('--distill-from', choices=('teacher', 'dense'), default='teacher',
                       help='the checkpoint the student distils from: the teacher it starts '
                       'from (default), or the dense model trained as long as the student in '
                       'total (teacher + --iters; the student then trains after it)')
    train.add_argument('--variant', default='whole',
                       help='name of the student run (its folder in the work dir; default '
                       '"whole"): one per set of --student-options')
    train.add_argument('--student-options', nargs='+', default=[], metavar='KEY=VALUE',
                       help='--cfg-options for the student (training, evaluation, FLOPs), e.g. '
                       'model.student.decode_head.block_size=2')
    flops = parser.add_argument_group('FLOPs')
    flops.add_argument('--flops-shape', type=int, nargs=2, default=[128, 128],
                       metavar=('H', 'W'), help='input size of the FLOPs count (128 128)')
    flops.add_argument('--flops-images', type=int, default=4,
                       help='average over the first N validation images (4)')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the stages and whether each would run; run nothing')
    parser.add_argument('--summarize', nargs='+', metavar='REPORT',
                        help='train nothing: print the reports (WORK_DIR/VARIANT/report.json, '
                        'e.g. of several seeds) side by side, with the mean and the worst '
                        'difference to the dense model per class')
    args = parser.parse_args(argv)
    for name in ('num_train', 'num_val', 'teacher_iters', 'iters', 'flops_images'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1')
    if not 32 <= args.size[0] < args.size[1]:
        parser.error(f'--size LOW HIGH needs 32 <= LOW < HIGH, got {args.size}')
    bad = [o for o in args.student_options if '=' not in o]
    if bad:
        parser.error(f'--student-options takes KEY=VALUE items, got {bad}')
    args.python = sys.executable
    return args


def dry_run(args: argparse.Namespace) -> None:
    """Print each stage's command and whether it would run (the data are not written)."""
    from mmseg.datasets import ADE20KDataset

    from mmdvit.analysis.quality import is_done
    for stage in plan(args, ADE20KDataset.METAINFO['classes']).values():
        state = 'done, skipped' if is_done(stage) else 'runs'
        print(f'{stage.name} ({state}): {" ".join(stage.command)}')


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    try:
        if args.summarize:
            print(format_summary(summarize(read_reports(args.summarize))))
        elif args.dry_run:
            dry_run(args)
        else:
            run_benchmark(args, log=lambda msg: print(msg, flush=True))
    except BenchmarkError as err:
        sys.exit(f'quality_benchmark: {err}')


if __name__ == '__main__':
    main()
