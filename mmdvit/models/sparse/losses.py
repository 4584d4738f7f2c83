"""The keep-ratio loss (docs/method.md, 'Losses and the published recipe')."""
from typing import Sequence

import torch
from torch import Tensor

from .decision import SparsityDecision


def keep_ratio_loss(decisions: Sequence[SparsityDecision]) -> Tensor:
    """Mean over predictors of mean over images of (kept fraction - target ratio)^2.

    Args:
        decisions: the backbone's ``sparsity_decisions`` from a training forward; each
            ``keep_mask`` is (B, N) and carries the straight-through gradient.

    Returns:
        A scalar tensor (zero when there are no decisions).
    """
    if not decisions:
        raise ValueError('keep_ratio_loss got no decisions: the backbone has no score '
                         'predictors (is sparsification disabled?) or has not run forward yet.')
    terms = [(d.keep_mask.float().mean(dim=1) - d.keep_ratio).pow(2).mean() for d in decisions]
    return torch.stack(terms).mean()
