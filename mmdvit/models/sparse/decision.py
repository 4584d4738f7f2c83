"""What a predictor decided: hard masks in training, a fixed top-k per image at inference."""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class SparsityDecision:
    """One predictor's decision in the last forward pass of a dynamic backbone.

    Attributes:
        stage: index of the backbone stage the predictor belongs to.
        index: position of the predictor among all predictors of the backbone (0-based).
        keep_ratio: the target fraction of kept positions.
        hw_shape: (H, W) of the scored feature map, N = H * W (for necks and heads: the grid
            of tiles, see :mod:`.sparse_conv`; for window decisions: the grid of windows).
        log_probs: (B, N, 2) float32 predictor output; ``[..., 0]`` is the keep score.
            ``None`` at inference when the ratio left nothing to prune and the predictor was
            skipped.
        keep_mask: (B, N) float mask, 1 = kept. Training: the straight-through Gumbel hard
            mask, which carries gradients to the predictor. Inference: built from
            ``keep_indices``, no gradient.
        order: inference only, (B, N) long: positions sorted by keep score, the first
            ``num_keep`` are kept (for nested decisions, see :func:`decide`, the pruned
            positions follow by position). ``None`` in training, and at inference when every
            position is kept or every position is pruned (nothing to sort).
        num_keep: inference only, k = int(N * keep_ratio), the same for every image.
        source: the module that decided: ``'backbone'``, or the attribute name of a head or
            neck (``'decode_head'``, ``'neck'``, ``'rpn_head'``); for those, ``stage`` is the
            pyramid level of the gated map (0 = finest) and ``index`` counts within the module.
        window_size: for window decisions (:mod:`.windows`), the side of a window in positions
            of the feature map; ``None`` when every position is decided on its own.
    """

    stage: int
    index: int
    keep_ratio: float
    hw_shape: Tuple[int, int]
    log_probs: Tensor
    keep_mask: Tensor
    order: Optional[Tensor] = None
    num_keep: Optional[int] = None
    source: str = 'backbone'
    window_size: Optional[int] = None
    _rows: Optional[Tuple[Tensor, Tensor]] = field(default=None, init=False, repr=False,
                                                   compare=False)

    def flat_rows(self) -> Tuple[Tensor, Tensor]:
        """Inference with ``0 < num_keep < N``: the rows of the kept and of the pruned
        positions in the flattened (B*N, C) tokens, ``b * N + order[b, :k]`` and
        ``b * N + order[b, k:]``, as (B*k,) and (B*(N-k),) long tensors. Computed once and
        shared by every block that reuses this decision."""
        if self.order is None or self.num_keep is None:
            raise ValueError('flat_rows needs an inference decision that keeps some positions '
                             'and prunes others (order is set)')
        if self._rows is None:
            batch, num = self.order.shape
            offsets = torch.arange(batch, device=self.order.device).unsqueeze(1) * num
            rows = self.order + offsets
            self._rows = (rows[:, :self.num_keep].reshape(-1),
                          rows[:, self.num_keep:].reshape(-1))
        return self._rows

    @property
    def keep_indices(self) -> Optional[Tensor]:
        """(B, k) indices of the kept positions at inference; ``None`` in training."""
        if self.num_keep is None:
            return None
        if self.order is None:
            batch, num = self.keep_mask.shape
            full = torch.arange(num, device=self.keep_mask.device).expand(batch, num)
            return full[:, :self.num_keep]
        return self.order[:, :self.num_keep]

    @property
    def kept_fraction(self) -> Tensor:
        """(B,) fraction of positions kept in each image."""
        return self.keep_mask.detach().float().mean(dim=1)


def num_kept(num_positions: int, keep_ratio: float) -> int:
    """k = int(N * ratio): the fixed number of positions kept per image at inference."""
    return int(num_positions * keep_ratio)


def keep_margin(log_probs: Tensor) -> Tensor:
    """The ranking score of inference: ``log p(keep) - log p(prune)`` in float32, (B, N).

    It orders positions as the keep log-probability does, but does not saturate: for a
    confident keep (logit margin above ~17) float32 ``log_softmax`` returns exactly 0 for
    ``log p(keep)``, so ranking by it would tie every such position and leave the kept set to
    the sort's tie-break.
    """
    log_probs = log_probs.float()
    return log_probs[..., 0] - log_probs[..., 1]


