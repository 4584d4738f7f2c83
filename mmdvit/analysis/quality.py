"""The fine-structure quality benchmark: a sparse student against a dense model trained as long.

With equal training: a dense teacher trained for T iterations, then from its checkpoint N more
iterations of (a) the dense model and (b) the sparse student (started at the teacher and
distilled from it or, with ``distill_from='dense'``, from (a): a teacher trained as long as the
student in total), the same schedule and seed. Every stage runs the repository's tools in
subprocesses (``tools/train.py``, ``tools/test.py``, ``tools/analysis_tools/get_flops.py``), as
a user would; each records its command and inputs in ``<stage dir>/stage.json`` and is skipped
when its output exists with the same record. ``tools/analysis_tools/quality_benchmark.py`` is
the command line.

Per-class IoU is recomputed from the label maps ``tools/test.py --out`` writes (mmseg's
``IoUMetric`` with ``output_dir``) and the annotation PNGs, as mmseg computes it (pixels
labelled 0 ignored, classes with an empty union left out of the mean); the recomputed mIoU must
match the one ``tools/test.py`` prints.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
from PIL import Image

from ..datasets.fine_structure import FINE_GROUPS, META_FILE

ROOT = Path(__file__).resolve().parents[2]
NUM_VALUES = 256  # label PNG values are uint8
MIOU_TOLERANCE = 0.02  # tools/test.py prints mIoU rounded to 2 decimals
WARMUP_ITERS = 30  # the demo schedule: linear warm-up, then poly decay to 0


class BenchmarkError(RuntimeError):
    """A stage failed or the work dir holds results of other settings."""


@dataclass
class Stage:
    """One step of the benchmark.

    Attributes:
        name: what it makes (``teacher``, ``dense``, the variant, ``<model> evaluation``, ...).
        command: the command (``command[0]`` is the interpreter and is not recorded).
        output: the file it makes; the stage is done when it exists with a matching record.
        directory: its folder, holding ``stage.json`` and ``stage.log``.
        inputs: files it reads that earlier stages make (their size and mtime are recorded).
        strict: a record with another command is an error (training: results of other
            settings), rather than a reason to run again (evaluation of a new checkpoint).
        finish: makes ``output`` from the finished command's log, if the command does not.
        fresh: folders the command writes from scratch, emptied before it runs (the
            predictions of an earlier evaluation).
    """
    name: str
    command: List[str]
    output: Path
    directory: Path
    inputs: List[Path] = field(default_factory=list)
    strict: bool = True
    finish: Optional[Callable[['Stage'], None]] = None
    fresh: List[Path] = field(default_factory=list)

    @property
    def record_path(self) -> Path:
        return self.directory / 'stage.json'

    @property
    def log_path(self) -> Path:
        return self.directory / 'stage.log'

    def record(self) -> dict:
        """What identifies a run of this stage: its arguments and its inputs' identity."""
        inputs = []
        for path in self.inputs:
            stat = path.stat() if path.is_file() else None
            inputs.append([str(path), stat and stat.st_size, stat and stat.st_mtime_ns])
        return dict(command=self.command[1:], inputs=inputs)


def is_done(stage: Stage) -> bool:
    """Whether ``stage`` can be skipped: it finished before (its record exists) with the same
    command and inputs, and its output is there.

    Raises:
        BenchmarkError: a strict stage whose folder holds a finished run with another command
            (other iterations, options or data): the message names the folder and the fix.
    """
    if not stage.record_path.is_file():
        return False
    recorded = json.loads(stage.record_path.read_text())
    if recorded['command'] != stage.command[1:]:
        if stage.strict:
            raise BenchmarkError(
                f'{stage.directory} holds a finished {stage.name} run with other settings:\n'
                f'  recorded: {" ".join(recorded["command"])}\n'
                f'  now:      {" ".join(stage.command[1:])}\n'
                'Give another --work-dir (or --variant for a student), or delete that folder '
                'to run it again.')
        return False
    return stage.output.is_file() and recorded['inputs'] == stage.record()['inputs']


