"""Let mmengine read its own Runner checkpoints under torch >= 2.6.

torch 2.6 made ``torch.load(..., weights_only=True)`` the default, and mmengine 0.10.7's local
loader calls ``torch.load`` without the argument. Runner checkpoints hold more than tensors
(message-hub history, numpy values, the config), so ``tools/test.py``, ``load_from`` and
``--resume`` would fail with ``UnpicklingError: Weights only load failed``.

Importing this module replaces mmengine's loader for local paths (the ``''`` scheme) with one
that tries ``weights_only=True`` first and falls back to ``weights_only=False``: full
unpickling, for checkpoint files you trust (your own training runs, release files you chose to
place under ``checkpoints/``). Remote schemes are untouched. ``tools/train.py`` and
``tools/test.py`` import it.
"""
import os
import pickle
from typing import Any, Optional

import torch
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader


def load_trusted_local(filename: str, map_location: Optional[Any] = None) -> Any:
    """Load a local checkpoint: tensors-only first, then full unpickling for trusted files.

    Raises:
        FileNotFoundError: naming the path, when the file does not exist.
    """
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename!r}')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        print_log(f'{filename} holds more than tensors (a Runner checkpoint); loading it with '
                  'weights_only=False as a trusted local file', logger='current')
        return torch.load(filename, map_location=map_location, weights_only=False)


CheckpointLoader.register_scheme(prefixes='', loader=load_trusted_local, force=True)