def rank(scores: Tensor) -> Tensor:
    """(B, N) -> (B, N) positions by descending score, equal scores in position order (a
    stable sort: the tie-break of ONNX ``TopK``, so exported graphs keep the same positions as
    PyTorch when two positions score exactly alike, e.g. identical tiles)."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def decide(log_probs: Optional[Tensor], keep_ratio: float, training: bool, stage: int,
           index: int, hw_shape: Tuple[int, int],
           previous: Optional[SparsityDecision] = None) -> SparsityDecision:
    """Turn predictor scores into a decision.

    Args:
        log_probs: (B, N, 2) predictor output over the N = H * W positions. For a nested
            decision at inference: (B, n, 2) over the n positions ``previous`` kept, in the
            order of ``previous.keep_indices``, or ``None`` when k = int(N * keep_ratio) equals
            n (nothing more to prune, the predictor need not run).
        keep_ratio: target fraction of kept positions (of all N), in (0, 1].
        training: draw a straight-through Gumbel-softmax hard mask (tau=1) if True; keep the
            top-k positions by keep score otherwise (ranked by :func:`keep_margin`).
        stage, index, hw_shape: recorded in the decision.
        previous: the decision this one nests in (plain ViTs: a pruned token never returns).
            Training: the hard mask is multiplied by ``previous.keep_mask``. Inference: only
            the positions ``previous`` kept compete, the recorded ``log_probs`` are (B, N, 2)
            with ``(-inf, 0)`` at the others, and ``order`` lists the kept positions by
            descending score, then the others by position.
    """
    if training:
        mask = F.gumbel_softmax(log_probs.float(), tau=1.0, hard=True, dim=-1)[..., 0]
        if previous is not None:
            mask = mask * previous.keep_mask
        return SparsityDecision(stage, index, keep_ratio, hw_shape, log_probs, mask)
    if previous is not None:
        return _decide_nested(log_probs, keep_ratio, stage, index, hw_shape, previous)
    batch, num = log_probs.shape[:2]
    k = num_kept(num, keep_ratio)
    if k in (0, num):
        mask = log_probs.new_full((batch, num), float(k == num), dtype=torch.float32)
        return SparsityDecision(stage, index, keep_ratio, hw_shape, log_probs, mask, None, k)
    order = rank(keep_margin(log_probs))
    mask = torch.zeros(batch, num, device=log_probs.device).scatter_(1, order[:, :k], 1.0)
    return SparsityDecision(stage, index, keep_ratio, hw_shape, log_probs, mask, order, k)


def _decide_nested(log_probs: Optional[Tensor], keep_ratio: float, stage: int, index: int,
                   hw_shape: Tuple[int, int], previous: SparsityDecision) -> SparsityDecision:
    """Inference part of :func:`decide` for a decision nested in ``previous``."""
    present = previous.keep_indices
    batch, num = previous.keep_mask.shape
    k = num_kept(num, keep_ratio)
    if k > present.shape[1]:
        raise ValueError(f'a nested decision cannot keep {k} of {num} positions: the previous '
                         f'one kept {present.shape[1]} (keep ratios must not increase)')
    full_log_probs = None
    kept = present
    if log_probs is not None:
        if log_probs.shape[1] != present.shape[1]:
            raise ValueError(f'nested decision: scores for {log_probs.shape[1]} positions, '
                             f'but the previous decision kept {present.shape[1]}')
        top = rank(keep_margin(log_probs))[:, :k]
        kept = present.gather(1, top)
        full_log_probs = log_probs.new_tensor([float('-inf'), 0.0]).repeat(batch, num, 1)
        full_log_probs = full_log_probs.scatter(1, present.unsqueeze(-1).expand(-1, -1, 2),
                                                log_probs)
    elif k != present.shape[1]:
        raise ValueError('a nested decision that prunes needs scores (log_probs is None)')
    mask = torch.zeros(batch, num, device=present.device).scatter_(1, kept, 1.0)
    rest = torch.sort(mask, dim=1, stable=True).indices[:, :num - k]
    return SparsityDecision(stage, index, keep_ratio, hw_shape, full_log_probs, mask,
                            torch.cat([kept, rest], dim=1), k)


def sparse_children(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The children of a model that decide (``backbone``, ``neck``, ``decode_head``,
    ``rpn_head`` ...: those with a ``sparsity_decisions`` list), in the model's order."""
    return [(name, child) for name, child in model.named_children()
            if isinstance(getattr(child, 'sparsity_decisions', None), list)]


def model_decisions(model: nn.Module) -> List[SparsityDecision]:
    """Every decision of the model's last forward pass: the backbone's, then the necks' and
    heads' (see :func:`sparse_children`)."""
    return [d for _, child in sparse_children(model) for d in child.sparsity_decisions]


def decision_label(decision: SparsityDecision) -> str:
    """A short unique name: ``'<index>'`` for backbone predictors (forward order), else
    ``'<source>.<index>'`` (e.g. ``'decode_head.1'``)."""
    if decision.source == 'backbone':
        return str(decision.index)
    return f'{decision.source}.{decision.index}'
