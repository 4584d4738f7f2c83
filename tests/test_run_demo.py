"""The main demo job (tools/run_demo.sh, tools/run_demo.py): its schedule options, the stage
results it prints, skipping and resuming stages across interruptions, and the setup's filter of
pip's noise (tools/pip_noise.sed)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List

import pytest
from mmengine.config import Config, DictAction

from mmdvit.datasets import make_ade20k_demo
from test_flops import load_tool

ROOT = Path(__file__).resolve().parents[1]
demo = load_tool(str(ROOT / 'tools' / 'run_demo.py'))
DEMO_CONFIG = ROOT / 'configs/demo/upernet_dvit_swin_demo.py'
WORK_DIRS = ('upernet_swin_dense_demo', 'upernet_dvit_swin_demo', 'upernet_swin_dense_long_demo',
             'upernet_dvit_swin_whole_demo')


def with_options(options: List[str]) -> Config:
    """The dynamic demo config with ``--cfg-options`` applied as tools/train.py applies them."""
    cfg = Config.fromfile(str(DEMO_CONFIG))
    cfg.merge_from_dict({key: DictAction._parse_iterable(value)
                         for key, value in (option.split('=', 1) for option in options)})
    return cfg


def schedule(cfg: Config) -> tuple:
    warmup, poly = cfg.param_scheduler
    return (cfg.train_cfg.max_iters, warmup.begin, warmup.end, poly.begin, poly.end,
            cfg.default_hooks.checkpoint.interval, cfg.default_hooks.logger.interval)


def test_iters_300_is_the_configs_own_schedule_and_small_counts_scale_it():
    cfg = with_options([])
    assert schedule(cfg) == (300, 0, 30, 30, 300, 50, 10)
    assert demo.schedule_options(None) == []
    assert schedule(with_options(demo.schedule_options(300))) == schedule(cfg)
    assert schedule(with_options(demo.schedule_options(6))) == (6, 0, 1, 1, 6, 1, 1)
    assert schedule(with_options(demo.schedule_options(600))) == (600, 0, 60, 60, 600, 50, 10)


def test_iters_below_two_are_refused():
    with pytest.raises(SystemExit):
        demo.parse_args(['--iters', '1'])


def test_job_options_are_taken_and_the_rest_goes_to_the_dynamic_model():
    args, rest = demo.parse_args(['--fresh', '--amp', '--cfg-options', 'a.b=1', 'c=(1,2)',
                                  '--iters', '4'])
    assert args.fresh and args.iters == 4 and rest == ['--amp']
    teacher, dynamic, reference, whole = demo.build_stages(args, rest)
    assert dynamic.train_args == ('--amp', '--cfg-options', 'a.b=1', 'c=(1,2)')
    assert dynamic.eval_options == ('a.b=1', 'c=(1,2)')
    assert teacher.train_args == whole.train_args == reference.train_args == () == \
        teacher.eval_options
    command = demo.train_command(dynamic, 4, {'dense teacher': 'work_dirs/t/iter_4.pth'})
    options = command[command.index('--cfg-options') + 1:]
    assert 'model.teacher.checkpoint=work_dirs/t/iter_4.pth' in options
    assert options[-4:] == ['--amp', '--cfg-options', 'a.b=1', 'c=(1,2)']  # the user's last
    # The dense reference continues the teacher; the whole model starts from the teacher and
    # distils from the reference, trained as long as the whole model in total.
    checkpoints = {'dense teacher': 'T.pth', 'dense reference': 'R.pth'}
    assert 'load_from=T.pth' in demo.train_command(reference, None, checkpoints)
    whole_options = demo.train_command(whole, None, checkpoints)
    assert {'model.teacher.checkpoint=R.pth', 'model.student_checkpoint=T.pth'} <= set(
        whole_options)
    teacher_command = demo.train_command(teacher, 4, {})
    assert not any('model.teacher' in option for option in teacher_command)
    trained = with_options(teacher_command[teacher_command.index('--cfg-options') + 1:])
    assert trained.default_hooks.checkpoint.max_keep_ckpts == 2
    assert trained.train_cfg.val_begin > trained.train_cfg.max_iters == 4  # no validation


def test_a_stage_starts_over_when_its_training_command_or_its_teacher_changes():
    args, rest = demo.parse_args([])
    dynamic = demo.build_stages(args, rest)[1]
    teacher = {'dense teacher': 'work_dirs/t/iter_300.pth'}
    command = demo.train_command(dynamic, None, teacher)[1:]
    key = demo.stage_key(command, 'teacher-key')
    assert demo.stage_key(list(command), 'teacher-key') == key
    assert demo.stage_key(command, 'retrained-teacher-key') != key
    args, rest = demo.parse_args(['--cfg-options', 'model.student.backbone.keep_ratios=(0.9,)'])
    changed = demo.train_command(demo.build_stages(args, rest)[1], None, teacher)[1:]
    assert demo.stage_key(changed, 'teacher-key') != key
    short = {'dense teacher': 'work_dirs/t/iter_6.pth'}
    assert demo.stage_key(demo.train_command(dynamic, 6, short)[1:],
                          'teacher-key') != key


def test_stage_results_are_rounded_and_flops_given_as_speedups():
    state = {'metrics': {'aAcc': 97.80999755859375, 'mIoU': 92.38999938964844},
             'flops': {'backbone': {'dense': 0.0859, 'dynamic': 0.0430},
                       'model': {'dense': 0.305, 'dynamic': 0.164}}}
    assert demo.stage_result(state) == 'mIoU 92.39, model FLOPs 1.86x fewer (backbone 2.00x)'
    assert demo.stage_result({'metrics': {'mIoU': 74.28}}) == 'mIoU 74.28'


def test_a_stage_goes_on_only_with_its_own_command_and_a_checkpoint(tmp_path):
    checkpoint = tmp_path / 'iter_6.pth'
    assert demo.resumable({'key': 'k', 'step': 'training'}, 'k')
    assert not demo.resumable({'key': 'k', 'step': 'training'}, 'other')
    assert not demo.resumable({}, 'k')
    trained = {'key': 'k', 'step': 'trained', 'checkpoint': str(checkpoint)}
    assert not demo.resumable(trained, 'k')  # its checkpoint was deleted
    checkpoint.write_bytes(b'')
    assert demo.resumable(trained, 'k') and demo.resumable(dict(trained, step='done'), 'k')


PIP_KEPT = [
    'WARNING: Retrying (Retry(total=4, connect=None, read=None)) after connection broken',
    "WARNING: Location 'x' is ignored: it is a directory.",  # not a message pip prints
    '    WARNING: indented text is kept',
    'DEPRECATION: a real deprecation warning',
]


def test_pip_noise_filter_drops_exactly_pips_ignored_location_lines(tmp_path):
    """Real pip output: an index folder without the package and a missing find-links folder
    give both kinds of the warning; pip's errors and other lines stay."""
    (tmp_path / 'simple').mkdir()
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', '--isolated', '--disable-pip-version-check', 'download',
         '--no-deps', '-d', str(tmp_path / 'dl'), '--index-url', (tmp_path / 'simple').as_uri(),
         '--find-links', str(tmp_path / 'missing'), 'mmdvit-no-such-package==1.0'],
        capture_output=True, text=True, timeout=120)
    pip_lines = (proc.stdout + proc.stderr).splitlines()
    noise = [line for line in pip_lines if ' is ignored: ' in line]
    assert len(noise) == 2 and {line.split(': it is ')[1] for line in noise} == {
        'neither a file nor a directory.', 'either a non-existing path or lacks a specific scheme.'}
    lines = pip_lines + PIP_KEPT
    filtered = subprocess.run(['sed', '-E', '-f', str(ROOT / 'tools/pip_noise.sed')],
                              input='\n'.join(lines) + '\n', capture_output=True, text=True,
                              check=True).stdout.splitlines()
    assert filtered == [line for line in lines if line not in noise]
    assert any(line.startswith('ERROR: ') for line in filtered)


