"""The main demo job's stages; ``tools/run_demo.sh`` sets up ``.venv/`` and runs this.

    python tools/run_demo.py [--fresh] [--iters N] [--out DIR] [tools/train.py arguments ...]

Writes the demo data (``data/demo/``) when it is missing, then runs four stages, each printed
as one line with its time and result:

1. dense teacher: UPerNet + Swin (``configs/demo/upernet_swin_dense_demo.py``), trained and
   evaluated (``tools/test.py``);
2. dynamic backbone: UPerNet + DynamicSwin with sparsity training and distillation from the
   teacher (``configs/demo/upernet_dvit_swin_demo.py``), evaluated, its dense and dynamic FLOPs
   counted on validation images (``tools/analysis_tools/get_flops.py``);
3. dense reference: the teacher trained as many iterations more (the same config with
   ``load_from`` its checkpoint, in ``work_dirs/upernet_swin_dense_long_demo``), evaluated: the
   dense model trained as long as the whole model in total, its teacher and the model it is
   compared with;
4. whole model: the decode head sparse too, started from the teacher and distilled from the
   dense reference (``configs/demo/upernet_dvit_swin_whole_demo.py``), evaluated and counted;

and a summary. The tools' output goes to ``<work dir>/demo_stage.log``, the stage's state to
``<work dir>/demo_stage.json``. A finished stage is skipped when the job runs again; an
interrupted one resumes its training from the last checkpoint (``tools/train.py --resume``; the
demo configs save every 50 iterations, the job keeps the last two) and redoes its evaluation.
A stage starts over when its training command or the teacher changed, and every stage does
with ``--fresh``. Training does not validate: each stage evaluates its final checkpoint.

Other arguments go to the dynamic model's ``tools/train.py`` (stage 2); its ``--cfg-options``
also to that model's evaluation and FLOPs count, e.g.
``--cfg-options model.student.backbone.keep_ratios="(0.9,0.7,0.5)"``. ``--iters N`` trains every
stage N iterations instead of the configs' 300, with the warm-up and the checkpoint interval
scaled (``--iters 6`` checks the whole job in a few minutes); ``--out DIR`` puts ``data/demo/``
and ``work_dirs/`` in DIR. The tools get this checkout on ``PYTHONPATH`` and the thread count of
the environment: ``OMP_NUM_THREADS`` if set, torch's default (one thread per core) otherwise.
"""
import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

ROOT = Path(__file__).resolve().parents[1]
DATA = 'data/demo/ade20k'
STATE_FILE = 'demo_stage.json'
LOG_FILE = 'demo_stage.log'
FLOPS_SHAPE = (128, 128)  # the demo's crop size
FLOPS_IMAGES = 4  # validation images the FLOPs are averaged over
CONFIG_ITERS = 300  # the demo configs' schedule: 30 warm-up iterations, a checkpoint every 50
# Where a stage's config takes the checkpoint of an earlier stage (config key -> stage). The
# whole model trains 300 iterations from the teacher's 300: it distils from the dense reference,
# trained as long in total, not from a teacher it could pass (docs/whole_model.md).
UPSTREAM = {
    'dynamic backbone': {'model.teacher.checkpoint': 'dense teacher'},
    'dense reference': {'load_from': 'dense teacher'},
    'whole model': {'model.student_checkpoint': 'dense teacher',
                    'model.teacher.checkpoint': 'dense reference'},
}
ITER_PATTERN = re.compile(r'Iter\(train\) \[\s*(\d+)/(\d+)\]')
# Options of every stage's training: no validation (the stage evaluates its final checkpoint
# with tools/test.py; mmengine validates at the last iteration whatever val_interval is, but not
# before val_begin), the last two checkpoints kept.
TRAIN_OPTIONS = ['train_cfg.val_begin=1000000000', 'default_hooks.checkpoint.max_keep_ckpts=2']


@dataclass
class Stage:
    """One stage: train ``config`` in ``work_dir`` (relative to the output folder), evaluate
    it, and count its FLOPs if ``count_flops``."""
    name: str
    config: str
    work_dir: str
    count_flops: bool
    train_args: Tuple[str, ...] = ()  # more tools/train.py arguments
    eval_options: Tuple[str, ...] = ()  # --cfg-options of its evaluation and FLOPs count


