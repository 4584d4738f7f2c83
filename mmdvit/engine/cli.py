"""What the tools share on the command line: the checkpoint trust option, and how a tool ends
on an error.

:func:`run_tool` runs a tool's ``main``. An error meant for the user (see :func:`user_message`:
the errors mmdvit raises with a message naming the problem and the fix, and file-system errors
naming a file) ends the process with that message on stderr and exit status 1, without a
traceback; ``--debug`` (:func:`add_debug_argument`) or ``MMDVIT_DEBUG=1`` shows the traceback.
Any other exception (a bug) keeps its traceback.
"""
import argparse
import os
import os.path as osp
import re
import sys
import time
import traceback
from typing import Any, Callable, List, Optional, Tuple

import torch.distributed as dist

from ..models.checkpoint import TRUST_ENV, CheckpointError
from .hooks.strict_load import CheckpointMismatchError
from .preflight import PreflightError

DEBUG_ENV = 'MMDVIT_DEBUG'
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# Code whose explicit ``raise`` statements carry messages written for the user.
OWN_CODE = tuple(osp.join(REPO_ROOT, folder) + osp.sep for folder in ('mmdvit', 'tools'))
DEBUG_HINT = f'(for the traceback, run again with --debug or {DEBUG_ENV}=1)'
# torch re-raises an error of a DataLoader worker with the worker's traceback as its message.
WORKER_ERROR = re.compile(r'Caught \w+ in DataLoader worker process \d+\.\nOriginal '
                          r'(Traceback \(most recent call last\):\n.*)', re.S)
TRACEBACK_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+, in .*\n(?:    (?P<code>.*))?',
                             re.M)


class ToolError(Exception):
    """A problem with a tool's command line or the files it names (printed as ``error: ...``)."""


# Errors that every process of a multi-process run meets alike (the same config and files).
SAME_ON_EVERY_RANK = (PreflightError, CheckpointError, CheckpointMismatchError, ToolError)
# Seconds a rank that leaves the message to rank 0 waits before it exits: torchrun stops the
# other processes as soon as one exits, which could stop rank 0 before it prints.
SILENT_RANK_DELAY = 2.0


def add_trust_argument(parser: argparse.ArgumentParser, which: str) -> None:
    """``--trust-checkpoint``: full unpickling for ``which`` file (the one on the command
    line), and for no other file the tool reads.

    Args:
        which: the file it trusts, in the help's words, e.g. ``'CHECKPOINT'``.
    """
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help=f'load {which} with full unpickling (weights_only=False). Only for a file you '
        'trust: unpickling can run code from the file. It trusts that file only (not a '
        f'teacher, init_cfg or other checkpoint: {TRUST_ENV}=FILE[:FILE...] trusts the files '
        f'listed, {TRUST_ENV}=1 every file). By default checkpoints load with '
        'weights_only=True, narrow factories for the values Runner checkpoints hold, and '
        'their declared sizes checked; anything else is refused.')


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """``--debug``: errors show their traceback (read by :func:`run_tool`)."""
    parser.add_argument('--debug', action='store_true',
                        help='show the traceback of an error (by default an error with a '
                        f'message for the user prints that message only; {DEBUG_ENV}=1 does '
                        'the same)')


def debug_requested(argv: List[str]) -> bool:
    """Whether ``--debug`` is among ``argv`` or ``MMDVIT_DEBUG`` is set (1 / true / yes)."""
    if os.environ.get(DEBUG_ENV, '').strip().lower() in ('1', 'true', 'yes'):
        return True
    parser = argparse.ArgumentParser(add_help=False)
    add_debug_argument(parser)
    return parser.parse_known_args(argv)[0].debug


def _is_own_raise(filename: str, code: Optional[str]) -> bool:
    """Whether a traceback's innermost frame is an explicit ``raise`` in mmdvit or its tools."""
    return (osp.abspath(filename).startswith(OWN_CODE)
            and (code or '').lstrip().startswith('raise'))


def _worker_origin(err: BaseException) -> Optional[Tuple[bool, str]]:
    """For an error torch re-raised from a DataLoader worker: (whether the worker raised it
    explicitly in mmdvit's code, the worker's message); ``None`` for any other error."""
    match = WORKER_ERROR.match(str(err))
    if match is None:
        return None
    text = match.group(1)
    frames = list(TRACEBACK_FRAME.finditer(text))
    name = re.escape(type(err).__name__)
    heads = list(re.finditer(rf'^(?:[\w.]+\.)?{name}: ', text, re.M))
    if not frames or not heads:
        return False, ''
    return (_is_own_raise(frames[-1]['file'], frames[-1]['code']),
            text[heads[-1].end():].rstrip())


def user_message(err: BaseException) -> Optional[str]:
    """The one message a tool prints for ``err``, or ``None`` for an error that keeps its
    traceback (a bug, or an upstream error without a message for the user).

    A message is printed for an exception raised by an explicit ``raise`` in mmdvit's code
    (``mmdvit/`` and ``tools/``: ``PreflightError``, ``CheckpointError``,
    ``CheckpointMismatchError``, ``DataError``, ``ToolError``, the ``ValueError`` of a bad
    argument...), also when a DataLoader worker raised it, and for a file-system error naming a
    file (``FileNotFoundError: [Errno 2] No such file or directory: 'x'``).
    """
    if not isinstance(err, Exception):
        return None
    worker = _worker_origin(err)
    if worker is not None:
        own, message = worker
    else:
        frames = traceback.extract_tb(err.__traceback__)
        own = bool(frames) and _is_own_raise(frames[-1].filename, frames[-1].line)
        message = str(err)
    if not (own or (isinstance(err, OSError) and err.filename is not None)):
        return None
    label = 'error' if isinstance(err, ToolError) else type(err).__name__
    return f'{label}: {message}'


def _rank() -> int:
    return int(os.environ.get('RANK', '0') or 0)


def _prints_here(err: BaseException) -> bool:
    """Rank 0 prints every error; another rank only one that can differ between ranks (e.g. a
    bad sample of its own data shard) once the processes run together."""
    if _rank() == 0:
        return True
    initialized = dist.is_available() and dist.is_initialized()
    return initialized and not isinstance(err, SAME_ON_EVERY_RANK)


def run_tool(main: Callable[[], Any], argv: Optional[List[str]] = None) -> None:
    """Run a tool's ``main()`` (which parses ``sys.argv``). An error with a message for the user
    (:func:`user_message`) ends the process with exit status 1 and the message on stderr
    (printed once in a multi-process run, by rank 0, unless it can differ between ranks; the
    other ranks exit :data:`SILENT_RANK_DELAY` seconds later);
    ``--debug`` in ``argv`` (default ``sys.argv[1:]``) or ``MMDVIT_DEBUG=1`` re-raises it with
    its traceback. Other exceptions propagate unchanged."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        main()
    except Exception as err:
        message = user_message(err)
        if message is None or debug_requested(argv):
            raise
        if _prints_here(err):
            prefix = f'[rank {_rank()}] ' if _rank() else ''
            print(f'{prefix}{message}\n{DEBUG_HINT}', file=sys.stderr, flush=True)
        else:
            time.sleep(SILENT_RANK_DELAY)
        sys.exit(1)