def tool_env() -> Dict[str, str]:
    """The environment of the subprocesses: this checkout's ``mmdvit`` first on the path (as
    ``tools/dist_train.sh`` does)."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(ROOT), env.get('PYTHONPATH')) if p)
    return env


def run_stage(stage: Stage, log=print) -> float:
    """Run ``stage`` unless :func:`is_done`; its output goes to ``stage.log``. Returns the wall
    time in seconds (the recorded one when skipped).

    Raises:
        BenchmarkError: the command failed or did not make its output (the message ends with
            the log's last lines).
    """
    if is_done(stage):
        seconds = json.loads(stage.record_path.read_text()).get('seconds', 0.0)
        log(f'==> {stage.name}: done before ({stage.output}), skipped')
        return seconds
    stage.directory.mkdir(parents=True, exist_ok=True)
    stage.record_path.unlink(missing_ok=True)
    for folder in stage.fresh:  # the stage's own output of an earlier run
        shutil.rmtree(folder, ignore_errors=True)
    log(f'==> {stage.name}: {" ".join(stage.command)}\n    log: {stage.log_path}')
    start = time.time()
    with open(stage.log_path, 'w') as out:
        proc = subprocess.run(stage.command, stdout=out, stderr=subprocess.STDOUT,
                              env=tool_env())
    seconds = round(time.time() - start, 1)
    if proc.returncode == 0 and stage.finish is not None:
        stage.finish(stage)
    if proc.returncode != 0 or not stage.output.is_file():
        tail = ''.join(stage.log_path.read_text().splitlines(keepends=True)[-30:])
        why = (f'exited with status {proc.returncode}' if proc.returncode else
               f'did not write {stage.output}')
        raise BenchmarkError(f'{stage.name} {why}; log: {stage.log_path}\n{tail}')
    stage.record_path.write_text(json.dumps(dict(stage.record(), seconds=seconds), indent=1))
    log(f'    {stage.name} done in {seconds:.0f} s')
    return seconds


def schedule_options(iters: int, warmup: int = WARMUP_ITERS) -> List[str]:
    """``--cfg-options`` giving the demo configs' schedule ``iters`` iterations long: linear
    warm-up for ``min(warmup, iters // 2)`` iterations, poly decay to 0 at ``iters``; one
    checkpoint and one validation, at the end."""
    warm = max(min(warmup, iters // 2), 1)
    return [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}', f'param_scheduler.0.end={warm}',
            f'param_scheduler.1.begin={warm}', f'param_scheduler.1.end={iters}']


def data_options(data_root: Path) -> List[str]:
    """``--cfg-options`` pointing the train, val and test dataloaders at ``data_root``."""
    return [f'{loader}.dataset.data_root={data_root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


def iou_from_predictions(pred_dir: Path, ann_dir: Path) -> Dict[str, np.ndarray]:
    """Per-value intersection and union of predicted and annotated label PNGs.

    Args:
        pred_dir: ``<name>.png`` label maps as ``tools/test.py --out`` writes them, one for
            every annotation.
        ann_dir: the annotation PNGs ``<name>.png``; value 0 is ignored.

    Returns:
        ``{'intersect', 'union', 'label_area'}``, each (256,) int64 indexed by PNG value.

    Raises:
        BenchmarkError: no annotations, a missing prediction or a size mismatch.
    """
    anns = sorted(ann_dir.glob('*.png'))
    if not anns:
        raise BenchmarkError(f'no annotation PNGs in {ann_dir}')
    confusion = np.zeros(NUM_VALUES * NUM_VALUES, np.int64)
    for ann_path in anns:
        path = pred_dir / ann_path.name
        if not path.is_file():
            raise BenchmarkError(f'annotation {ann_path} has no prediction {path}')
        pred = np.asarray(Image.open(path), np.int64)
        label = np.asarray(Image.open(ann_path), np.int64)
        if pred.shape != label.shape:
            raise BenchmarkError(f'prediction {path} is {pred.shape}, annotation {ann_path} '
                                 f'{label.shape}')
        valid = label != 0
        confusion += np.bincount(label[valid] * NUM_VALUES + pred[valid],
                                 minlength=NUM_VALUES * NUM_VALUES)
    confusion = confusion.reshape(NUM_VALUES, NUM_VALUES)  # [label, prediction]
    intersect = np.diag(confusion).copy()
    label_area, pred_area = confusion.sum(1), confusion.sum(0)
    intersect[0] = label_area[0] = pred_area[0] = 0  # 0 is "other": never a class
    return dict(intersect=intersect, union=label_area + pred_area - intersect,
                label_area=label_area)


def class_ious(areas: Dict[str, np.ndarray], class_names: Sequence[str]) -> Dict[str, object]:
    """mIoU and IoU (in %) per class from :func:`iou_from_predictions`' areas.

    PNG value ``v`` is class ``class_names[v - 1]`` (ADE20K's ``reduce_zero_label``). As in
    mmseg, a class whose union is empty has no IoU and stays out of the mean; a class predicted
    but absent from the annotations scores 0.

    Returns:
        ``{'mIoU': float, 'per_class': {name: IoU}, 'label_pixels': {name: count}}`` over the
        classes with a non-empty union.
    """
    per_class, pixels = {}, {}
    for value, name in enumerate(class_names, start=1):
        union = int(areas['union'][value])
        if union:
            per_class[name] = 100.0 * int(areas['intersect'][value]) / union
            pixels[name] = int(areas['label_area'][value])
    miou = float(np.mean(list(per_class.values()))) if per_class else float('nan')
    return dict(mIoU=miou, per_class=per_class, label_pixels=pixels)


def parse_metrics(text: str) -> Dict[str, float]:
    """The last ``metrics: {...}`` line ``tools/test.py`` prints.

    Raises:
        BenchmarkError: there is none.
    """
    lines = [line for line in text.splitlines() if line.startswith('metrics: ')]
    if not lines:
        raise BenchmarkError('no "metrics: {...}" line in the output of tools/test.py')
    return json.loads(lines[-1][len('metrics: '):])


def evaluation(log_text: str, pred_dir: Path, ann_dir: Path,
               class_names: Sequence[str]) -> Dict[str, object]:
    """The metrics of one evaluation: ``tools/test.py``'s and the per-class IoU recomputed from
    its predictions.

    Raises:
        BenchmarkError: the recomputed mIoU differs from the printed one by more than
            :data:`MIOU_TOLERANCE` (the predictions are not those of the evaluation).
    """
    metrics = parse_metrics(log_text)
    result = class_ious(iou_from_predictions(pred_dir, ann_dir), class_names)
    if abs(result['mIoU'] - metrics['mIoU']) > MIOU_TOLERANCE:
        raise BenchmarkError(
            f'mIoU recomputed from {pred_dir} is {result["mIoU"]:.2f}, tools/test.py printed '
            f'{metrics["mIoU"]:.2f}: the folder holds other predictions; delete it and run '
            'again.')
    return dict(result, metrics=metrics)


def group_of(name: str) -> str:
    """The :data:`FINE_GROUPS` group of a class, or ``'-'``."""
    return next((group for group, names in FINE_GROUPS.items() if name in names), '-')


def by_group(names: Iterable[str]) -> List[str]:
    """``names`` in :data:`FINE_GROUPS` order (large, thin, small), then the others; by name
    within each."""
    order = {n: i for i, group in enumerate(FINE_GROUPS.values()) for n in group}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def group_means(per_class: Dict[str, float]) -> Dict[str, float]:
    """Mean IoU of each :data:`FINE_GROUPS` group over its classes present in ``per_class``."""
    means = {}
    for group, names in FINE_GROUPS.items():
        values = [per_class[n] for n in names if n in per_class]
        if values:
            means[group] = float(np.mean(values))
    return means


def _row(label: str, group: str, a: Optional[float], b: Optional[float], width: int) -> str:
    """One table row: dense value, student value and their difference, ``-`` where missing."""
    cells = [f'{v:{width}.2f}' if v is not None else f'{"-":>{width}s}' for v in (a, b)]
    diff = f'{b - a:+{width}.2f}' if a is not None and b is not None else f'{"-":>{width}s}'
    return f'{label[:18]:18s}{group:>7s}{cells[0]}{cells[1]}{diff}'


def _report_teacher_seed(settings: dict) -> int:
    """The teacher's seed of a report's ``settings`` (reports before ``--teacher-seed``: the
    seed)."""
    return settings.get('teacher_seed', settings['seed'])


def _teacher_seed_text(settings: dict) -> str:
    seed = _report_teacher_seed(settings)
    return '' if seed == settings['seed'] else f', teacher seed {seed}'


def format_report(report: dict) -> str:
    """A side-by-side table of a benchmark report (see :func:`make_report`): mIoU, group means
    and per-class IoU of the dense reference and the student, their difference, and the
    student's FLOPs."""
    settings, models = report['settings'], report['models']
    variant = settings['variant']
    dense, student = models['dense'], models[variant]
    teacher = models.get('teacher')
    start = f' (mIoU {teacher["mIoU"]:.2f})' if teacher else ''
    width = max(8, len(variant) + 2)
    lines = [
        f'Fine-structure quality benchmark: dense teacher {settings["teacher_iters"]} '
        f'iterations{start}, then {settings["iters"]} more iterations each of the dense model '
        f'and of {variant!r} (seed {settings["seed"]}{_teacher_seed_text(settings)}; '
        f'{settings["data"]["num_val"]} '
        'validation images). A quality proxy against an equally trained dense model, not '
        'accuracy.',
        f'{"":18s}{"group":>7s}{"dense":>{width}s}{variant:>{width}s}{"diff":>{width}s}',
        _row('mIoU', '', dense['mIoU'], student['mIoU'], width)]
    dense_groups, student_groups = group_means(dense['per_class']), group_means(
        student['per_class'])
    for group in FINE_GROUPS:
        lines.append(_row(f'{group} (mean)', '', dense_groups.get(group),
                          student_groups.get(group), width))
    annotated = sorted({n for m in (dense, student) for n, c in m['label_pixels'].items() if c})
    for name in by_group(annotated):
        lines.append(_row(name, group_of(name), dense['per_class'].get(name),
                          student['per_class'].get(name), width))
    spurious = [len(set(m['per_class']) - set(annotated)) for m in (dense, student)]
    if any(spurious):
        lines.append(f'classes absent from the annotations but predicted (IoU 0, in mIoU as '
                     f'mmseg counts them): dense {spurious[0]}, {variant} {spurious[1]}')
    flops = report.get('flops')
    if flops:
        height, width = flops['shape']
        lines.append(f'GFLOPs at {height}x{width}: dense {flops["dense"]:.3f}, {variant} '
                     f'{flops["dynamic"]:.3f} ({flops["ratio"]:.2f}x fewer)')
    seconds = report.get('seconds', {})
    if seconds:
        lines.append('wall time: ' + ', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())
                     + f'; total {sum(seconds.values()):.0f} s')
    return '\n'.join(lines)


def summarize(reports: Sequence[dict]) -> dict:
    """Several benchmark reports (seeds, or variants) side by side: per run the dense and the
    student mIoU, their difference and the worst class of the small-object group; per class
    (and mIoU) the mean and the worst difference over the runs. Single runs of the benchmark
    differ by several IoU on the small classes the dense model is still learning, so points
    are compared over runs. Runs from one teacher with other seeds (``--teacher-seed``) also
    give how much the dense model itself moves between two runs (``dense_repeats``).

    Returns:
        ``{"runs": [{"variant", "seed", "dense", "student", "diff", "worst_small":
        (class, diff) or None}], "classes": {name: {"group", "mean", "worst", "runs",
        "dense_spread"}}, "dense_repeats": [{"teacher_seed", "seeds", "diff"}]}``:
        ``"classes"`` with ``"mIoU"`` first, then the classes in :data:`FINE_GROUPS` order;
        a class enters the mean and worst of the runs that have it. ``dense_repeats`` pairs
        the first run of each teacher with each later one of another seed: ``diff`` the later
        dense model's mIoU and per-class IoU minus the first's; ``dense_spread`` is the
        largest absolute such difference (``None`` without repeats).
    """
    runs, diffs = [], {'mIoU': []}
    for report in reports:
        variant = report['settings']['variant']
        difference = report['difference']
        small = {n: d for n, d in difference['per_class'].items() if group_of(n) == 'small'}
        worst = min(small.items(), key=lambda item: item[1]) if small else None
        runs.append(dict(variant=variant, seed=report['settings']['seed'],
                         dense=report['models']['dense']['mIoU'],
                         student=report['models'][variant]['mIoU'],
                         diff=difference['mIoU'], worst_small=worst))
        diffs['mIoU'].append(difference['mIoU'])
        for name, value in difference['per_class'].items():
            diffs.setdefault(name, []).append(value)
    repeats = dense_repeats(reports)
    spread: Dict[str, List[float]] = {}
    for repeat in repeats:
        for name, value in [('mIoU', repeat['diff']['mIoU']),
                            *repeat['diff']['per_class'].items()]:
            spread.setdefault(name, []).append(abs(value))
    names = ['mIoU'] + by_group(n for n in diffs if n != 'mIoU')
    classes = {name: dict(group=group_of(name) if name != 'mIoU' else '',
                          mean=float(np.mean(diffs[name])), worst=float(min(diffs[name])),
                          runs=len(diffs[name]),
                          dense_spread=max(spread[name]) if name in spread else None)
               for name in names}
    return dict(runs=runs, classes=classes, dense_repeats=repeats)


def dense_repeats(reports: Sequence[dict]) -> List[dict]:
    """The dense model trained again from the same teacher with another seed: for the runs
    that share a teacher (its seed, iterations, data and evaluated mIoU) and the dense model's
    iterations, the first run's dense model against each later one of another seed.

    Returns:
        ``[{"teacher_seed", "seeds": [first, later], "diff": {"mIoU", "per_class"}}]``, the
        later dense model minus the first (classes both evaluated).
    """
    first: Dict[str, dict] = {}
    repeats = []
    for report in reports:
        settings, models = report['settings'], report['models']
        teacher_seed = _report_teacher_seed(settings)
        if 'teacher' not in models:
            continue
        key = json.dumps([teacher_seed, settings['teacher_iters'], settings['iters'],
                          settings['data'], models['teacher']['mIoU']], sort_keys=True)
        base = first.setdefault(key, report)
        if base['settings']['seed'] == settings['seed']:
            continue
        before, after = base['models']['dense'], models['dense']
        per_class = {n: after['per_class'][n] - before['per_class'][n]
                     for n in before['per_class'] if n in after['per_class']}
        repeats.append(dict(teacher_seed=teacher_seed,
                            seeds=[base['settings']['seed'], settings['seed']],
                            diff=dict(mIoU=after['mIoU'] - before['mIoU'],
                                      per_class=per_class)))
    return repeats


def format_summary(summary: dict) -> str:
    """The tables of :func:`summarize`: one line per run, one per repeat of the dense model,
    then one per class."""
    lines = ['Fine-structure quality benchmark over runs: student - dense, each against its own '
             'equally trained dense model (a quality proxy, not accuracy).',
             f'{"run":28s}{"seed":>6s}{"dense":>8s}{"student":>9s}{"diff":>8s}  worst small class']
    for run in summary['runs']:
        worst = run['worst_small']
        worst_text = f'{worst[0]} {worst[1]:+.2f}' if worst else '-'
        lines.append(f'{run["variant"]:28s}{run["seed"]:>6}{run["dense"]:8.2f}'
                     f'{run["student"]:9.2f}{run["diff"]:+8.2f}  {worst_text}')
    repeats = summary['dense_repeats']
    for repeat in repeats:
        small = {n: d for n, d in repeat['diff']['per_class'].items() if group_of(n) == 'small'}
        worst = max(small.items(), key=lambda item: abs(item[1])) if small else None
        worst_text = f'; largest small class {worst[0]} {worst[1]:+.2f}' if worst else ''
        first, later = repeat['seeds']
        lines.append(f'dense again from teacher seed {repeat["teacher_seed"]}: seed {later} - '
                     f'seed {first}: mIoU {repeat["diff"]["mIoU"]:+.2f}{worst_text}')
    header = f'{"":18s}{"group":>7s}{"mean":>9s}{"worst":>9s}{"runs":>6s}'
    lines.append(header + ('  dense vs dense' if repeats else ''))
    for name, row in summary['classes'].items():
        line = (f'{name:18s}{row["group"]:>7s}{row["mean"]:+9.2f}{row["worst"]:+9.2f}'
                f'{row["runs"]:6d}')
        if repeats:
            spread = row['dense_spread']
            line += f'{spread:15.2f}' if spread is not None else f'{"-":>15s}'
        lines.append(line)
    if repeats:
        lines.append('dense vs dense: the largest |difference| between two dense models '
                     'trained equally from one teacher with other seeds (how much a run moves '
                     'by chance)')
    return '\n'.join(lines)


def read_reports(paths: Sequence[str]) -> List[dict]:
    """The benchmark reports (``report.json``) at ``paths``.

    Raises:
        BenchmarkError: naming a file that is missing or not a report of this benchmark.
    """
    reports = []
    for path in paths:
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise BenchmarkError(f'{path}: cannot read a report ({err}); give the report.json '
                                 'files the benchmark wrote (WORK_DIR/VARIANT/report.json)')
        if not (isinstance(report, dict)
                and {'settings', 'models', 'difference'} <= set(report)):
            raise BenchmarkError(f'{path}: not a report of this benchmark (no settings, models '
                                 'and difference); give WORK_DIR/VARIANT/report.json files')
        reports.append(report)
    return reports


def machine() -> Dict[str, object]:
    """What ran the benchmark: CPU model, cores, threads, torch version."""
    import torch
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f
                        if line.startswith('model name')), cpu)
    except OSError:
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), omp_num_threads=os.environ.get('OMP_NUM_THREADS'),
                torch=torch.__version__, cuda=torch.cuda.is_available(),
                python=sys.version.split()[0])


