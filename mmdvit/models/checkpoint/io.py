"""Checkpoint files: the one safe reader, the one atomic writer, and state-dict unwrapping.

Reading never runs code from a file and never allocates more than the file holds: the file is
checked first (:func:`~.prescan.prescan`: a PyTorch zip whose entries are stored uncompressed,
whose pickle names only the globals Runner checkpoints use, calls them only with what they
build, and declares storages its records hold), then read with
``torch.load(weights_only=True)`` and mmdvit's narrow factories for numpy values and
message-hub history (:mod:`.allowlist`). A file that fails is refused with an
:class:`UnsafeCheckpointError` or a :class:`CheckpointError` naming the file, what it was read
for and the reason. URLs are refused: nothing is downloaded at run time. Files the user trusts
load with full unpickling: ``trust=True`` (a tool's ``--trust-checkpoint`` for the file on its
command line), or the environment variable ``MMDVIT_TRUST_CHECKPOINTS`` (``1``: every file;
``FILE[:FILE...]``: those files).
"""
import os
import pickle
import tempfile
from typing import Any, BinaryIO, Callable, Dict, Optional

import torch
from mmengine.logging import print_log
from torch import Tensor

from .allowlist import RefusedCall, materialise, safe_globals
from .prescan import DeclaredSizeError, MalformedCheckpoint, RefusedGlobal, prescan

StateDict = Dict[str, Tensor]
TRUST_ENV = 'MMDVIT_TRUST_CHECKPOINTS'
OPT_IN = (f'If you trust this file, set {TRUST_ENV}=1 (every checkpoint) or '
          f'{TRUST_ENV}=FILE (this one), or pass --trust-checkpoint when it is the file on a '
          "tool's command line, to load it with full unpickling.")


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read (truncated, corrupt, not a PyTorch checkpoint, a URL,
    more data declared than held)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs what mmdvit does not unpickle: loading it could run code."""


def trusted_by_env(path: str) -> bool:
    """Whether ``MMDVIT_TRUST_CHECKPOINTS`` trusts ``path``: ``1`` / ``true`` / ``yes`` trust
    every file, otherwise it lists trusted files separated by ``os.pathsep``."""
    value = os.environ.get(TRUST_ENV, '').strip()
    if value.lower() in ('1', 'true', 'yes'):
        return True
    return any(same_file(path, listed.strip()) for listed in value.split(os.pathsep)
               if listed.strip())


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (through links; by path if one is missing)."""
    a, b = os.path.expanduser(a), os.path.expanduser(b)
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def load_checkpoint_file(path: str, role: str = 'checkpoint', map_location: Any = 'cpu',
                         trust: Optional[bool] = None) -> Any:
    """Read a local checkpoint file without running code from it.

    Args:
        path: a local file (URLs are refused: nothing is downloaded at run time).
        role: what the file is for, in the words of the error messages and the log, e.g.
            ``'teacher checkpoint'``, ``'backbone init_cfg checkpoint'``,
            ``'load_from checkpoint'``, ``'checkpoint to evaluate'``.
        map_location: as for :func:`torch.load`.
        trust: ``True`` unpickles fully (the file can run code: only for files you trust);
            ``None`` asks ``MMDVIT_TRUST_CHECKPOINTS`` (:func:`trusted_by_env`).

    Raises:
        FileNotFoundError: the file does not exist (names the role and the path).
        UnsafeCheckpointError: the file needs a global outside the allowlist, or calls one with
            arguments mmdvit does not build (names them, the role, the path and the opt-in).
        CheckpointError: a URL, a file declaring more data than it holds, or any other read
            failure (truncated or corrupt file), with the role, the path and the cause.
    """
    if '://' in path:
        raise CheckpointError(
            f'{role} {path!r} is a URL: mmdvit reads local files only and downloads nothing at '
            'run time (a downloaded checkpoint would be unpickled before any check). Download '
            'it yourself (compare its SHA-256 with the checksum its name carries, if any) and '
            'pass the local path.')
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{role} {path!r} not found: place the file there or pass the '
                                'path of an existing checkpoint.')
    if trusted_by_env(path) if trust is None else trust:
        return _load_trusted(path, role, map_location)
    with open(path, 'rb') as f:
        try:
            prescan(f)
            with torch.serialization.safe_globals(safe_globals()):
                checkpoint = torch.load(f, map_location=map_location, weights_only=True)
            return materialise(checkpoint)
        except Exception as err:  # MemoryError, RecursionError... included: all are named
            raise _refusal(role, path, err) from None


