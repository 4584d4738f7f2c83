"""Evaluate a checkpoint of an mmseg segmentor, an mmdet detector or an mmpretrain classifier.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out OUT] [--out-item {pred,metrics}]
                         [--show] [--wait-time SECONDS] [--show-dir DIR] [--tta]
                         [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
                         [--compile [{default,reduce-overhead,max-autotune}]]
                         [--allow-missing-keys] [--trust-checkpoint] [--debug]

The arguments are those of mmseg's, mmdet's and mmpretrain's ``tools/test.py`` (the config's
``default_scope`` decides which library runs):

- ``--out``: for a segmentation config a folder for the predicted label maps; for a detection
  config a ``.pkl`` file of the results; for a classification config a ``.pkl`` file of the
  per-image predictions, or of the computed metrics with ``--out-item metrics``. Every file is
  written atomically; the folder must be new or empty and appears only when complete
  (``mmdvit/engine/outputs.py``).
- ``--show`` displays every prediction in a window for ``--wait-time`` seconds (default 2); it
  stops at once when no display is available (``--show-dir`` saves the drawings instead).
  ``--show-dir DIR`` saves every drawn prediction.
- ``--tta`` evaluates with the test-time augmentation the config defines: ``tta_pipeline``
  replaces the test pipeline and ``tta_model`` wraps the model (both keys are required).
- ``--compile [MODE]`` (mmdvit's addition) runs the model's fixed-shape part compiled with
  ``torch.compile(mode=MODE, dynamic=False)`` (``default`` when MODE is left out;
  ``reduce-overhead`` uses CUDA graphs on a GPU); the first batch compiles before the loop
  starts. What is compiled, and when it pays: ``mmdvit/engine/compile.py``,
  docs/deployment.md.

A checkpoint trained with ``mmdvit.SparsityTrainer`` evaluates with the same config (its teacher
is not needed). The metrics are printed at the end as one ``metrics: {...}`` JSON line. The
console leaves out mmengine's environment, config and hook dumps and the per-class IoU rows of
classes neither in the data nor predicted; the work dir's log file has all of it. An error to
fix prints as one message (exit status 1); ``--debug`` or ``MMDVIT_DEBUG=1`` shows its
traceback.

CHECKPOINT is a local file (URLs are refused), read safely (docs/checkpoints.md;
``--trust-checkpoint`` unpickles it fully, and no other file), and it must fit the model: a
checkpoint that leaves model tensors missing or with another shape (empty, another backbone,
backbone only) stops with an error listing them, unless ``--allow-missing-keys`` is given.
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Any, Dict, List, Mapping, Optional

import mmengine
import numpy as np
from mmengine.config import Config, DictAction

from mmdvit.engine.checkpoint_loader import configure_checkpoints
from mmdvit.engine.cli import add_debug_argument, add_trust_argument, run_tool
from mmdvit.engine.compile import COMPILE_MODES, CompileHook
from mmdvit.engine.cpu_runtime import close_process_group, prepare_cpu_run
from mmdvit.engine.log_filters import build_runner
from mmdvit.engine.outputs import check_out_folder
from mmdvit.engine.preflight import add_load_checks, check_config
from mmdvit.models.checkpoint import write_atomic

PICKLE_EXTENSIONS = ('.pkl', '.pickle')
# matplotlib backends that draw without a window (mmengine's Visualizer.show would wait for a
# key press or the timeout on a figure nobody sees).
NON_INTERACTIVE_BACKENDS = ('agg', 'cairo', 'pdf', 'pgf', 'ps', 'svg', 'template')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate a segmentor, detector or classifier')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where to save the evaluation logs '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--out', help='segmentation: folder for predicted label maps; '
                        'detection: .pkl file for the results; classification: .pkl file for '
                        'the predictions (or the metrics, see --out-item)')
    parser.add_argument('--out-item', choices=['pred', 'metrics'],
                        help='classification only: what --out holds, the per-image predictions '
                        '(default) or the computed metrics')
    parser.add_argument('--show', action='store_true',
                        help='display every prediction in a window (needs a display)')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each --show window stays open (default: 2)')
    parser.add_argument('--show-dir', help='folder for images with the predictions drawn')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation: the config's tta_pipeline replaces the test "
                        'pipeline and its tta_model wraps the model')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.student.backbone.keep_ratios='
                        '"(0.9,0.7,0.5)"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--compile', nargs='?', const='default', choices=COMPILE_MODES,
                        help='run the backbone, neck and dense heads compiled with '
                        'torch.compile in this mode (default: %(const)s; reduce-overhead: CUDA '
                        'graphs on a GPU), compiled on the first batch before the loop starts')
    parser.add_argument('--allow-missing-keys', action='store_true',
                        help='evaluate even if the checkpoint leaves model tensors missing or '
                        'with another shape (they keep their initialisation); by default such '
                        'a checkpoint is refused with the list of them')
    add_trust_argument(parser, 'CHECKPOINT')
    add_debug_argument(parser)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.out_item is not None and args.out is None:
        parser.error('--out-item says what the --out file holds: give --out FILE.pkl as well')
    problem = display_problem() if args.show else None
    if problem is not None:
        parser.error(f'--show: {problem}, so no window can open. Use --show-dir DIR to save the '
                     'drawn predictions instead (or run where a display is available).')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def display_problem(environ: Mapping[str, str] = os.environ, platform: str = sys.platform,
                    backend: Optional[str] = None) -> Optional[str]:
    """Why ``--show`` cannot display anything here, or ``None``.

    Args:
        backend: matplotlib's backend (default: the one matplotlib picks here), which
            mmengine's Visualizer shows the images with.
    """
    if (platform.startswith(('linux', 'freebsd', 'openbsd'))
            and not environ.get('DISPLAY') and not environ.get('WAYLAND_DISPLAY')):
        return 'no display is available (DISPLAY and WAYLAND_DISPLAY are unset)'
    if backend is None:
        import matplotlib
        backend = matplotlib.get_backend()
    if backend.lower() in NON_INTERACTIVE_BACKENDS:
        return (f'matplotlib, which draws the window, uses the non-interactive backend '
                f'{backend!r} (no GUI toolkit such as tkinter is installed, or MPLBACKEND '
                'selects it)')
    return None


def visualization_hook(cfg: Config, option: str) -> dict:
    """The config's ``default_hooks.visualization``, which ``option`` needs."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError(f'{option} needs default_hooks.visualization in the config')
    return hook