def flops_summary(path: Path, shape: Sequence[int]) -> Dict[str, object]:
    """Whole-model GFLOPs of ``get_flops.py --out`` JSON: dense twin, student and their ratio."""
    result = json.loads(path.read_text())
    dense, dynamic = result['model']['dense'], result['model']['dynamic']
    return dict(shape=list(shape), dense=dense, dynamic=dynamic, ratio=dense / dynamic)


def read_data_meta(data_root: Path) -> Optional[dict]:
    """The generator's ``fine_structure.json`` of a data folder, or ``None`` without one."""
    path = data_root / META_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def make_report(settings: dict, models: Dict[str, dict], flops: Optional[dict],
                seconds: Dict[str, float]) -> dict:
    """The benchmark's JSON report: ``settings`` (must name ``variant``, ``teacher_iters``,
    ``iters``, ``seed``, ``data``), the evaluations of ``models`` (``teacher``, ``dense`` and
    the variant), the variant's FLOPs and each stage's wall time."""
    dense, student = models['dense'], models[settings['variant']]
    diff = {name: student['per_class'][name] - iou
            for name, iou in dense['per_class'].items() if name in student['per_class']}
    return dict(settings=settings, machine=machine(), models=models, flops=flops,
                difference=dict(mIoU=student['mIoU'] - dense['mIoU'], per_class=diff),
                seconds=seconds)


