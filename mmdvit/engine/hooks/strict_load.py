"""Refuse a ``load_from`` / resume checkpoint that does not fit the model."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from torch import nn

from ...models.checkpoint import StateDiff, diff_state_dicts, extract_state_dict
from ...models.checkpoint.classifier import detect_family
from ...models.checkpoint.fit import preview_keys
from ...registry import HOOKS


class CheckpointMismatchError(RuntimeError):
    """A checkpoint leaves model tensors missing or gives them another shape."""


@HOOKS.register_module()
class StrictLoadHook(Hook):
    """Stop the run when the checkpoint the Runner loads (``load_from``, resume, the checkpoint
    ``tools/test.py`` evaluates) leaves model tensors missing or gives them another shape.

    mmengine loads these with ``strict=False`` and only logs the differences, so an empty
    state dict, a checkpoint of another backbone or a backbone-only file would be trained on or
    evaluated silently. The hook runs on ``after_load_checkpoint``, before the weights are
    copied; the state dict it checked (unwrapped from ``{'state_dict': ...}`` /
    ``{'model': ...}``, DDP's ``module.`` stripped) is the one mmengine then loads. Checkpoint
    keys the model does not have are logged as a warning. The tools add this hook unless
    ``--allow-missing-keys`` is given.

    Args:
        role: what the checkpoint is for, for the message (``'checkpoint to evaluate'``...).
        checkpoint: its path, for the message (``None`` when mmengine picks it, as an
            automatic resume does).
    """

    priority = 'VERY_HIGH'

    def __init__(self, role: str = 'load_from checkpoint',
                 checkpoint: Optional[str] = None) -> None:
        self.role, self.checkpoint = role, checkpoint

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = checkpoint_model(runner.model)
        where = self.role + (f' {self.checkpoint!r}' if self.checkpoint else '')
        try:
            state = extract_state_dict(checkpoint)
        except ValueError as err:
            raise CheckpointMismatchError(f'{where}: {err}') from None
        if 'state_dict' not in checkpoint:  # e.g. {'model': ...}: load what was checked
            checkpoint['state_dict'] = state
        own = model.state_dict()
        diff = diff_state_dicts(own, state)
        if diff.missing or diff.misshaped:
            raise CheckpointMismatchError(
                f'{where} does not fit {type(model).__name__}: '
                f'{describe(diff, len(state), len(own))}. '
                'Use the config the checkpoint was trained with (or a checkpoint of this '
                'config), or pass --allow-missing-keys to go on with the missing tensors at '
                'their initialisation.')
        if diff.unexpected:
            print_log(f'{where}: {len(diff.unexpected)} checkpoint keys the model does not have '
                      f'are ignored: {preview_keys(diff.unexpected)}', logger='current',
                      level=30)


def checkpoint_model(model: nn.Module) -> nn.Module:
    """The model whose keys a checkpoint has: inside DDP-style wrappers and test-time
    augmentation models (``tools/test.py --tta``), which mmengine's loader also looks
    through."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def describe(diff: StateDiff, num_keys: int, num_model: int) -> str:
    """What is wrong, for the message: an empty checkpoint, the family its backbone looks like,
    the missing and the misshaped model tensors."""
    parts = ['the checkpoint holds no tensors'] if num_keys == 0 else []
    backbone = [k[len('backbone.'):] for k in diff.unexpected if k.startswith('backbone.')]
    try:
        parts.append(f'its backbone looks like {detect_family(dict.fromkeys(backbone))}')
    except ValueError:
        pass
    if diff.missing:
        parts.append(f'{len(diff.missing)} of the {num_model} model tensors are missing from it: '
                     f'{preview_keys(diff.missing)}')
    if diff.misshaped:
        parts.append(f'{len(diff.misshaped)} model tensors have another shape in it: '
                     f'{preview_keys(diff.misshaped, 4)}')
    return '; '.join(parts)