def _load_trusted(path: str, role: str, map_location: Any) -> Any:
    print_log(f'loading {role} {path!r} with full unpickling (weights_only=False): it is '
              'trusted, and can run code', logger='current', level=30)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(
            f'cannot load the trusted {role} {path!r}: unpickling it needs a module or class '
            f'that is not available here ({type(err).__name__}: {err}). Install the package it '
            'was saved with, or re-save its tensors where it loads.') from err
    except Exception as err:
        raise _read_error(role, path, err) from err


def _refusal(role: str, path: str, err: BaseException) -> CheckpointError:
    """The named error for a safe read that failed with ``err``."""
    where = f'refusing to load the {role} {path!r}'
    if isinstance(err, RefusedGlobal):
        return UnsafeCheckpointError(
            f'{where}: it needs {", ".join(err.names)}, which mmdvit does not load, because '
            f'unpickling it could run code from the file. {OPT_IN}')
    if isinstance(err, RefusedCall) or (isinstance(err, pickle.UnpicklingError)
                                        and 'is not allowed' in str(err)):
        return UnsafeCheckpointError(
            f'{where}: {_reason(err)}; an mmengine Runner checkpoint never needs it, and '
            f'building it could run code or corrupt memory. {OPT_IN}')
    if isinstance(err, DeclaredSizeError):
        return CheckpointError(
            f'{where}: {err}. A checkpoint written by torch.save holds every byte it declares, '
            'uncompressed; this one would take memory out of proportion to its size. Replace '
            'it with a copy written by torch.save.')
    return _read_error(role, path, err)


def _reason(err: BaseException) -> str:
    """The informative line of an error (torch wraps weights-only failures in boilerplate)."""
    boilerplate = ('Weights only load failed', 'Please file an issue', 'Check the documentation')
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(boilerplate)]
    return (useful or lines or [type(err).__name__])[0].split('. ')[0]


def _read_error(role: str, path: str, err: BaseException) -> CheckpointError:
    cause = str(err) if isinstance(err, MalformedCheckpoint) else (
        f'{type(err).__name__}: {_reason(err)}')
    return CheckpointError(
        f'cannot read the {role} {path!r} ({cause}). The file is '
        'truncated or corrupt (a copy or a run that was killed while writing it?) or not a '
        'PyTorch checkpoint: replace it with a complete copy.')


def write_atomic(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Write a file so that ``path`` holds either its old content or the complete new one.

    ``write`` writes into a temporary file in ``path``'s folder, which is flushed to disk and
    renamed over ``path`` (``os.replace`` is atomic within a file system). When ``write`` (or
    the disk) fails, the temporary file is removed and ``path`` is left as it was. The new
    file gets the permissions of the one it replaces (default permissions for a new one).
    """
    path = os.path.abspath(os.path.expanduser(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _mode_for(path: str) -> int:
    if os.path.exists(path):
        return os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_checkpoint_file(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` through :func:`write_atomic`."""
    write_atomic(path, lambda f: torch.save(obj, f))


def extract_state_dict(checkpoint: Any, prefix: Optional[str] = None) -> StateDict:
    """Unwrap ``{'state_dict': ...}`` / ``{'model': ...}``, strip DDP's ``module.`` and keep the
    keys under ``prefix`` (e.g. ``'backbone.'``), with the prefix removed.

    Raises:
        ValueError: when no key starts with ``prefix``.
    """
    state = checkpoint
    for wrapper in ('state_dict', 'model'):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise ValueError(f'checkpoint holds a {type(state).__name__}, not a state dict')
    state = {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state.items()}
    if prefix:
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not sub:
            some = ', '.join(list(state)[:5])
            raise ValueError(f'no checkpoint key starts with prefix {prefix!r} (keys look like: '
                             f'{some}); fix init_cfg.prefix.')
        state = sub
    return state