def enable_drawing(cfg: Config, hook: dict) -> None:
    """Draw every image: mmpretrain's hook has ``enable``, mmseg's and mmdet's ``draw``;
    mmseg's and mmpretrain's draw only every ``interval``-th image otherwise."""
    scope = cfg.get('default_scope')
    hook['enable' if scope == 'mmpretrain' else 'draw'] = True
    if scope != 'mmdet':  # mmdet's hook draws every test image whatever its interval
        hook['interval'] = 1


def add_show(cfg: Config, wait_time: float) -> None:
    """``--show`` and ``--wait-time``: the visualization hook displays every prediction."""
    hook = visualization_hook(cfg, '--show')
    enable_drawing(cfg, hook)
    hook['show'] = True
    hook['wait_time'] = wait_time


def add_show_dir(cfg: Config, show_dir: str) -> None:
    """``--show-dir`` as each library's tool interprets it."""
    hook = visualization_hook(cfg, '--show-dir')
    enable_drawing(cfg, hook)
    scope = cfg.get('default_scope')
    if scope == 'mmdet':  # mmdet's convention: a folder inside <work dir>/<timestamp>/
        hook['test_out_dir'] = show_dir
        return
    if scope == 'mmpretrain':  # mmpretrain's hook writes the images there itself
        hook['out_dir'] = show_dir
    else:
        cfg.visualizer['save_dir'] = show_dir
    os.makedirs(show_dir, exist_ok=True)


def append_evaluator(cfg: Config, metric: dict) -> None:
    evaluators = cfg.test_evaluator
    evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
    cfg.test_evaluator = evaluators + [metric]


def check_pickle_path(out: str, what: str) -> None:
    if not out.endswith(PICKLE_EXTENSIONS):
        raise ValueError(f'--out {out!r}: {what} are saved as a pickle file: give a path ending '
                         'in .pkl or .pickle')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)


def add_classification_out(cfg: Config, out: str, out_item: Optional[str]) -> None:
    """``--out FILE.pkl``: the predictions (mmengine's ``DumpResults``), or the metrics that
    :func:`dump_metrics` writes after the run (``--out-item metrics``), as mmpretrain's tool."""
    if out_item == 'metrics':
        check_pickle_path(out, 'classification metrics')
        return
    check_pickle_path(out, 'classification predictions')
    append_evaluator(cfg, dict(type='mmdvit.AtomicDumpResults', out_file_path=out))