# ------------------------------------------------------------------- the job, interrupted
def interrupt(command: List[str], env: dict, when: Callable[[], bool]) -> str:
    """Run the job until ``when()`` holds, then send it SIGTERM; its console output."""
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not when() and time.monotonic() < deadline:
        time.sleep(0.1)
    running = proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert running and when(), output
    assert proc.returncode == 130, output
    return output


def finish(command: List[str], env: dict) -> str:
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def stage_line(output: str, number: int) -> str:
    return [line for line in output.splitlines() if line.startswith(f'[{number}/4] ')][-1]


def newest_run_log(work_dir: Path) -> str:
    """mmengine's log of the latest training run in ``work_dir``."""
    return sorted(work_dir.glob('2*/2*.log'))[-1].read_text()


def checkpoint_iter(work_dir: Path) -> int:
    return int(re.search(r'iter_(\d+)\.pth', (work_dir / 'last_checkpoint').read_text())[1])


@pytest.mark.slow
def test_demo_job_skips_finished_stages_and_resumes_an_interrupted_one(tmp_path):
    """Four runs of `tools/run_demo.sh --iters 6` (a checkpoint every iteration): stopped in the
    teacher's training, then in the dynamic model's training, then in the whole model's
    evaluation; each rerun skips the finished stages and resumes the interrupted one from its
    checkpoint (or, trained, only evaluates it); a fifth run only reports."""
    out = tmp_path / 'demo'
    make_ade20k_demo(str(out / 'data/demo/ade20k'), num_train=8, num_val=4, seed=0,
                     size_range=(128, 160))
    dirs = [out / 'work_dirs' / name for name in WORK_DIRS]
    command = ['bash', 'tools/run_demo.sh', '--out', str(out), '--iters', '6']
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1')

    output = interrupt(command, env, lambda: (dirs[0] / 'last_checkpoint').is_file())
    assert 'demo data: data/demo (present)' in output
    assert re.search(r'\[1/4\] dense teacher .* interrupted after \d+ s', output), output
    assert not dirs[1].exists()
    teacher_iter = checkpoint_iter(dirs[0])
    assert teacher_iter < 6

    def trained(index: int) -> bool:
        return demo.read_state(str(dirs[index])).get('step') == 'trained'

    output = interrupt(command, env, lambda: (dirs[1] / 'last_checkpoint').is_file())
    assert re.search(rf'\[1/4\] dense teacher .* resuming from iter_{teacher_iter}\.pth, \d+ s, '
                     r'mIoU \d+\.\d\d$', stage_line(output, 1)), output
    log = newest_run_log(dirs[0])
    assert f'resumed epoch: 0, iter: {teacher_iter}' in log
    assert f'Iter(train) [{teacher_iter + 1}/6]' in log and 'Iter(train) [1/6]' not in log
    assert re.search(r'\[2/4\] dynamic backbone .* interrupted', output)
    dynamic_iter = checkpoint_iter(dirs[1])
    assert dynamic_iter < 6

    output = interrupt(command, env, lambda: trained(3))
    assert 'dense teacher (configs/demo/upernet_swin_dense_demo.py) ... done before' in output
    assert re.search(rf'resuming from iter_{dynamic_iter}\.pth, \d+ s, mIoU \d+\.\d\d, model FLOPs '
                     r'\d\.\d\dx fewer \(backbone \d\.\d\dx\)$', stage_line(output, 2)), output
    assert f'resumed epoch: 0, iter: {dynamic_iter}' in newest_run_log(dirs[1])
    teacher_checkpoint = f'model.teacher.checkpoint={dirs[0]}/iter_6.pth'
    assert teacher_checkpoint in (dirs[1] / demo.LOG_FILE).read_text()
    assert re.search(r'\[3/4\] dense reference .* \d+ s, mIoU', stage_line(output, 3)), output
    assert f'load_from={dirs[0]}/iter_6.pth' in (dirs[2] / demo.LOG_FILE).read_text()
    assert re.search(r'\[4/4\] whole model .* interrupted', output)

    whole_log = (dirs[3] / demo.LOG_FILE).read_text()
    assert f'model.teacher.checkpoint={dirs[2]}/iter_6.pth' in whole_log
    assert f'model.student_checkpoint={dirs[0]}/iter_6.pth' in whole_log
    output = finish(command, env)
    new_part = (dirs[3] / demo.LOG_FILE).read_text()[len(whole_log):]
    assert 'tools/train.py' not in new_part and 'tools/test.py' in new_part, new_part[:2000]
    assert re.search(r'\[4/4\] whole model .* \d+ s, mIoU', stage_line(output, 4)), output
    assert re.search(r'whole model vs the dense reference \(trained as long\): [+-]\d+\.\d\d '
                     'mIoU', output), output
    assert '==> Demo done' in output
    for work_dir in dirs:
        state = json.loads((work_dir / demo.STATE_FILE).read_text())
        assert state['step'] == 'done' and state['checkpoint'].endswith('/iter_6.pth')

    logs = [(work_dir / demo.LOG_FILE).read_text() for work_dir in dirs]
    output = finish(command, env)
    assert [stage_line(output, i).split(' ... ')[1].startswith('done before (')
            for i in (1, 2, 3, 4)] == [True] * 4, output
    assert [(work_dir / demo.LOG_FILE).read_text() for work_dir in dirs] == logs