TOOLS = ROOT / 'tools'
RESERVED_NAMES = ('teacher', 'dense', 'data')


def ensure_data(data_root: Path, num_train: int, num_val: int, seed: int,
                size_range: Sequence[int], log=print) -> dict:
    """The data folder's description, writing the fine-structure set there first if the folder
    does not exist.

    A folder the generator wrote must have been written with these parameters; a folder without
    its ``fine_structure.json`` (an ADE20K-layout set of the user's) is used as it is.

    Raises:
        BenchmarkError: the folder was generated with other parameters.
    """
    from ..datasets.fine_structure import make_fine_structure_ade20k
    wanted = dict(seed=seed, num_train=num_train, num_val=num_val, size_range=list(size_range))
    meta = read_data_meta(data_root)
    if meta is not None:
        found = {key: meta.get(key) for key in wanted}
        if found != wanted:
            raise BenchmarkError(
                f'{data_root} holds the fine-structure set written with {found}, not {wanted}: '
                'give the matching --num-train / --num-val / --data-seed / --size, another '
                '--data-root, or delete the folder to write it again.')
        return dict(meta, data_root=str(data_root))
    if data_root.exists():
        log(f'note: {data_root} has no {META_FILE} (not written by the fine-structure '
            'generator): benchmarking on it as it is')
        num_val = len(list((data_root / 'annotations' / 'validation').glob('*.png')))
        return dict(data_root=str(data_root), generator=None, num_val=num_val)
    log(f'==> data: writing the fine-structure set to {data_root}')
    make_fine_structure_ade20k(str(data_root), num_train, num_val, seed, tuple(size_range))
    return dict(read_data_meta(data_root), data_root=str(data_root))


