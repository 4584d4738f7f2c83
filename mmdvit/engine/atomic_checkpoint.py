"""Training checkpoints written atomically: a run killed while saving never leaves a torn
``iter_N.pth``.

mmengine's ``CheckpointHook`` saves through ``Runner.save_checkpoint`` ->
``mmengine.runner.save_checkpoint``, which serialises the checkpoint in memory and hands the bytes
to the file backend of the hook's ``backend_args``. :class:`AtomicLocalBackend` is mmengine's
local backend whose ``put`` and ``put_text`` (``last_checkpoint``) write through
:func:`~mmdvit.models.checkpoint.write_atomic` (a temporary file ``.<name>.<8 characters>.tmp``
in the same folder, flushed and renamed into place; a hard kill can leave it behind, and
``tools/train.py`` removes such leftovers at the next start, see :mod:`mmdvit.engine.resume`).
"""
from pathlib import Path
from typing import Union

from mmengine.config import Config
from mmengine.fileio import LocalBackend, register_backend

from ..models.checkpoint import write_atomic

BACKEND_NAME = 'mmdvit_atomic_local'


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` with atomic ``put``: the target holds either its old
    content or the complete new one, and a failed write leaves no temporary file."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        write_atomic(str(filepath), lambda f: f.write(obj))

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


def use_atomic_checkpoints(cfg: Config) -> bool:
    """Make the config's ``default_hooks.checkpoint`` write through :class:`AtomicLocalBackend`
    (registered with mmengine's file backends under ``'mmdvit_atomic_local'``).

    A hook that already has ``backend_args`` / ``file_client_args`` (remote storage) or a remote
    ``out_dir`` is left as configured. Returns whether the hook now writes atomically.
    """
    register_backend(BACKEND_NAME, AtomicLocalBackend, force=True)
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook:
        return False
    if hook.get('backend_args') or hook.get('file_client_args'):
        return (hook.get('backend_args') or {}).get('backend') == BACKEND_NAME
    if '://' in str(hook.get('out_dir') or ''):
        return False
    hook['backend_args'] = dict(backend=BACKEND_NAME)
    return True