class StageFailed(Exception):
    """A tool of a stage exited with ``returncode``."""

    def __init__(self, returncode: int) -> None:
        super().__init__(returncode)
        self.returncode = returncode


class Interrupted(Exception):
    """The job received SIGTERM."""


def parse_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    """The job's own options, and the arguments for the dynamic model's tools/train.py."""
    parser = argparse.ArgumentParser(
        description='The main demo job: dense teacher, dynamic backbone, dense reference, '
        'whole model.',
        epilog='Other arguments go to the dynamic model\'s tools/train.py.', allow_abbrev=False)
    parser.add_argument('--fresh', action='store_true',
                        help='redo every stage from the start (default: skip finished stages, '
                        'resume an interrupted one)')
    parser.add_argument('--iters', type=int,
                        help=f'train every stage this many iterations (default: the configs\' '
                        f'{CONFIG_ITERS}); warm-up and checkpoint interval scale with it')
    parser.add_argument('--out', default=str(ROOT),
                        help='folder for data/demo/ and work_dirs/ (default: the repository root)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='config overrides for the dynamic model (training, evaluation and '
                        'FLOPs count)')
    args, train_args = parser.parse_known_args(argv)
    if args.iters is not None and args.iters < 2:
        parser.error(f'--iters {args.iters}: the schedule needs at least 2 iterations '
                     '(1 of warm-up)')
    return args, train_args


def schedule_options(iters: Optional[int]) -> List[str]:
    """``--cfg-options`` that train ``iters`` iterations with the demo's schedule scaled: a
    tenth of warm-up, a checkpoint every sixth (at most every 50 iterations, as the configs)."""
    if iters is None:
        return []
    warmup = max(1, iters // 10)
    interval = min(50, max(1, iters // 6))
    return [f'train_cfg.max_iters={iters}', f'param_scheduler.0.end={warmup}',
            f'param_scheduler.1.begin={warmup}', f'param_scheduler.1.end={iters}',
            f'default_hooks.checkpoint.interval={interval}',
            f'default_hooks.logger.interval={min(10, interval)}']


def build_stages(args: argparse.Namespace, train_args: List[str]) -> List[Stage]:
    """The four stages, with the user's arguments on the dynamic model's."""
    user_options = tuple(args.cfg_options)
    extra = tuple(train_args) + (('--cfg-options', ) + user_options if user_options else ())
    return [
        Stage('dense teacher', 'configs/demo/upernet_swin_dense_demo.py',
              'work_dirs/upernet_swin_dense_demo', count_flops=False),
        Stage('dynamic backbone', 'configs/demo/upernet_dvit_swin_demo.py',
              'work_dirs/upernet_dvit_swin_demo', count_flops=True, train_args=extra,
              eval_options=user_options),
        Stage('dense reference', 'configs/demo/upernet_swin_dense_demo.py',
              'work_dirs/upernet_swin_dense_long_demo', count_flops=False),
        Stage('whole model', 'configs/demo/upernet_dvit_swin_whole_demo.py',
              'work_dirs/upernet_dvit_swin_whole_demo', count_flops=True),
    ]


def train_command(stage: Stage, iters: Optional[int], checkpoints: Dict[str, str]) -> List[str]:
    """tools/train.py for ``stage`` (without ``--resume``), with the checkpoints of the earlier
    stages it starts or distils from (``checkpoints``: stage name -> path; see
    :data:`UPSTREAM`) where its config takes them."""
    options = schedule_options(iters) + TRAIN_OPTIONS
    options += [f'{key}={checkpoints[name]}' for key, name in UPSTREAM.get(stage.name, {}).items()]
    return ([str(ROOT / 'tools/train.py'), str(ROOT / stage.config), '--work-dir', stage.work_dir,
             '--cfg-options'] + options + list(stage.train_args))


def eval_commands(stage: Stage, checkpoint: str) -> List[List[str]]:
    """tools/test.py, and get_flops.py if the stage counts FLOPs, for ``checkpoint``."""
    options = ['--cfg-options', *stage.eval_options] if stage.eval_options else []
    commands = [[str(ROOT / 'tools/test.py'), str(ROOT / stage.config), checkpoint,
                 '--work-dir', f'{stage.work_dir}/test'] + options]
    if stage.count_flops:
        images = sorted(Path(DATA, 'images/validation').glob('*.jpg'))[:FLOPS_IMAGES]
        commands.append([str(ROOT / 'tools/analysis_tools/get_flops.py'), str(ROOT / stage.config),
                         '--checkpoint', checkpoint, '--shape', *map(str, FLOPS_SHAPE),
                         '--images', *map(str, images), '--out', f'{stage.work_dir}/flops.json']
                        + options)
    return commands


def stage_key(train: List[str], upstream_key: str) -> str:
    """What a stage's results depend on: its training command and the stage it starts from."""
    return hashlib.sha1(json.dumps([train, upstream_key]).encode()).hexdigest()[:12]


def read_state(work_dir: str) -> Dict[str, Any]:
    """The stage state saved in ``work_dir`` (empty if none)."""
    path = Path(work_dir, STATE_FILE)
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # not written by this job: start the stage over
        return {}


def write_state(work_dir: str, state: Dict[str, Any]) -> None:
    """Replace the stage's state file in one step (a few bytes; the job imports no mmdvit)."""
    path = Path(work_dir, STATE_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{STATE_FILE}.tmp')
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint mmengine's ``last_checkpoint`` file names, if it exists."""
    path = Path(work_dir, 'last_checkpoint')
    name = path.read_text().strip() if path.is_file() else ''
    return name if name and Path(name).is_file() else None


def format_speedup(dense: float, dynamic: float) -> str:
    """How many times fewer FLOPs the dynamic model needs, e.g. ``1.86x``."""
    return f'{dense / dynamic:.2f}x'


def stage_result(state: Dict[str, Any]) -> str:
    """``mIoU 81.25`` and, for a counted model, ``model FLOPs 1.86x fewer (backbone 2.10x)``."""
    text = f"mIoU {state['metrics']['mIoU']:.2f}"
    flops = state.get('flops')
    if flops:
        text += (f", model FLOPs {format_speedup(**flops['model'])} fewer (backbone "
                 f"{format_speedup(**flops['backbone'])})")
    return text


def read_metrics(lines: List[str]) -> Dict[str, float]:
    """The ``metrics: {...}`` line tools/test.py prints last."""
    found = [line for line in lines if line.startswith('metrics: ')]
    if not found:
        raise ValueError('tools/test.py printed no "metrics: " line')
    return json.loads(found[-1][len('metrics: '):])


def read_flops(path: str) -> Dict[str, Dict[str, float]]:
    """Dense and dynamic GFLOPs of the backbone and the whole model from get_flops.py's JSON."""
    result = json.loads(Path(path).read_text())
    return {part: {'dense': result[part]['dense'], 'dynamic': result[part]['dynamic']}
            for part in ('backbone', 'model')}


class StatusLine:
    """A stage's line: its name now, progress in place on a terminal, its result at the end."""

    def __init__(self, prefix: str, stream: TextIO = sys.stdout) -> None:
        self.prefix, self.stream = prefix, stream
        self.tty = stream.isatty()
        self.notes: List[str] = []
        self.write(prefix)

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def note(self, text: str) -> None:
        """Part of the final line (e.g. where training resumed from), shown at once."""
        self.notes.append(text)
        self.write(f'\r{self.prefix}{", ".join(self.notes)}\033[K' if self.tty else f'{text}, ')

    def status(self, text: str) -> None:
        if self.tty:
            self.write(f'\r{self.prefix}{", ".join(self.notes + [text])}\033[K')

    def finish(self, text: str) -> None:
        self.write(f'\r{self.prefix}{", ".join(self.notes + [text])}\033[K\n' if self.tty
                   else f'{text}\n')


def tool_env() -> Dict[str, str]:
    """The tools' environment: this checkout first on PYTHONPATH, output unbuffered (it is read
    line by line), UserWarnings off unless PYTHONWARNINGS says otherwise."""
    env = dict(os.environ, PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')])))
    env.setdefault('PYTHONWARNINGS', 'ignore::UserWarning')
    return env


def shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it, for commands to copy."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def raise_interrupted(signum: int, frame: Any) -> None:
    """SIGTERM handler: unwind (run_tool stops the running tool on the way)."""
    raise Interrupted(f'signal {signum}')


def run_tool(command: List[str], log: TextIO, status: Callable[[str], None],
             what: str) -> List[str]:
    """Run a tool from the output folder with its output in ``log``; its output lines.

    Raises:
        StageFailed: when it exits with an error (after it has ended).
    """
    log.write(f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
    log.flush()
    status(what)
    lines = []
    proc = subprocess.Popen([sys.executable] + command, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=tool_env())
    try:
        for line in proc.stdout:
            log.write(line)
            lines.append(line.rstrip('\n'))
            match = ITER_PATTERN.search(line)
            if match:
                status(f'{what} {match[1]}/{match[2]}')
        proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: stop the tool before the job exits
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.flush()
    if proc.returncode != 0:
        raise StageFailed(proc.returncode)
    return lines


def resumable(saved: Dict[str, Any], key: str) -> bool:
    """Whether a stage's saved state belongs to this command and can go on: its training was
    interrupted, or it has a trained checkpoint."""
    if saved.get('key') != key:
        return False
    return saved['step'] == 'training' or Path(saved['checkpoint']).is_file()


def train(stage: Stage, command: List[str], state: Dict[str, Any], new: bool, log: TextIO,
          line: StatusLine) -> None:
    """Train ``stage`` (resuming an interrupted run unless ``new``); ``state`` gets its
    checkpoint."""
    resume_from = None if new else last_checkpoint(stage.work_dir)
    if resume_from:
        line.note(f'resuming from {Path(resume_from).name}')
    write_state(stage.work_dir, state)
    run_tool(command + (['--resume'] if resume_from else []), log, line.status, 'training')
    state.update(step='trained', checkpoint=last_checkpoint(stage.work_dir))
    write_state(stage.work_dir, state)


def evaluate(stage: Stage, state: Dict[str, Any], log: TextIO, line: StatusLine) -> None:
    """Evaluate the stage's checkpoint (and count its FLOPs); ``state`` gets the results."""
    test, *flops = eval_commands(stage, state['checkpoint'])
    state['metrics'] = read_metrics(run_tool(test, log, line.status, 'evaluating'))
    if flops:
        run_tool(flops[0], log, line.status, 'counting FLOPs')
        state['flops'] = read_flops(f'{stage.work_dir}/flops.json')


def run_stage(stage: Stage, number: str, iters: Optional[int], done: Dict[str, Dict[str, Any]],
              fresh: bool) -> Dict[str, Any]:
    """Skip, resume or run ``stage``; its final state (``key``, ``step``, ``checkpoint``,
    ``metrics``, ``flops`` if counted, ``seconds``).

    Args:
        done: the final states of the earlier stages by name, for the stages that start or
            distil from them (:data:`UPSTREAM`).
    """
    start = time.time()
    line = StatusLine(f'[{number}] {stage.name} ({stage.config}) ... ')
    sources = sorted(set(UPSTREAM.get(stage.name, {}).values()))
    command = train_command(stage, iters, {name: done[name]['checkpoint'] for name in sources})
    key = stage_key(command[1:], ','.join(done[name]['key'] for name in sources))
    saved = read_state(stage.work_dir)
    new = fresh or not resumable(saved, key)
    state = {'key': key, 'step': 'training'} if new else saved
    if state['step'] == 'done':
        line.finish(f"done before ({state['seconds']:.0f} s), {stage_result(state)}")
        return state
    if new and saved and not fresh:
        line.note('starting over (' + ('its checkpoint is gone' if saved.get('key') == key else
                                       'its command or the teacher changed') + ')')
    Path(stage.work_dir).mkdir(parents=True, exist_ok=True)
    if new:  # nothing to resume, not even an earlier run's checkpoint
        Path(stage.work_dir, 'last_checkpoint').unlink(missing_ok=True)
    try:
        with open(Path(stage.work_dir, LOG_FILE), 'w' if new else 'a', buffering=1) as log:
            if state['step'] == 'training':
                train(stage, command, state, new, log, line)
            evaluate(stage, state, log, line)
    except StageFailed:
        line.finish(f'failed after {time.time() - start:.0f} s')
        raise
    except (KeyboardInterrupt, Interrupted):
        line.finish(f'interrupted after {time.time() - start:.0f} s')
        raise
    state.update(step='done', seconds=round(time.time() - start, 1))
    write_state(stage.work_dir, state)
    line.finish(f"{state['seconds']:.0f} s, {stage_result(state)}")
    return state


def thread_note() -> str:
    """How many threads each tool computes with, and why; a hint when the machine is busy."""
    if os.environ.get('OMP_NUM_THREADS'):
        return f"{os.environ['OMP_NUM_THREADS']} thread(s) per process (OMP_NUM_THREADS)"
    import torch
    threads = torch.get_num_threads()
    note = (f"{threads} threads per process (torch's default here: one per core; set "
            'OMP_NUM_THREADS to change it)')
    load = os.getloadavg()[0]
    if threads > 1 and load >= os.cpu_count():
        note += (f'. This machine is busy (load average {load:.1f} on {os.cpu_count()} cores), '
                 'where OMP_NUM_THREADS=1 can be several times faster (README.md, Quick start)')
    return note


def write_demo_data() -> None:
    """The demo data, unless the ADE20K-layout set the stages read is there."""
    if all(Path(DATA, 'images', split).is_dir() for split in ('training', 'validation')):
        print(f'demo data: {Path(DATA).parent} (present)')
        return
    start = time.time()
    line = StatusLine(f'demo data: writing {Path(DATA).parent} ... ')
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/dataset_converters/make_demo_data.py'),
                           '--out', str(Path(DATA).parent)], capture_output=True, text=True,
                          env=tool_env())
    if proc.returncode != 0:
        line.finish('failed:')
        print(proc.stdout + proc.stderr)
        raise StageFailed(proc.returncode)
    line.finish(f'{time.time() - start:.0f} s')


def summary(stages: List[Stage], states: List[Dict[str, Any]], seconds: float) -> str:
    """Where everything is, with every model's mIoU and FLOPs."""
    width = max(len(stage.name) for stage in stages)
    lines = [f'==> Demo done in {seconds:.0f} s.']
    for stage, state in zip(stages, states):
        text = f"    {stage.name:{width}s}  mIoU {state['metrics']['mIoU']:6.2f}"
        flops = state.get('flops')
        if flops:
            model, backbone = flops['model'], flops['backbone']
            text += (f"  GFLOPs {model['dense']:.3f} -> {model['dynamic']:.3f} "
                     f"({format_speedup(**model)} fewer; backbone "
                     f"{format_speedup(**backbone)})")
        lines.append(text)
    metrics = {stage.name: state['metrics']['mIoU'] for stage, state in zip(stages, states)}
    lines.append(f"    whole model vs the dense reference (trained as long): "
                 f"{metrics['whole model'] - metrics['dense reference']:+.2f} mIoU")
    dynamic = stages[1]
    names = sorted({Path(state['checkpoint']).name for state in states})
    lines += [
        f'    GFLOPs: dense twin -> dynamic model at {FLOPS_SHAPE[0]}x{FLOPS_SHAPE[1]}, averaged '
        f'over {FLOPS_IMAGES} validation images (<work dir>/flops.json)',
        '    work dirs:      ' + ', '.join(stage.work_dir for stage in stages),
        '    checkpoints:    <work dir>/' + ', '.join(names),
        f'    logs:           <work dir>/{LOG_FILE} (the tools\' output), <work dir>/<timestamp>/ '
        '(training logs; vis_data/: scalars)',
        f'    evaluate again: {shown(Path(sys.executable))} {shown(ROOT / "tools/test.py")} '
        f'{shown(ROOT / dynamic.config)} {shown(Path(states[1]["checkpoint"]))}',
    ]
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args, train_args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupted)
    start = time.time()
    os.makedirs(args.out, exist_ok=True)
    os.chdir(args.out)
    print(f'demo: {thread_note()}; each stage\'s output: <work dir>/{LOG_FILE}')
    try:
        write_demo_data()
    except StageFailed as err:
        return err.returncode
    stages = build_stages(args, train_args)
    states: List[Dict[str, Any]] = []
    for index, stage in enumerate(stages, 1):
        try:
            states.append(run_stage(stage, f'{index}/{len(stages)}', args.iters,
                                    {s.name: state for s, state in zip(stages, states)},
                                    args.fresh))
        except StageFailed as err:
            log = Path(stage.work_dir, LOG_FILE)
            print(f'A tool of the {stage.name} stage exited with status {err.returncode}. The '
                  f'end of {log}:')
            print('\n'.join('    ' + text for text in log.read_text().splitlines()[-25:]))
            return err.returncode
        except (KeyboardInterrupt, Interrupted):
            print(f'Run the job again to go on with the {stage.name} stage (training resumes '
                  'from its last checkpoint).')
            return 130
    print(summary(stages, states, time.time() - start))
    return 0


if __name__ == '__main__':
    sys.exit(main())