def check_config(config: str) -> None:
    """The config must read an ``ADE20KDataset`` and have the demo configs' schedule, which
    :func:`schedule_options` rescales: an iteration-based ``LinearLR`` warm-up, then
    ``PolyLR``.

    Raises:
        BenchmarkError: naming the config and what it has instead.
    """
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    schedulers = cfg.get('param_scheduler') or []
    types = [s.get('type') for s in schedulers]
    by_epoch = any(s.get('by_epoch', True) for s in schedulers)
    if (types != ['LinearLR', 'PolyLR'] or by_epoch or 'max_iters' not in cfg.train_cfg
            or cfg.train_cfg.get('type', 'IterBasedTrainLoop') != 'IterBasedTrainLoop'):
        raise BenchmarkError(
            f'{config}: the benchmark rescales the demo schedule (IterBasedTrainLoop, an '
            f'iteration-based LinearLR warm-up, then PolyLR), but this config has schedulers '
            f'{types} (by_epoch={by_epoch}) and train_cfg {dict(cfg.train_cfg)}. Use a '
            'configs/demo/upernet_* config or one that inherits it.')
    dataset = cfg.test_dataloader.dataset.get('type')
    if dataset != 'ADE20KDataset':
        raise BenchmarkError(f'{config}: the benchmark evaluates on ADE20K-layout data with '
                             f"mmseg's ADE20KDataset, but the config's test dataset is "
                             f'{dataset!r}. Use a configs/demo/upernet_* config.')


