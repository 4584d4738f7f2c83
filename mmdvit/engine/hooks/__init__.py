"""Training hooks (registered in :data:`mmdvit.registry.HOOKS`)."""
from .freeze_pretrained import FreezePretrainedHook
from .random_state import RandomStateHook
from .strict_load import CheckpointMismatchError, StrictLoadHook

__all__ = ['CheckpointMismatchError', 'FreezePretrainedHook', 'RandomStateHook', 'StrictLoadHook']
