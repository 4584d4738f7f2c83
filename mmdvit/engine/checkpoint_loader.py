"""How the tools' Runner reads and writes checkpoints: safely, strictly and atomically.

mmengine 0.10.7 reads local checkpoints (``load_from``, ``--resume``, ``init_cfg`` of upstream
modules) with ``torch.load``'s default, which since torch 2.6 refuses Runner checkpoints (numpy
values, message-hub history). :func:`use_safe_loader` registers mmdvit's reader
(:func:`~mmdvit.models.checkpoint.load_checkpoint_file`: ``weights_only=True`` with an
allowlist) for local paths, and tells it what each path is for, so that errors name the file and
its role. :func:`configure_checkpoints` does that, adds :class:`~mmdvit.engine.hooks.StrictLoadHook`
and switches the checkpoint hook to atomic writes. The tools call it in ``main()``; importing this
module changes nothing in mmengine.
"""
import os.path as osp
from typing import Any, Dict, Optional

from mmengine.config import Config
from mmengine.runner import CheckpointLoader

from ..models.checkpoint import load_checkpoint_file
from .atomic_checkpoint import use_atomic_checkpoints
from .preflight import checkpoint_roles, load_from_role

STRICT_HOOK = 'mmdvit.StrictLoadHook'


def _key(path: str) -> str:
    return osp.abspath(osp.expanduser(path))


def use_safe_loader(roles: Dict[str, str], default_role: str = 'checkpoint') -> None:
    """Read every local checkpoint mmengine loads with mmdvit's safe reader.

    Args:
        roles: local path -> what it is for (``'load_from checkpoint'``, ``'resume
            checkpoint'``, ``'model.student.head.init_cfg.checkpoint'``...).
        default_role: the role of paths not in ``roles`` (e.g. the latest checkpoint an
            automatic resume picks).
    """
    known = {_key(path): role for path, role in roles.items()}

    def load(filename: str, map_location: Optional[Any] = None) -> Any:
        return load_checkpoint_file(filename, known.get(_key(filename), default_role),
                                    map_location=map_location)

    CheckpointLoader.register_scheme(prefixes='', loader=load, force=True)


def configure_checkpoints(cfg: Config, mode: str, allow_missing_keys: bool = False) -> None:
    """Set up a Runner config (in place) for safe, strict and atomic checkpoint handling.

    - local checkpoints are read by :func:`use_safe_loader`, with the role of every path the
      config names;
    - unless ``allow_missing_keys``, a ``load_from`` / resume checkpoint that leaves model
      tensors missing or misshaped stops the run (:class:`~mmdvit.engine.hooks.StrictLoadHook`);
    - training checkpoints are written atomically (:func:`use_atomic_checkpoints`).

    Args:
        mode: ``'train'`` or ``'test'``.
    """
    role = load_from_role(cfg, mode)
    use_safe_loader(checkpoint_roles(cfg, mode), default_role=role)
    # A config dumped by an earlier run already names the hook, with that run's role.
    hooks = [h for h in cfg.get('custom_hooks') or [] if h.get('type') != STRICT_HOOK]
    if not allow_missing_keys:
        hooks.append(dict(type=STRICT_HOOK, role=role, checkpoint=cfg.get('load_from')))
    cfg.custom_hooks = hooks
    if mode == 'train':
        use_atomic_checkpoints(cfg)
