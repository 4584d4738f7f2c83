"""Train an mmseg segmentor, an mmdet detector or an mmpretrain classifier (with or without
mmdvit's SparsityTrainer, which alone trains the score predictors: a dynamic backbone trained
without it warns at the first iteration).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
                          [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
                          [--allow-missing-keys] [--trust-checkpoint] [--debug]

The arguments are those of mmseg's and mmdet's ``tools/train.py``; the config's
``default_scope`` decides which library runs. Before the Runner is built, the config is checked:
missing data or checkpoints, malformed annotations and a ``num_classes`` that does not fit the
dataset fail at once. Checkpoints are read safely (docs/checkpoints.md; URLs are refused;
``--trust-checkpoint`` unpickles the ``--resume`` / ``load_from`` file fully, and no other),
a ``load_from`` / ``--resume`` checkpoint must fit the model
(``--allow-missing-keys`` to relax), and checkpoints are written atomically. Every image and
label map is checked as it is loaded (``mmdvit/datasets/transforms.py``). At the start, the
temporary files of saves killed mid-write are removed, an empty ``last_checkpoint`` falls back to
the newest checkpoint, and checkpoints carry the random state so that a resumed run equals the
uninterrupted one (``mmdvit/engine/resume.py``). Runs without CUDA
(single process or torchrun with gloo) work; see ``mmdvit/engine/cpu_runtime.py``. The
optimizer constructors' per-parameter messages are logged at DEBUG (``log_level='DEBUG'`` shows
them); mmengine's environment, config and hook dumps go to the log file only, not the console
(``mmdvit/engine/log_filters.py``). An error to fix prints as one message (exit status 1);
``--debug`` or ``MMDVIT_DEBUG=1`` shows its traceback (``mmdvit/engine/cli.py``).
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

from mmdvit.engine.checkpoint_loader import configure_checkpoints
from mmdvit.engine.cli import add_debug_argument, add_trust_argument, run_tool
from mmdvit.engine.cpu_runtime import close_process_group, prepare_cpu_run
from mmdvit.engine.log_filters import build_optim_wrapper_quietly, build_runner
from mmdvit.engine.preflight import add_load_checks, check_config
from mmdvit.engine.resume import prepare_resume
from mmdvit.models.checkpoint import TRUST_ENV


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor, detector or classifier')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where to save logs and checkpoints '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CHECKPOINT, or without a value from the latest '
                        'checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. '
                        'model.student.backbone.keep_ratios="(0.9,0.7,0.5)"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--allow-missing-keys', action='store_true',
                        help='start from a load_from / --resume checkpoint even if it leaves '
                        'model tensors missing or with another shape (they keep their '
                        'initialisation); by default such a checkpoint stops the run')
    add_trust_argument(parser, 'the checkpoint the run starts from (the --resume checkpoint, '
                       'or load_from)')
    add_debug_argument(parser)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_cfg(args: argparse.Namespace) -> Config:
    """The config with the command line applied."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main() -> None:
    args = parse_args()
    cfg = build_cfg(args)
    if args.trust_checkpoint and not (cfg.get('load_from') or cfg.get('resume')):
        raise SystemExit('--trust-checkpoint trusts the checkpoint the run starts from (--resume '
                         'or load_from), and this run has none. For a teacher or init_cfg file, '
                         f'set {TRUST_ENV}=FILE.')
    prepare_resume(cfg, trust_run_checkpoint=args.trust_checkpoint)
    check_config(cfg, 'train')
    add_load_checks(cfg, 'train')
    prepare_cpu_run(cfg, args.launcher)
    configure_checkpoints(cfg, 'train', allow_missing_keys=args.allow_missing_keys,
                          trust_run_checkpoint=args.trust_checkpoint)
    runner = build_runner(cfg)
    build_optim_wrapper_quietly(runner)
    runner.train()
    if runner.rank == 0:
        last = osp.join(cfg.work_dir, 'last_checkpoint')
        checkpoint = open(last).read().strip() if osp.isfile(last) else None
        print(f'Training done. Work dir: {cfg.work_dir}; logs: {runner.log_dir}; '
              f'last checkpoint: {checkpoint}')
    close_process_group()


if __name__ == '__main__':
    run_tool(main)