def distils(config: str, options: Sequence[str]) -> bool:
    """Whether the student ``config``, with the ``--cfg-options`` ``options``, has a teacher
    (``model.teacher`` not ``None``); one with ``teacher=None`` does not distil, and the
    benchmark gives it no teacher checkpoint."""
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(config)
    if options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--cfg-options', nargs='+', action=DictAction)
        cfg.merge_from_dict(parser.parse_args(['--cfg-options', *options]).cfg_options)
    return cfg.model.get('teacher') is not None


def _train_stage(args, name: str, config: str, directory: Path, iters: int, extra: List[str],
                 inputs: List[Path], data_root: Path, seed: int) -> Stage:
    command = [args.python, str(TOOLS / 'train.py'), config, '--work-dir', str(directory),
               '--cfg-options', *data_options(data_root), *schedule_options(iters),
               f'randomness.seed={seed}', *extra]
    return Stage(name, command, directory / f'iter_{iters}.pth', directory, inputs)


def _eval_stage(args, trained: Stage, config: str, extra: List[str], data_root: Path,
                class_names: Sequence[str]) -> Stage:
    directory = trained.directory / 'eval'
    pred_dir = directory / 'pred'
    command = [args.python, str(TOOLS / 'test.py'), config, str(trained.output), '--work-dir',
               str(directory / 'test'), '--out', str(pred_dir), '--cfg-options',
               *data_options(data_root), *extra]

    def finish(stage: Stage) -> None:
        write_json(stage.output, evaluation(stage.log_path.read_text(), pred_dir,
                                            data_root / 'annotations' / 'validation',
                                            class_names))

    return Stage(f'{trained.name} evaluation', command, directory / 'eval.json', directory,
                 [trained.output], strict=False, finish=finish, fresh=[pred_dir])


