"""How the tools end on an error (mmdvit/engine/cli.py): an error mmdvit raises with a message
for the user prints as that one message on stderr with exit status 1 and no traceback (also
when a DataLoader worker raised it), unless --debug or MMDVIT_DEBUG=1 asks for the traceback;
any other exception keeps its traceback; in a multi-process run other ranks stay silent about
an error every rank meets alike. Through the tools as users run them, too."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config
from torch.utils.data import DataLoader, Dataset

from mmdvit.engine.cli import DEBUG_ENV, DEBUG_HINT, run_tool, user_message
from mmdvit.engine.data_checks import DataError, check_not_empty
from mmdvit.engine.preflight import PreflightError, check_checkpoints

ROOT = Path(__file__).resolve().parents[1]
MISSING = '/nonexistent/model.pth'


def missing_checkpoint() -> None:
    """A tool's main that stops in the pre-flight (a missing load_from checkpoint)."""
    check_checkpoints(Config(dict(model=dict(), load_from=MISSING)), 'train')


def ended(main, argv=(), capsys=None):
    """(exit status, stderr) of ``run_tool(main)``."""
    with pytest.raises(SystemExit) as info:
        run_tool(main, list(argv))
    return info.value.code, capsys.readouterr().err


@pytest.fixture(autouse=True)
def no_debug_env(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.delenv('RANK', raising=False)


def test_an_mmdvit_error_prints_one_message_and_exits_1(capsys):
    code, err = ended(missing_checkpoint, capsys=capsys)
    assert code == 1
    assert err == (f"PreflightError: load_from checkpoint '{MISSING}' not found. Nothing is "
                   'downloaded at run time: place the file there (docs/checkpoints.md, "Weight '
                   'files the configs expect", lists every file and where to download it), or '
                   f'point the config elsewhere with --cfg-options load_from=PATH.\n'
                   f'{DEBUG_HINT}\n')


@pytest.mark.parametrize('how', ['--debug', DEBUG_ENV])
def test_debug_shows_the_traceback(how, monkeypatch):
    if how == DEBUG_ENV:
        monkeypatch.setenv(DEBUG_ENV, '1')
    with pytest.raises(PreflightError, match='load_from checkpoint'):
        run_tool(missing_checkpoint, ['--debug'] if how == '--debug' else ['--other'])


def test_a_bug_keeps_its_traceback():
    """Exceptions not raised by an explicit ``raise`` in mmdvit's code propagate unchanged:
    one of Python's own, and a ValueError raised elsewhere (here, in the test)."""
    with pytest.raises(ZeroDivisionError):
        run_tool(lambda: 1 / 0, [])

    def elsewhere():
        raise ValueError('not mmdvit')

    with pytest.raises(ValueError, match='not mmdvit'):
        run_tool(elsewhere, [])
    assert user_message(KeyError('x')) is None  # never raised: no traceback to judge by


def test_a_missing_file_is_one_message(tmp_path, capsys):
    code, err = ended(lambda: open(tmp_path / 'absent.py'), capsys=capsys)
    assert code == 1
    assert err.splitlines()[0] == ("FileNotFoundError: [Errno 2] No such file or directory: "
                                   f"'{tmp_path / 'absent.py'}'")


class EmptyFolders(Dataset):
    """Every sample checks an empty folder: mmdvit's data check raises a DataError."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        check_not_empty(self.folder)
        return index


def test_an_error_of_a_dataloader_worker_prints_the_worker_message(tmp_path, capsys):
    with pytest.raises(DataError) as direct:
        check_not_empty(str(tmp_path))
    code, err = ended(lambda: list(DataLoader(EmptyFolders(str(tmp_path)), num_workers=1)),
                      capsys=capsys)
    assert code == 1
    assert err == f'DataError: {direct.value}\n{DEBUG_HINT}\n'
    assert 'Traceback' not in err and 'worker process' not in err


def test_other_ranks_stay_silent_about_an_error_every_rank_meets(monkeypatch, capsys):
    monkeypatch.setenv('RANK', '1')
    code, err = ended(missing_checkpoint, capsys=capsys)
    assert code == 1 and err == ''


def tool(args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    return subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                          env=dict(env, PYTHONWARNINGS='ignore'), timeout=600)


def test_the_tools_print_one_message_unless_asked_for_the_traceback(tmp_path):
    """tools/test.py on the demo config without its data and with a missing checkpoint: the
    pre-flight's problems, one message, exit status 1; --debug (which the tool's parser
    accepts) adds the traceback."""
    args = ['tools/test.py', 'configs/demo/upernet_dvit_swin_demo.py', MISSING, '--work-dir',
            str(tmp_path), '--cfg-options', f'test_dataloader.dataset.data_root={tmp_path}/no']
    plain = tool(args)
    assert plain.returncode == 1, plain.stderr[-3000:]
    assert plain.stderr.startswith('PreflightError: 2 problems in the config, each with its '
                                   'fix:\n  1. test_dataloader.dataset.data_root: ')
    assert f"\n  2. checkpoint to evaluate '{MISSING}' not found." in plain.stderr
    assert plain.stderr.endswith(f'{DEBUG_HINT}\n') and 'Traceback' not in plain.stderr
    assert 'metrics:' not in plain.stdout
    debug = tool(args + ['--debug'])
    assert debug.returncode == 1
    assert 'Traceback (most recent call last)' in debug.stderr
    assert 'mmdvit.engine.preflight.PreflightError: 2 problems' in debug.stderr


def test_the_onnx_export_tool_error_is_one_line(tmp_path):
    out = tmp_path / 'x.onnx'
    out.write_text('')
    proc = tool(['tools/deployment/pytorch2onnx.py', 'swin-test', '--out', str(out)])
    assert proc.returncode == 1
    assert proc.stderr == (f'error: --out {out} exists: pass --force to replace it, or choose '
                           f'another file.\n{DEBUG_HINT}\n')
