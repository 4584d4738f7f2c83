"""How a state dict fits a model: which model tensors it lacks, which have another shape, and
which of its keys the model does not have."""
from dataclasses import dataclass, field
from typing import List, Mapping

from torch import Tensor

# Buffers that are fixed functions of the architecture: absent from some layouts, never lost.
DERIVED_BUFFERS = ('relative_position_index', )


@dataclass
class StateDiff:
    """Result of :func:`diff_state_dicts`.

    Attributes:
        matched: model keys the state dict has with the model's shape.
        missing: model keys the state dict lacks (derived buffers excluded).
        misshaped: ``'key: checkpoint (shape) vs model (shape)'`` for keys of another shape.
        unexpected: state dict keys the model does not have.
    """

    matched: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    misshaped: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)


def diff_state_dicts(own: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> StateDiff:
    """Compare a model's state dict ``own`` with a checkpoint's ``state`` key by key."""
    diff = StateDiff()
    for key, value in own.items():
        if key not in state:
            if not key.endswith(DERIVED_BUFFERS):
                diff.missing.append(key)
        elif not isinstance(state[key], Tensor):
            diff.misshaped.append(f'{key}: checkpoint holds a {type(state[key]).__name__}')
        elif state[key].shape != value.shape:
            diff.misshaped.append(f'{key}: checkpoint {tuple(state[key].shape)} vs model '
                                  f'{tuple(value.shape)}')
        else:
            diff.matched.append(key)
    diff.unexpected = [key for key in state if key not in own]
    return diff


def preview_keys(keys: List[str], limit: int = 8) -> str:
    """``keys`` for a message: the first ``limit``, and how many more there are."""
    shown = ', '.join(keys[:limit])
    return shown + (f' (and {len(keys) - limit} more)' if len(keys) > limit else '')