def teacher_seed(args) -> int:
    """The teacher's seed: ``--teacher-seed``, or ``--seed`` when not given."""
    return args.seed if args.teacher_seed is None else args.teacher_seed


def plan(args, class_names: Sequence[str]) -> Dict[str, Stage]:
    """The benchmark's stages, in order: the three trainings (``teacher``, ``dense``, the
    variant), their evaluations (``<name> evaluation``) and the variant's FLOPs (``flops``).
    Each trains in its folder of the work dir (``teacher``, ``dense``, ``<variant>``); with a
    ``--seed`` other than the teacher's, the dense model and the student train in
    ``dense_seed<N>`` and ``<variant>_seed<N>`` beside the first ones, from the same teacher.

    Args:
        args: the command line of ``tools/analysis_tools/quality_benchmark.py`` (with
            ``python``, the interpreter of the subprocesses).
        class_names: the dataset's classes (PNG value ``v`` is ``class_names[v - 1]``).
    """
    if args.variant in RESERVED_NAMES or not args.variant.replace('_', '').replace(
            '-', '').isalnum():
        raise BenchmarkError(f'--variant {args.variant!r}: use letters, digits, "-" and "_", '
                             f'and none of {RESERVED_NAMES}')
    work, data_root = Path(args.work_dir).resolve(), Path(args.data_root).resolve()
    teacher = _train_stage(args, 'teacher', args.dense_config, work / 'teacher',
                           args.teacher_iters, [], [], data_root, teacher_seed(args))
    start = teacher.output
    # Runs with another seed than the teacher's train beside the first ones, in the same folder.
    suffix = '' if teacher_seed(args) == args.seed else f'_seed{args.seed}'
    dense = _train_stage(args, 'dense', args.dense_config, work / f'dense{suffix}', args.iters,
                         [f'load_from={start}'], [start], data_root, args.seed)
    student_extra = [f'model.student_checkpoint={start}', *args.student_options]
    student_inputs = [start]
    if distils(args.student_config, args.student_options):
        distill_from = dense.output if args.distill_from == 'dense' else start
        student_extra.insert(0, f'model.teacher.checkpoint={distill_from}')
        student_inputs = sorted({start, distill_from})
    student = _train_stage(args, args.variant, args.student_config,
                           work / f'{args.variant}{suffix}', args.iters, student_extra,
                           student_inputs, data_root, args.seed)
    stages = {'teacher': teacher, 'dense': dense, args.variant: student}
    for trained, config, extra in ((teacher, args.dense_config, []),
                                   (dense, args.dense_config, []),
                                   (student, args.student_config, student_extra)):
        stage = _eval_stage(args, trained, config, extra, data_root, class_names)
        stages[stage.name] = stage
    images = sorted((data_root / 'images' / 'validation').glob('*.jpg'))[:args.flops_images]
    flops_out = student.directory / 'flops.json'
    command = [args.python, str(TOOLS / 'analysis_tools' / 'get_flops.py'), args.student_config,
               '--checkpoint', str(student.output), '--shape',
               *(str(v) for v in args.flops_shape), '--images', *(str(p) for p in images),
               '--out', str(flops_out)]
    if args.student_options:
        command += ['--cfg-options', *args.student_options]
    stages['flops'] = Stage(f'{args.variant} FLOPs', command, flops_out,
                            student.directory / 'flops', [student.output], strict=False)
    return stages


