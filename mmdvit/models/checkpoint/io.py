"""Checkpoint files: the one safe reader, the one atomic writer, and state-dict unwrapping.

Reading never runs code from a file: ``torch.load(weights_only=True)`` with an allowlist of the
plain data types that mmengine Runner checkpoints (and the OpenMMLab zoo files written by them)
hold besides tensors (:data:`RUNNER_CHECKPOINT_GLOBALS`). A file that needs anything else is
refused with an :class:`UnsafeCheckpointError` naming the file, what it was read for and the
globals it needs. Files the user trusts load with full unpickling when ``trust=True`` or the
environment variable ``MMDVIT_TRUST_CHECKPOINTS=1`` is set.
"""
import os
import pickle
import tempfile
from typing import Any, BinaryIO, Callable, Dict, List, Optional

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from torch import Tensor

StateDict = Dict[str, Tensor]
TRUST_ENV = 'MMDVIT_TRUST_CHECKPOINTS'
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
_NUMPY_DTYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                 np.uint64, np.float16, np.float32, np.float64)


def _history_buffer_method(owner: Any, name: str) -> Any:
    """``getattr`` as a Runner checkpoint uses it, and nothing else: the message hub's
    ``HistoryBuffer`` pickles its statistics methods (``min``, ``max``, ``mean``,
    ``current``) as ``getattr(HistoryBuffer, name)``. A general ``getattr`` would let a file
    reach any attribute of any object it builds, so every other use is refused."""
    if owner is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'getattr({owner!r}, {name!r}) is not allowed (only '
                                 f'HistoryBuffer.{{{",".join(HISTORY_BUFFER_STATISTICS)}}})')


# What an mmengine 0.10.7 Runner checkpoint holds besides tensors and Python containers: the
# message hub's HistoryBuffer (with its statistics methods), numpy arrays, scalars and dtypes.
# numpy >= 2 pickles as ``numpy._core``, files written with numpy 1.x name ``numpy.core``.
RUNNER_CHECKPOINT_GLOBALS: List[Any] = [
    HistoryBuffer,
    (_history_buffer_method, 'builtins.getattr'),
    np.ndarray,
    np.dtype,
    np._core.multiarray._reconstruct,
    (np._core.multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
    np._core.multiarray.scalar,
    (np._core.multiarray.scalar, 'numpy.core.multiarray.scalar'),
] + [type(np.dtype(t)) for t in _NUMPY_DTYPES]


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read (truncated, corrupt, not a PyTorch checkpoint)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs types outside the allowlist: unpickling it could run code."""


def trust_from_env() -> bool:
    """Whether ``MMDVIT_TRUST_CHECKPOINTS`` asks for full unpickling of every checkpoint."""
    return os.environ.get(TRUST_ENV, '').strip().lower() in ('1', 'true', 'yes')


def _unsafe_globals(path: str) -> List[str]:
    """The globals of ``path`` outside torch's and mmdvit's allowlists (empty if unknown)."""
    try:
        with torch.serialization.safe_globals(RUNNER_CHECKPOINT_GLOBALS):
            return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (non-zip) format or unreadable: torch's message says more
        return []


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
            ``None`` takes ``MMDVIT_TRUST_CHECKPOINTS`` from the environment.

    Raises:
        FileNotFoundError: the file does not exist (names the role and the path).
        UnsafeCheckpointError: the file needs a global outside the allowlist (names them, the
            role, the path and the opt-in).
        CheckpointError: any other read failure (truncated or corrupt file), with the path.
    """
    if '://' in path:
        raise ValueError(f'{role} {path!r} is a URL: mmdvit reads local files only (nothing is '
                         'downloaded at run time). Download it and pass the local path.')
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{role} {path!r} not found: place the file there or pass the '
                                'path of an existing checkpoint.')
    trust = trust_from_env() if trust is None else trust
    try:
        if trust:
            print_log(f'loading {role} {path!r} with full unpickling (weights_only=False): it '
                      'is trusted, and can run code', logger='current', level=30)
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(RUNNER_CHECKPOINT_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe, refusal = _unsafe_globals(path), _refusal(err)
        if not (unsafe or refusal):
            raise _read_error(role, path, err) from err
        needs = f'it needs {", ".join(unsafe)}, which' if unsafe else 'it needs a type that'
        raise UnsafeCheckpointError(
            f'refusing to load the {role} {path!r}: {needs} mmdvit does not load, because '
            f'unpickling it could run code from the file. If you trust this file, set '
            f'{TRUST_ENV}=1 (or pass --trust-checkpoint to the tools) to load it with full '
            f'unpickling. (torch: {refusal or "weights-only load failed"})') from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, AttributeError,
            ImportError) as err:
        raise _read_error(role, path, err) from err


def _reason(err: BaseException) -> str:
    """The informative line of an error (torch wraps weights-only failures in boilerplate)."""
    boilerplate = ('Weights only load failed', 'Please file an issue', 'Check the documentation')
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(boilerplate)]
    return (useful or lines or [type(err).__name__])[0].split('. ')[0]


def _refusal(err: pickle.UnpicklingError) -> Optional[str]:
    """What torch's weights-only unpickler refused (a global, a type to build), if anything."""
    reason = _reason(err)
    words = ('GLOBAL', 'Can only build', 'is not allowed')
    return reason if any(word in reason for word in words) else None


def _read_error(role: str, path: str, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f'cannot read the {role} {path!r} ({type(err).__name__}: {_reason(err)}). The file is '
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
