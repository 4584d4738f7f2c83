"""Reading checkpoint files into plain state dicts."""
import os
import pickle
from typing import Any, Dict, Optional

import torch
from torch import Tensor

StateDict = Dict[str, Tensor]


def load_checkpoint_file(path: str) -> Any:
    """Load a checkpoint file onto the CPU.

    Local files are read with ``weights_only=True`` first; files that hold more than tensors
    (mmengine Runner checkpoints keep numpy values and message-hub history) are then read with
    ``weights_only=False``. Only load local checkpoints you trust. Remote URIs go through
    mmengine's ``CheckpointLoader``.

    Raises:
        FileNotFoundError: naming the path, when a local file does not exist.
    """
    if '://' in path:
        from mmengine.runner import CheckpointLoader
        return CheckpointLoader.load_checkpoint(path, map_location='cpu')
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'checkpoint file not found: {path!r}. Nothing is downloaded at run time: place the '
            f'file there or point the config (init_cfg.checkpoint / load_from) at a local copy.')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError:
        return torch.load(path, map_location='cpu', weights_only=False)


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
