"""Training hooks (registered in :data:`mmdvit.registry.HOOKS`)."""
from .freeze_pretrained import FreezePretrainedHook

__all__ = ['FreezePretrainedHook']
