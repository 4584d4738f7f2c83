"""What a predictor decided: hard masks in training, a fixed top-k per image at inference; and
the channel that hands decisions out (:func:`record_decisions`)."""
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .accelerator import is_tracing, uses_accelerator_path
from .gather import batch_offsets, pruned_log_probs

# What decide() scores from: the (B, n, 2) log-probabilities, or a function computing them,
# called only when the decision can prune (needs_scores).
Scores = Union[Tensor, Callable[[], Tensor]]
# What a predictor producing NaN / Inf scores at inference does (check_finite_scores).
NONFINITE_ENV = 'MMDVIT_NONFINITE_SCORES'
NONFINITE_MODES = ('error', 'warn', 'off')
_warned_nonfinite: Set[str] = set()
# The lists of the recorders open now (record_decisions), in the order they were opened.
_RECORDERS: List[List['SparsityDecision']] = []
# Open keep_everything() contexts (a count, so that they nest).
_KEEP_EVERYTHING = [0]


@dataclass(frozen=True)
class SparsityDecision:
    """One predictor's decision in a forward pass: a value, never changed once built.

    :func:`decide` builds it through :meth:`for_training`, :meth:`for_inference` or
    :meth:`keep_all`; a decision derived from another (e.g.
    :func:`~.windows.shifted_decision`) is built with ``dataclasses.replace``.

    Attributes:
        stage: index of the backbone stage the predictor belongs to.
        index: position of the predictor among all predictors of the backbone (0-based).
        keep_ratio: the target fraction of kept positions.
        hw_shape: (H, W) of the scored feature map, N = H * W (for necks and heads: the grid
            of tiles, see :mod:`.sparse_conv`; for window decisions: the grid of windows).
        log_probs: (B, N, 2) float32 predictor output; ``[..., 0]`` is the keep score.
            ``None`` when the decision could prune nothing and the predictor was skipped
            (:func:`needs_scores`; keep ratio 1.0, in training and at inference).
        keep_mask: (B, N) float mask, 1 = kept. Training: the straight-through Gumbel hard
            mask, which carries gradients to the predictor. Inference, and decisions that
            could prune nothing: built from ``keep_indices``, no gradient; an inference
            decision given ``keep_mask=None`` builds it from ``order`` when it is first read
            (the sparse paths route by ``order`` and do not read it).
        order: inference only, (B, N) long: positions sorted by keep score, the first
            ``num_keep`` are kept (for nested decisions, see :func:`decide`, the pruned
            positions follow by position). ``None`` in training and when every position is
            kept (nothing to sort).
        num_keep: k = :func:`num_kept` (N, keep_ratio), the same for every image: set at
            inference, and in both modes when the decision could prune nothing (k = N);
            ``None`` for a training decision that may prune.
        source: the module that decided: ``'backbone'``, or the attribute name of a head or
            neck (``'decode_head'``, ``'neck'``, ``'rpn_head'``); for those, ``stage`` is the
            pyramid level of the gated map (0 = finest) and ``index`` counts within the module.
        window_size: for window decisions (:mod:`.windows`), the side of a window in positions
            of the feature map; ``None`` when every position is decided on its own.
        margin: inference, set by :func:`decide` for a decision that is not nested: the
            (B, N) :func:`keep_margin` of ``log_probs`` it ranked by (detached), which
            :func:`~.windows.shifted_decision` reuses; ``None`` otherwise.
        slots: inference, set by :func:`decide` for a nested decision that ranked scores:
            (B, k) long, the places of its kept positions among the candidates
            (``previous.keep_indices``), in the order of ``keep_indices``, which
            :func:`~.routing.drop_pruned` gathers by; ``None`` otherwise.
    """

    stage: int
    index: int
    keep_ratio: float
    hw_shape: Tuple[int, int]
    log_probs: Optional[Tensor]
    keep_mask: Optional[Tensor]
    order: Optional[Tensor] = None
    num_keep: Optional[int] = None
    source: str = 'backbone'
    window_size: Optional[int] = None
    margin: Optional[Tensor] = field(default=None, repr=False, compare=False)
    slots: Optional[Tensor] = field(default=None, repr=False, compare=False)

    @classmethod
    def for_training(cls, log_probs: Tensor, keep_mask: Tensor,
                     **where: Any) -> 'SparsityDecision':
        """A training decision that may prune: ``log_probs`` (B, N, 2), ``keep_mask`` (B, N)
        the straight-through hard mask; ``order`` and ``num_keep`` are ``None``.

        ``where``: the fields that name the predictor (``stage``, ``index``, ``keep_ratio``,
        ``hw_shape``, and optionally ``source``, ``window_size``)."""
        return cls(log_probs=log_probs, keep_mask=keep_mask, **where)

    @classmethod
    def for_inference(cls, log_probs: Optional[Tensor], keep_mask: Optional[Tensor],
                      order: Tensor, num_keep: int, **where: Any) -> 'SparsityDecision':
        """An inference decision keeping ``order[:, :num_keep]`` (B, k) of the N positions:
        ``keep_mask`` (B, N) marks them (``None``: built when first read); ``log_probs``
        (B, N, 2) or ``None`` (a nested decision that kept what the previous one kept without
        scores). ``where``: as :meth:`for_training`, and optionally ``margin``, ``slots``."""
        return cls(log_probs=log_probs, keep_mask=keep_mask, order=order, num_keep=num_keep,
                   **where)

    @classmethod
    def keep_all(cls, batch: int, device: torch.device, **where: Any) -> 'SparsityDecision':
        """The decision that keeps all N = H * W positions of each of ``batch`` images without
        scores (either mode): ``keep_mask`` (B, N) ones on ``device``, ``num_keep`` N,
        ``log_probs`` and ``order`` ``None``. ``where``: as :meth:`for_training`."""
        num = where['hw_shape'][0] * where['hw_shape'][1]
        return cls(log_probs=None, keep_mask=torch.ones(batch, num, device=device),
                   num_keep=num, **where)

    def flat_rows(self) -> Tuple[Tensor, Tensor]:
        """Inference with ``0 < num_keep < N``: the rows of the kept and of the pruned
        positions in the flattened (B*N, C) tokens, ``b * N + order[b, :k]`` and
        ``b * N + order[b, k:]``, as (B*k,) and (B*(N-k),) long tensors: the two parts of
        :meth:`flat_order`. Computed once and shared by every block that reuses this
        decision."""
        rows = self.__dict__.get('_flat_rows')
        if rows is None:
            both, kept = self.flat_order(), self.order.shape[0] * self.num_keep
            rows = (both[:kept], both[kept:])
            self.__dict__['_flat_rows'] = rows
        return rows

    def flat_order(self) -> Tensor:
        """Inference with ``0 < num_keep < N``: (B*N,) long, the rows of the kept positions of
        every image in the flattened (B*N, C) tokens, then those of the pruned ones (what
        one gather reads for both paths). Computed once, as :meth:`flat_rows`."""
        if self.order is None or self.num_keep is None:
            raise ValueError('flat_rows / flat_order need an inference decision that keeps some '
                             'positions and prunes others (order is set)')
        # Derived from the fields and cached on the instance, as functools.cached_property
        # does (whose lock in Python 3.11 breaks the torch.compile graph).
        both = self.__dict__.get('_flat_order')
        if both is None:
            index = self.order + batch_offsets(*self.order.shape, self.order.device)
            k = self.num_keep
            both = (index.view(-1) if index.shape[0] == 1  # already kept first
                    else torch.cat([index[:, :k].reshape(-1), index[:, k:].reshape(-1)]))
            self.__dict__['_flat_order'] = both
        return both

    @property
    def keep_indices(self) -> Optional[Tensor]:
        """(B, k) indices of the kept positions; ``None`` for a training decision that may
        prune."""
        if self.num_keep is None:
            return None
        if self.order is None:
            batch, num = self.keep_mask.shape  # type: ignore[union-attr]
            full = torch.arange(num, device=self.keep_mask.device).expand(batch, num)
            return full[:, :self.num_keep]
        return self.order[:, :self.num_keep]

    @property
    def kept_fraction(self) -> Tensor:
        """(B,) fraction of positions kept in each image."""
        return self.keep_mask.detach().float().mean(dim=1)  # type: ignore[union-attr]