def add_outputs(cfg: Config, args: argparse.Namespace) -> None:
    """``--out`` and ``--show-dir`` as mmseg's / mmdet's / mmpretrain's tools interpret them,
    ``--out`` written atomically (:mod:`mmdvit.engine.outputs`).

    The folders they write to are created here (or, for segmentation predictions, by the
    writer), by every process: upstream creates them on rank 0 only, and other ranks of a
    multi-process run may write first.
    """
    scope = cfg.get('default_scope')
    if args.show_dir:
        add_show_dir(cfg, args.show_dir)
    if args.out is None:
        return
    if scope == 'mmpretrain':
        add_classification_out(cfg, args.out, args.out_item)
    elif scope == 'mmdet':
        check_pickle_path(args.out, 'detection results')
        append_evaluator(cfg, dict(type='mmdvit.AtomicDumpDetResults', out_file_path=args.out))
    else:
        check_out_folder(args.out)
        append_evaluator(cfg, dict(type='mmdvit.SegPredictionWriter', out_dir=args.out))


def check_out_item(cfg: Config, out_item: Optional[str]) -> None:
    """``--out-item`` is mmpretrain's option: refuse it for the other libraries' configs."""
    scope = cfg.get('default_scope')
    if out_item is not None and scope != 'mmpretrain':
        raise ValueError(f'--out-item is for classification configs (default_scope '
                         f"'mmpretrain'); this config's default_scope is {scope!r}, whose --out "
                         'always holds the predictions: drop --out-item')


def use_tta(cfg: Config, config_path: str) -> None:
    """``--tta`` as upstream: ``tta_pipeline`` replaces the test pipeline and ``tta_model``
    wraps the model (the ``mmdvit.SparsityTrainer`` wrapper too, which predicts as its
    student)."""
    missing = [key for key in ('tta_model', 'tta_pipeline') if not cfg.get(key)]
    if missing:
        names = ' and '.join(f'`{key}`' for key in missing)
        raise ValueError(
            f'--tta needs {names} in the config, but {config_path} does not define '
            f"{'them' if len(missing) > 1 else 'it'}: add tta_model (e.g. "
            "dict(type='SegTTAModel'), dict(type='DetTTAModel', tta_cfg=...), "
            "dict(type='AverageClsScoreTTA')) and tta_pipeline (a test pipeline ending in "
            "dict(type='TestTimeAug', transforms=[...])) to the config, or run without --tta.")
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def load_config(args: argparse.Namespace) -> Config:
    """The config with the command line applied (everything but the checkpoint handling)."""
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
    check_out_item(cfg, args.out_item)
    if args.show:
        add_show(cfg, args.wait_time)
    add_outputs(cfg, args)
    if args.tta:
        use_tta(cfg, args.config)
    return cfg


def dump_metrics(metrics: Dict[str, Any], args: argparse.Namespace) -> None:
    """``--out-item metrics``: the computed metrics go to the ``--out`` pickle file."""
    if args.out is not None and args.out_item == 'metrics':
        write_atomic(args.out, lambda f: mmengine.dump(metrics, f, file_format='pkl'))


def plain_number(value: Any) -> float:
    """A metric as a float with the digits of its own precision (mmseg's float32 5.24 is
    written 5.24, not 5.239999771118164)."""
    if hasattr(value, 'cpu'):  # a tensor
        value = value.detach().cpu()
    return float(str(np.asarray(value)[()]))


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args)
    check_config(cfg, 'test')
    add_load_checks(cfg, 'test')
    prepare_cpu_run(cfg, args.launcher)
    configure_checkpoints(cfg, 'test', allow_missing_keys=args.allow_missing_keys,
                          trust_run_checkpoint=args.trust_checkpoint)
    runner = build_runner(cfg)
    if args.compile:
        runner.register_hook(CompileHook(args.compile))
    metrics = runner.test()
    if runner.rank == 0:
        dump_metrics(metrics, args)
        print('metrics: ' + json.dumps({k: plain_number(v) for k, v in metrics.items()}))
    close_process_group()


if __name__ == '__main__':
    run_tool(main)
