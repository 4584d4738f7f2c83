"""Loading pretrained weights into a model and saying exactly what happened."""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mmengine.logging import MMLogger, print_log
from torch import Tensor, nn

from .io import extract_state_dict, load_checkpoint_file

StateDict = Dict[str, Tensor]
# Buffers that are fixed functions of the architecture: absent from some layouts, never lost.
DERIVED_BUFFERS = ('relative_position_index', )
Converter = Callable[[StateDict], Tuple[StateDict, str, List[str]]]


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        layout: the checkpoint layout that was detected.
        loaded: keys copied into the model.
        missing: model keys the checkpoint lacks (excluding ``new_modules``).
        new_modules: model keys the checkpoint lacks that belong to modules new to the dynamic
            model (score predictors, fast paths): they keep their own initialisation.
        unexpected: checkpoint keys the model does not have.
        derived: model buffers the checkpoint lacks that are fixed functions of the
            architecture (relative position indices), so nothing is lost.
        dropped: checkpoint keys the layout converter discards on purpose (heads, buffers).
    """

    layout: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    new_modules: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    derived: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)


def load_pretrained(model: nn.Module, checkpoint: str, convert: Converter,
                    prefix: Optional[str] = None,
                    new_module_markers: Sequence[str] = ('score_predictor', 'fast_path'),
                    logger: Optional[MMLogger] = None) -> LoadReport:
    """Load ``checkpoint`` (any layout ``convert`` understands) into ``model``.

    Every key is accounted for in the log: loaded count, missing keys by name, keys of new
    sparsity modules that keep their initialisation, unexpected keys by name.

    Args:
        model: the backbone.
        checkpoint: local path (or URI mmengine can read).
        convert: maps the raw state dict to the model's layout.
        prefix: keep only keys under this prefix (e.g. ``'backbone.'``). When ``None``, every
            key starts with ``'backbone.'`` (a segmentor / detector / classifier checkpoint)
            and the model has no ``backbone`` (it is one), that prefix is stripped.
        new_module_markers: substrings that mark keys of modules new to the dynamic model.

    Raises:
        ValueError: a key's shape does not fit (names every such key), or nothing matches.
    """
    state = extract_state_dict(load_checkpoint_file(checkpoint), prefix)
    own = model.state_dict()
    if (prefix is None and state and all(k.startswith('backbone.') for k in state)
            and not any(k.startswith('backbone.') for k in own)):
        state = extract_state_dict(state, 'backbone.')
    state, layout, dropped = convert(state)
    mismatched = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state.items() if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise ValueError(f'checkpoint {checkpoint!r} ({layout} layout) does not fit '
                         f'{type(model).__name__}: shape mismatch for ' + '; '.join(mismatched) +
                         '. Check the architecture arguments (arch / embed_dims / depths / '
                         'window_size) against the checkpoint.')
    report = LoadReport(layout=layout, dropped=dropped)
    report.loaded = [k for k in state if k in own]
    report.unexpected = [k for k in state if k not in own]
    for key in own:
        if key in state:
            continue
        if any(marker in key for marker in new_module_markers):
            report.new_modules.append(key)
        elif key.endswith(DERIVED_BUFFERS):
            report.derived.append(key)
        else:
            report.missing.append(key)
    if not report.loaded:
        raise ValueError(f'no key of checkpoint {checkpoint!r} ({layout} layout) matches '
                         f'{type(model).__name__}; unexpected keys: {report.unexpected[:10]}')
    model.load_state_dict({k: state[k] for k in report.loaded}, strict=False)

    logger = logger or MMLogger.get_current_instance()
    print_log(
        f'{type(model).__name__}: loaded {len(report.loaded)}/{len(own)} tensors from '
        f'{checkpoint} ({layout} layout); {len(report.new_modules)} tensors of new sparsity '
        f'modules keep their initialisation; dropped on purpose: {report.dropped or "none"}',
        logger=logger)
    if report.missing:
        print_log(f'missing keys (left at their initialisation): {report.missing}', logger=logger,
                  level=30)
    if report.unexpected:
        print_log(f'unexpected keys (ignored): {report.unexpected}', logger=logger, level=30)
    return report