def run_benchmark(args, log=print) -> dict:
    """Run (or resume) the benchmark of ``args``; print and return the report, also written to
    ``<work dir>/<variant>/report.json``."""
    from mmseg.datasets import ADE20KDataset
    data_root = Path(args.data_root).resolve()
    data = ensure_data(data_root, args.num_train, args.num_val, args.data_seed, args.size, log)
    for config in {args.dense_config, args.student_config}:
        check_config(config)
    stages = plan(args, ADE20KDataset.METAINFO['classes'])
    seconds = {name: run_stage(stage, log) for name, stage in stages.items()}
    models = {name: json.loads(stages[f'{name} evaluation'].output.read_text())
              for name in ('teacher', 'dense', args.variant)}
    distilled = any(o.startswith('model.teacher.checkpoint=')
                    for o in stages[args.variant].command)
    settings = dict(variant=args.variant, teacher_iters=args.teacher_iters, iters=args.iters,
                    seed=args.seed, teacher_seed=teacher_seed(args),
                    distill_from=args.distill_from if distilled else None, data=data,
                    dense_config=args.dense_config, student_config=args.student_config,
                    student_options=args.student_options)
    flops = flops_summary(stages['flops'].output, args.flops_shape)
    report = make_report(settings, models, flops, seconds)
    path = stages[args.variant].directory / 'report.json'
    write_json(path, report)
    log(format_report(report))
    log(f'report: {path}')
    return report