def _keep_mask(decision: SparsityDecision) -> Tensor:
    """The ``keep_mask`` given to the constructor or, for ``None``, the (B, N) mask of
    ``order[:, :num_keep]``, built on the first read and cached on the instance (as
    :meth:`SparsityDecision.flat_rows`)."""
    mask = decision.__dict__['keep_mask']
    if mask is not None:
        return mask
    mask = decision.__dict__.get('_built_keep_mask')
    if mask is None:
        if decision.order is None or decision.num_keep is None:
            raise ValueError('a decision given keep_mask=None needs order and num_keep')
        mask = torch.zeros(decision.order.shape, device=decision.order.device)
        mask = mask.scatter_(1, decision.order[:, :decision.num_keep], 1.0)
        decision.__dict__['_built_keep_mask'] = mask
    return mask


def _init_keep_mask(decision: SparsityDecision, mask: Optional[Tensor]) -> None:
    decision.__dict__['keep_mask'] = mask


# Set after the class is built, so that the dataclass keeps ``keep_mask`` as an argument
# without a default; its constructor is the only writer (the frozen class refuses assignments).
SparsityDecision.keep_mask = property(  # type: ignore[assignment]
    _keep_mask, _init_keep_mask, doc='(B, N) float keep mask, see the class docstring.')


