"""Loading pretrained weights into a model and saying exactly what happened."""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mmengine.logging import MMLogger, print_log
from torch import Tensor, nn

from .classifier import detect_family
from .fit import DERIVED_BUFFERS, diff_state_dicts, preview_keys
from .io import extract_state_dict, load_checkpoint_file

StateDict = Dict[str, Tensor]
Converter = Callable[[StateDict], Tuple[StateDict, str, List[str]]]
# Key substrings of the modules a dynamic model adds to its dense counterpart (score
# predictors, fast paths): a dense checkpoint lacks them by design.
NEW_MODULE_MARKERS = ('score_predictor', 'fast_path')


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
                    new_module_markers: Sequence[str] = NEW_MODULE_MARKERS,
                    logger: Optional[MMLogger] = None,
                    role: str = 'backbone init_cfg checkpoint') -> LoadReport:
    """Load ``checkpoint`` (any layout ``convert`` understands) into ``model``.

    Every key is accounted for in the log: loaded count, missing keys by name, keys of new
    sparsity modules that keep their initialisation, unexpected keys by name.

    Args:
        model: the backbone.
        checkpoint: local path.
        convert: maps the raw state dict to the model's layout.
        prefix: keep only keys under this prefix (e.g. ``'backbone.'``). When ``None``, every
            key starts with ``'backbone.'`` (a segmentor / detector / classifier checkpoint)
            and the model has no ``backbone`` (it is one), that prefix is stripped.
        new_module_markers: substrings that mark keys of modules new to the dynamic model.
        role: what the file is for, in messages and the log (e.g. ``'teacher checkpoint'``).

    Raises:
        ValueError: the layout is not recognised, a key's shape does not fit (names every such
            key), or no tensor outside the new sparsity modules matches (a checkpoint of
            another model); each names the file, its role and the detected layout.
    """
    state = extract_state_dict(load_checkpoint_file(checkpoint, role), prefix)
    own = model.state_dict()
    if (prefix is None and state and all(k.startswith('backbone.') for k in state)
            and not any(k.startswith('backbone.') for k in own)):
        state = extract_state_dict(state, 'backbone.')
    where = f'{role} {checkpoint!r}'
    try:
        state, layout, dropped = convert(state)
    except ValueError as err:
        raise ValueError(f'{where}{_looks_like(state)}: {err}') from None
    diff = diff_state_dicts(own, state)
    if diff.misshaped:
        raise ValueError(f'{where} ({layout} layout) does not fit {type(model).__name__}: shape '
                         'mismatch for ' + '; '.join(diff.misshaped) + '. Check the '
                         'architecture arguments (arch / embed_dims / depths / window_size) '
                         'against the checkpoint.')
    report = LoadReport(layout=layout, dropped=dropped, loaded=diff.matched,
                        unexpected=diff.unexpected)
    for key in diff.missing:
        is_new = any(marker in key for marker in new_module_markers)
        (report.new_modules if is_new else report.missing).append(key)
    report.derived = [k for k in own if k not in state and k.endswith(DERIVED_BUFFERS)]
    dense = [k for k in report.loaded if not any(marker in k for marker in new_module_markers)]
    if not dense:
        raise ValueError(
            f'{where} ({layout} layout{_looks_like(state)}) fits none of the '
            f'dense tensors of {type(model).__name__} (only {len(report.loaded)} tensors of '
            f'the new sparsity modules match); checkpoint keys look like: '
            f'{preview_keys(report.unexpected, 5)}. Give a checkpoint of this model family (or the '
            'right init_cfg.prefix).')
    model.load_state_dict({k: state[k] for k in report.loaded}, strict=False)

    logger = logger or MMLogger.get_current_instance()
    print_log(
        f'{role}: {type(model).__name__} loaded {len(report.loaded)}/{len(own)} tensors from '
        f'{checkpoint} ({layout} layout); {len(report.new_modules)} tensors of new sparsity '
        f'modules keep their initialisation; dropped on purpose: {report.dropped or "none"}',
        logger=logger)
    if report.missing:
        print_log(f'missing keys (left at their initialisation): {report.missing}', logger=logger,
                  level=30)
    if report.unexpected:
        print_log(f'unexpected keys (ignored): {report.unexpected}', logger=logger, level=30)
    return report


def _looks_like(state: StateDict) -> str:
    """``', looks like a ConvNeXt checkpoint'`` when the keys tell the model family."""
    try:
        family = detect_family(state)
    except ValueError:
        return ''
    return ', looks like a ' + {'swin': 'Swin', 'convnext': 'ConvNeXt',
                                'vit': 'ViT / DeiT'}[family] + ' checkpoint'
