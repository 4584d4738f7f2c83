"""The keep-ratio loss (docs/method.md, 'Losses and the published recipe')."""
from typing import Sequence

import torch
from torch import Tensor

from .decision import SparsityDecision


def keep_ratio_loss(decisions: Sequence[SparsityDecision]) -> Tensor:
    """Mean over predictors of mean over images of (kept fraction - target ratio)^2.

    Decisions without scores (``log_probs`` ``None``: nothing could be pruned, see
    :func:`~.decision.decide`) neither add a term nor dilute the mean.

    Args:
        decisions: those of a training forward (:func:`~.decision.record_decisions`); each
            ``keep_mask`` is (B, N) and carries the straight-through gradient.

    Returns:
        A scalar tensor; zero (on the masks' device) when no decision scored.

    Raises:
        ValueError: for an empty list (a model without predictors, or no forward pass yet).
    """
    if not decisions:
        raise ValueError('keep_ratio_loss got no decisions: the backbone has no score '
                         'predictors (is sparsification disabled?) or has not run forward yet.')
    scored = [d for d in decisions if d.log_probs is not None]
    if not scored:
        return decisions[0].keep_mask.new_zeros(())
    terms = [(d.keep_mask.float().mean(dim=1) - d.keep_ratio).pow(2).mean() for d in scored]
    return torch.stack(terms).mean()