def num_kept(num_positions: int, keep_ratio: float) -> int:
    """k, the fixed number of positions kept per image at inference: ``int(N * ratio)``, but at
    least one position of a non-empty map (``max(1, int(N * ratio))``, and 0 for N = 0).

    So a small map (1x1, 2x2) is never pruned whole at inference while training keeps about
    ``ratio`` of it.
    """
    return min(num_positions, max(1, int(num_positions * keep_ratio)))


def keep_margin(log_probs: Tensor) -> Tensor:
    """The ranking score of inference: ``log p(keep) - log p(prune)`` in float32, (B, N).

    It orders positions as ``log p(keep)`` does without saturating: float32 ``log_softmax``
    returns exactly 0 for every confident keep, which would tie them.
    """
    log_probs = log_probs.float()
    return log_probs[..., 0] - log_probs[..., 1]


def rank(scores: Tensor) -> Tensor:
    """(B, N) -> (B, N) positions by descending score, equal scores in position order (a
    stable sort: the tie-break of ONNX ``TopK``, so exported graphs keep the same positions as
    PyTorch when two positions score exactly alike, e.g. identical tiles)."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def predictor_name(source: str, stage: int, index: int) -> str:
    """How messages name a predictor: ``'backbone predictor 2 (stage 2)'``,
    ``'decode_head gate 1 (level 0)'`` (``'sparse conv gate 0 (level 0)'`` for a gate without
    an owner)."""
    if source == 'backbone':
        return f'backbone predictor {index} (stage {stage})'
    return f'{source or "sparse conv"} gate {index} (level {stage})'


def check_finite_scores(margin: Tensor, name: str) -> None:
    """Refuse non-finite keep scores at inference: ranking NaN / Inf would keep arbitrary
    positions (in practice the first k) and the model would go on with shifted outputs.

    The environment variable ``MMDVIT_NONFINITE_SCORES`` chooses what happens: ``error``
    (default) raises a ``FloatingPointError`` naming the predictor and the likely causes;
    ``warn`` warns once per predictor and ranks the scores anyway; ``off`` skips the check. It
    is skipped while tracing, compiling or exporting (:func:`~.accelerator.is_tracing`), where
    it could not be recorded.

    On the accelerator path (:func:`~.accelerator.uses_accelerator_path`) ``error`` does not
    wait for the device: the check is queued there (``torch._assert_async``) and a failure
    surfaces at the next synchronisation as a device-side assertion (a ``RuntimeError`` with
    the same message on CPU). ``warn`` reads the flag back (one host synchronisation per
    decision), since a warning needs the value.

    The margins are finite exactly when the scores are (two finite log-probabilities <= 0),
    and so is their float64 norm, which cannot overflow for float32 margins.

    Args:
        margin: (B, n) :func:`keep_margin` of the predictor output.
        name: the predictor, as :func:`predictor_name` writes it.
    """
    if is_tracing():
        return
    mode = os.environ.get(NONFINITE_ENV, 'error')
    if mode not in NONFINITE_MODES:
        raise ValueError(f'{NONFINITE_ENV}={mode!r}: use one of {NONFINITE_MODES}.')
    if mode == 'off':
        return
    finite = torch.linalg.vector_norm(margin, dtype=torch.float64) < float('inf')
    if mode == 'error' and uses_accelerator_path(margin):
        torch._assert_async(finite, _nonfinite_message(name))
        return
    if bool(finite):
        return
    message = _nonfinite_message(name)
    if mode == 'error':
        raise FloatingPointError(message)
    if name not in _warned_nonfinite:
        _warned_nonfinite.add(name)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _nonfinite_message(name: str) -> str:
    return (f'{name} produced non-finite keep scores (NaN / Inf) at inference; ranking them '
            'would keep arbitrary positions. Likely causes: NaN / Inf weights in the '
            'checkpoint (this predictor or the layers before it), NaN / Inf in the input '
            'image, or fp16 overflow in the layers before it (run in float32 or bf16). '
            f'{NONFINITE_ENV}=warn ranks them anyway with a warning.')


def needs_scores(keep_ratio: float, training: bool, num_positions: int,
                 previous: Optional[SparsityDecision] = None) -> bool:
    """Whether a decision can prune anything, and so needs its predictor's scores.

    Training: when ``keep_ratio < 1`` (a Gumbel draw at any lower ratio may prune). Inference:
    when k = :func:`num_kept` (N, ratio) is below the number of candidates, N or, for a
    decision nested in ``previous``, the positions ``previous`` kept. Otherwise the decision
    keeps every candidate whatever the scores: the predictor is not run.
    """
    if training:
        return keep_ratio < 1.0
    candidates = num_positions if previous is None else previous.num_keep
    return num_kept(num_positions, keep_ratio) < candidates


def decide(scores: Optional[Scores], keep_ratio: float, training: bool, stage: int, index: int,
           hw_shape: Tuple[int, int], previous: Optional[SparsityDecision] = None, *,
           source: str = 'backbone', window_size: Optional[int] = None,
           like: Optional[Tensor] = None) -> SparsityDecision:
    """Turn predictor scores into a decision: the one function that decides, for every
    module, and the one place that skips predictors with nothing to prune
    (:func:`needs_scores`). The decision is appended to every open :func:`record_decisions`.

    When nothing can be pruned (keep ratio 1.0 in training; k equal to the number of
    candidates at inference) the scores are not computed and the decision keeps every
    candidate, in both modes alike: ``log_probs`` is ``None``, ``order`` is ``None`` and
    ``num_keep`` is N (without ``previous``, or nested in a decision that kept everything),
    so the routing functions run the slow path on every position and the module computes its
    dense counterpart; :func:`~.losses.keep_ratio_loss` does not count it.

    Args:
        scores: the (B, N, 2) predictor output over the N = H * W positions, or a function
            that computes it, called only when the scores are needed (the predictor is then
            skipped when nothing can be pruned). For a nested decision at inference: over the
            n positions ``previous`` kept, in the order of ``previous.keep_indices``. May be
            ``None`` when they are not needed.
        keep_ratio: target fraction of kept positions (of all N), in (0, 1].
        training: draw a straight-through Gumbel-softmax hard mask (tau=1) if True; keep the
            top-k positions by keep score otherwise (ranked by :func:`keep_margin`; non-finite
            scores are refused, :func:`check_finite_scores`).
        stage, index, hw_shape, source, window_size: recorded in the decision.
        previous: the decision this one nests in (plain ViTs: a pruned token never returns).
            Training: the hard mask is multiplied by ``previous.keep_mask``. Inference: only
            the positions ``previous`` kept compete, the recorded ``log_probs`` are (B, N, 2)
            with ``(-inf, 0)`` at the others, and ``order`` lists the kept positions by
            descending score, then the others by position.
        like: a tensor of the batch (B, ...): the batch size and device of the all-kept mask
            when ``scores`` is a function that is not called (not needed with a tensor
            ``scores`` or with ``previous``).
    """
    if _KEEP_EVERYTHING[0]:
        keep_ratio = 1.0
    where = dict(stage=stage, index=index, keep_ratio=keep_ratio, hw_shape=tuple(hw_shape),
                 source=source, window_size=window_size)
    decision = _decide(scores, training, previous, scores if like is None else like, where)
    for recorded in _RECORDERS:
        recorded.append(decision)
    return decision


def _decide(scores: Optional[Scores], training: bool, previous: Optional[SparsityDecision],
            like: Optional[Scores], where: Dict[str, Any]) -> SparsityDecision:
    """:func:`decide` without the recording; ``where``: the fields naming the predictor."""
    num = where['hw_shape'][0] * where['hw_shape'][1]
    k = num_kept(num, where['keep_ratio'])
    if not needs_scores(where['keep_ratio'], training, num, previous):
        return _keep_all(k, previous, like, where)
    name = predictor_name(where['source'], where['stage'], where['index'])
    if scores is None:
        raise ValueError(f'{name}: a decision that prunes needs scores (got None)')
    log_probs = scores() if callable(scores) else scores
    if training:
        mask = F.gumbel_softmax(log_probs.float(), tau=1.0, hard=True, dim=-1)[..., 0]
        if previous is not None:
            mask = mask * previous.keep_mask
        return SparsityDecision.for_training(log_probs, mask, **where)
    margin = keep_margin(log_probs).detach()
    check_finite_scores(margin, name)
    if previous is not None:
        return _decide_nested(log_probs, k, previous, where, margin)
    # The mask is built when read: the sparse paths route by order.
    return SparsityDecision.for_inference(log_probs, None, rank(margin), k, margin=margin,
                                          **where)


def _keep_all(k: int, previous: Optional[SparsityDecision], like: Optional[Scores],
              where: Dict[str, Any]) -> SparsityDecision:
    """The part of :func:`decide` that keeps every candidate without scores (k of the N
    positions at inference); ``like`` gives the batch size and device of the mask."""
    if previous is not None:
        if previous.num_keep is None:
            raise ValueError('a training decision with keep ratio 1.0 cannot nest in one that '
                             'prunes (keep ratios must not increase)')
        if previous.order is not None or k > previous.num_keep:
            return _decide_nested(None, k, previous, where)  # inference: what previous kept
        like = previous.keep_mask
    if not isinstance(like, Tensor):
        raise ValueError('decide() needs like= (a tensor of the batch) to keep everything '
                         'without calling the scores function')
    return SparsityDecision.keep_all(like.shape[0], like.device, **where)


def _decide_nested(log_probs: Optional[Tensor], k: int, previous: SparsityDecision,
                   where: Dict[str, Any], margin: Optional[Tensor] = None) -> SparsityDecision:
    """Inference part of :func:`decide` for a decision nested in ``previous`` that keeps k
    positions (``log_probs`` ``None``: the k = n positions ``previous`` kept; ``margin``: the
    (B, n) :func:`keep_margin` of ``log_probs``)."""
    present = previous.keep_indices
    batch, num = (previous.keep_mask if previous.order is None else previous.order).shape
    if k > present.shape[1]:
        raise ValueError(f'a nested decision cannot keep {k} of {num} positions: the previous '
                         f'one kept {present.shape[1]} (keep ratios must not increase)')
    full_log_probs, top = None, None
    kept = present
    if log_probs is not None:
        if log_probs.shape[1] != present.shape[1]:
            raise ValueError(f'nested decision: scores for {log_probs.shape[1]} positions, '
                             f'but the previous decision kept {present.shape[1]}')
        top = rank(margin)[:, :k]
        kept = present.gather(1, top)
        full_log_probs = pruned_log_probs(batch, num, log_probs.dtype, log_probs.device)
        full_log_probs = full_log_probs.scatter(1, present.unsqueeze(-1).expand(-1, -1, 2),
                                                log_probs)
    mask = torch.zeros(batch, num, device=present.device).scatter_(1, kept, 1.0)
    rest = torch.sort(mask, dim=1, stable=True).indices[:, :num - k]
    return SparsityDecision.for_inference(full_log_probs, mask, torch.cat([kept, rest], dim=1),
                                          k, slots=top, **where)


@contextmanager
def record_decisions() -> Iterator[List[SparsityDecision]]:
    """Collect the decisions made while the context is open: the channel through which every
    dynamic backbone, neck and head hands out its decisions.

    Yields a list to which every :func:`decide` call made inside the context appends its
    decision, in call order (a dynamic backbone: one per predictor, in forward order; a whole
    model: the backbone's, then the neck's and heads', as they run). A module called twice
    (sliding-window inference, test-time augmentation) gives both calls' decisions. Recorders
    nest: every open one receives every decision; with none open nothing is recorded. The
    recorders are per process, not per thread.

    Example::

        with record_decisions() as decisions:
            model(inputs)
        kept = [d.keep_indices for d in decisions]

    Under ``torch.compile`` the appends are traced as side effects (no graph break): open the
    recorder around each call of a compiled function, or inside it; a recorder that stays
    open across calls changes what the compiled code sees, so each call recompiles.
    """
    recorded: List[SparsityDecision] = []
    _RECORDERS.append(recorded)
    try:
        yield recorded
    finally:
        del _RECORDERS[next(i for i, r in enumerate(_RECORDERS) if r is recorded)]


@contextmanager
def keep_everything() -> Iterator[None]:
    """While the context is open every :func:`decide` keeps every position, whatever its keep
    ratio (the decision records ratio 1.0): the predictors are not run and every dynamic
    module computes its dense counterpart with its own weights, in training and at inference
    (the dense path of :class:`~mmdvit.SparsityTrainer`'s ``dense_path_weight``)."""
    _KEEP_EVERYTHING[0] += 1
    try:
        yield
    finally:
        _KEEP_EVERYTHING[0] -= 1


def decision_label(decision: SparsityDecision) -> str:
    """A short unique name: ``'<index>'`` for backbone predictors (forward order), else
    ``'<source>.<index>'`` (e.g. ``'decode_head.1'``)."""
    if decision.source == 'backbone':
        return str(decision.index)
    return f'{decision.source}.{decision.index}'
