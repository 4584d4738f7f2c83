"""Evaluate a checkpoint of an mmseg segmentor, an mmdet detector or an mmpretrain classifier.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out OUT] [--show-dir DIR]
                         [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
                         [--allow-missing-keys] [--trust-checkpoint]

The arguments are those of mmseg's and mmdet's ``tools/test.py``: for a segmentation config
``--out`` is a folder for the predicted label maps, for a detection config a ``.pkl`` file of
the results; ``--show-dir`` saves drawn predictions. A checkpoint trained with
``mmdvit.SparsityTrainer`` evaluates with the same config (its teacher is not needed). The
metrics are printed at the end as one ``metrics: {...}`` JSON line.

CHECKPOINT is read with ``weights_only=True`` and an allowlist of the types Runner checkpoints
hold (``--trust-checkpoint`` or ``MMDVIT_TRUST_CHECKPOINTS=1`` for a trusted file that needs
more), and it must fit the model: a checkpoint that leaves model tensors missing or with
another shape (empty, another backbone, backbone only) stops with an error listing them, unless
``--allow-missing-keys`` is given.
"""
import argparse
import json
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmdvit.engine.checkpoint_loader import configure_checkpoints
from mmdvit.engine.cli import add_trust_argument, apply_trust
from mmdvit.engine.cpu_runtime import close_process_group, prepare_cpu_run
from mmdvit.engine.preflight import check_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate a segmentor, detector or classifier')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where to save the evaluation logs '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--out', help='segmentation: folder for predicted label maps; '
                        'detection: .pkl file for the results')
    parser.add_argument('--show-dir', help='folder for images with the predictions drawn')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.student.backbone.keep_ratios='
                        '"(0.9,0.7,0.5)"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--allow-missing-keys', action='store_true',
                        help='evaluate even if the checkpoint leaves model tensors missing or '
                        'with another shape (they keep their initialisation); by default such '
                        'a checkpoint is refused with the list of them')
    add_trust_argument(parser)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    apply_trust(args)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def add_outputs(cfg: Config, args: argparse.Namespace) -> None:
    """``--out`` and ``--show-dir`` as mmseg's / mmdet's tools interpret them.

    The folders they write to are created here, by every process: upstream creates them on
    rank 0 only, and other ranks of a multi-process run may write first.
    """
    is_det = cfg.get('default_scope') == 'mmdet'
    if args.show_dir:
        hook = cfg.default_hooks.get('visualization')
        if hook is None:
            raise ValueError('--show-dir needs default_hooks.visualization in the config')
        hook['draw'] = True
        if is_det:  # mmdet's convention: a folder inside <work dir>/<timestamp>/
            hook['test_out_dir'] = args.show_dir
        else:  # mmseg's hook draws every `interval`-th image: draw them all
            cfg.visualizer['save_dir'] = args.show_dir
            hook['interval'] = 1
            os.makedirs(args.show_dir, exist_ok=True)
    if args.out is None:
        return
    if is_det:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out {args.out!r}: detection results are saved as a .pkl file')
        evaluators = cfg.test_evaluator
        evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
        cfg.test_evaluator = evaluators + [dict(type='DumpDetResults', out_file_path=args.out)]
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    else:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
        os.makedirs(args.out, exist_ok=True)


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False
    add_outputs(cfg, args)
    check_config(cfg, 'test')
    prepare_cpu_run(cfg, args.launcher)
    configure_checkpoints(cfg, 'test', allow_missing_keys=args.allow_missing_keys)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    metrics = runner.test()
    if runner.rank == 0:
        print('metrics: ' + json.dumps({k: float(v) for k, v in metrics.items()}))
    close_process_group()


if __name__ == '__main__':
    main()
