"""What marks the modules that decide (dynamic backbones, necks and heads)."""
from typing import List, Tuple

from torch import nn

from .gate import SparseConvGate


class SparseModule:
    """Mixin of the modules whose forward makes sparsity decisions: mmdvit's dynamic
    backbones, necks and heads (:func:`sparse_children` finds them by it). Their decisions
    come out through :func:`~.decision.record_decisions`."""

    @property
    def keep_ratios(self) -> List[float]:
        """Target keep ratio of every decision of a forward pass, in forward order: per
        predictor of a backbone's ``schedule``; per :class:`~.gate.SparseConvGate` of a neck
        or head (in module order, which is their forward order)."""
        schedule = getattr(self, 'schedule', None)
        if schedule is not None:
            return [r for sched in schedule.values() for r in sched.keep_ratios]
        return [m.keep_ratio for m in self.modules() if isinstance(m, SparseConvGate)]


def sparse_children(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The children of a model that decide (``backbone``, ``neck``, ``decode_head``,
    ``rpn_head`` ...: the :class:`SparseModule` ones), in the model's order."""
    return [(name, child) for name, child in model.named_children()
            if isinstance(child, SparseModule)]
