"""How the tools' Runner reads and writes checkpoints: safely, strictly and atomically.

mmengine 0.10.7 reads checkpoints (``load_from``, ``--resume``, ``init_cfg`` of upstream
modules) through ``CheckpointLoader``: local paths with ``torch.load``'s default, URLs and
``open-mmlab://``-style names by downloading and fully unpickling them. :func:`use_safe_loader`
registers mmdvit's reader (:func:`~mmdvit.models.checkpoint.load_checkpoint_file`) for every
scheme, so that every read is checked, URLs are refused (nothing is downloaded at run time) and
errors name the file and its role; and it removes ``meta['config']``, which ``Runner.resume``
would execute as Python source. :func:`configure_checkpoints` does that, adds
:class:`~mmdvit.engine.hooks.StrictLoadHook` and switches the checkpoint hook to atomic writes.
The tools call it in ``main()``; importing this module changes nothing in mmengine.
"""
import os.path as osp
from typing import Any, Callable, Dict, Optional

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader, find_latest_checkpoint

from ..models.checkpoint import load_checkpoint_file
from .atomic_checkpoint import use_atomic_checkpoints
from .preflight import checkpoint_roles, load_from_role

STRICT_HOOK = 'mmdvit.StrictLoadHook'
# Strings of a checkpoint that mmengine evaluates: Runner.resume runs
# Config.fromstring(checkpoint['meta']['config'], '.py') (mmcv 1.x wrote the config there;
# mmengine's own Runner writes meta['cfg'], which it never evaluates).
EVALUATED_META_KEYS = ('config', )


def _key(path: str) -> str:
    return osp.abspath(osp.expanduser(path))


def drop_evaluated_strings(checkpoint: Any, role: str, path: str) -> Any:
    """Remove what mmengine would evaluate as code from ``checkpoint`` (in place), with a
    warning naming it; returns ``checkpoint``."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    for key in EVALUATED_META_KEYS if isinstance(meta, dict) else ():
        if key in meta:
            del meta[key]
            print_log(f"{role} {path!r}: removed meta[{key!r}] before mmengine reads the "
                      "checkpoint: mmengine's Runner.resume would execute it as Python source "
                      '(it only compares the GPU count of that run)', logger='current',
                      level=30)
    return checkpoint


def use_safe_loader(roles: Dict[str, str], default_role: str = 'checkpoint',
                    trusted: Callable[[str], bool] = lambda path: False) -> None:
    """Read every checkpoint mmengine loads, whatever its scheme, with mmdvit's safe reader.

    Args:
        roles: local path -> what it is for (``'load_from checkpoint'``, ``'resume
            checkpoint'``, ``'model.student.head.init_cfg.checkpoint'``...).
        default_role: the role of paths not in ``roles`` (e.g. the latest checkpoint an
            automatic resume picks).
        trusted: whether a path is to be unpickled fully (a tool's ``--trust-checkpoint``);
            other paths follow ``MMDVIT_TRUST_CHECKPOINTS``.
    """
    known = {_key(path): role for path, role in roles.items()}

    def load(filename: str, map_location: Optional[Any] = None) -> Any:
        role = known.get(_key(filename), default_role)
        checkpoint = load_checkpoint_file(filename, role, map_location=map_location,
                                          trust=True if trusted(filename) else None)
        return drop_evaluated_strings(checkpoint, role, filename)

    # '' is the local loader; the others download (http://, open-mmlab://, s3://...): the
    # reader refuses them, naming the role.
    CheckpointLoader.register_scheme(prefixes=list(CheckpointLoader._schemes), loader=load,
                                     force=True)


def run_checkpoint(cfg: Config) -> Callable[[str], bool]:
    """Whether a path is the checkpoint the run starts from: ``load_from`` (the checkpoint
    ``tools/test.py`` evaluates, the one ``--resume`` names), or with ``resume`` and no
    ``load_from`` the latest checkpoint of the work dir, which mmengine resumes from."""
    if cfg.get('load_from'):
        chosen = _key(cfg.load_from)
        return lambda path: _key(path) == chosen
    if cfg.get('resume'):

        def latest(path: str) -> bool:
            found = find_latest_checkpoint(cfg.work_dir)
            return found is not None and _key(path) == _key(found)

        return latest
    return lambda path: False


def configure_checkpoints(cfg: Config, mode: str, allow_missing_keys: bool = False,
                          trust_run_checkpoint: bool = False) -> None:
    """Set up a Runner config (in place) for safe, strict and atomic checkpoint handling.

    - checkpoints are read by :func:`use_safe_loader`, with the role of every path the config
      names; with ``trust_run_checkpoint`` the checkpoint the run starts from
      (:func:`run_checkpoint`) is unpickled fully, and no other;
    - unless ``allow_missing_keys``, a ``load_from`` / resume checkpoint that leaves model
      tensors missing or misshaped stops the run (:class:`~mmdvit.engine.hooks.StrictLoadHook`);
    - training checkpoints are written atomically (:func:`use_atomic_checkpoints`).

    Args:
        mode: ``'train'`` or ``'test'``.
    """
    role = load_from_role(cfg, mode)
    trusted = run_checkpoint(cfg) if trust_run_checkpoint else (lambda path: False)
    use_safe_loader(checkpoint_roles(cfg, mode), default_role=role, trusted=trusted)
    # A config dumped by an earlier run already names the hook, with that run's role.
    hooks = [h for h in cfg.get('custom_hooks') or [] if h.get('type') != STRICT_HOOK]
    if not allow_missing_keys:
        hooks.append(dict(type=STRICT_HOOK, role=role, checkpoint=cfg.get('load_from')))
    cfg.custom_hooks = hooks
    if mode == 'train':
        use_atomic_checkpoints(cfg)
