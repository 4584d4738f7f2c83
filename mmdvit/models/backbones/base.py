"""What every dynamic backbone shares: predictors per sparse stage and what they score,
pretrained loading that reports what it did, and a warning when it trains without the wrapper
that trains its predictors."""
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor, nn

from ..checkpoint import load_pretrained
from ..checkpoint.loading import LoadReport
from ...sparse import (ScorePredictor, SparseModule, SparsityDecision, StageSchedule,
                       score_in_float32)

UNTRAINED_PREDICTORS_WARNING = (
    '{name} is training outside mmdvit.SparsityTrainer: nothing trains its score predictors '
    '(no keep-ratio loss), yet inference keeps max(1, int(N * keep_ratio)) positions chosen by '
    'their untrained scores. To train them, wrap the model in the config:\n'
    "    model = dict(type='mmdvit.SparsityTrainer', student=<this model config>,\n"
    '                 teacher=None, feature_distill_weight=0.0)\n'
    "(README.md, 'Sparsity training'). For a dense backbone set sparse_stages=() "
    '(ViT: pruning_locs=(), keep_ratios=()).')


def warn_outside_trainer(backbone: 'DynamicBackbone', args: Tuple) -> None:
    """Forward pre-hook: warn once, at the first training forward, when a backbone with
    predictors trains without :class:`~mmdvit.SparsityTrainer` (which alone trains them)."""
    if (backbone.training and any(r < 1.0 for r in backbone.keep_ratios)
            and backbone.trainer_role != 'student' and not backbone._warned_untrained):
        backbone._warned_untrained = True
        print_log(UNTRAINED_PREDICTORS_WARNING.format(name=type(backbone).__name__),
                  logger='current', level=logging.WARNING)


class DynamicBackbone(SparseModule, BaseModule):
    """Base class of mmdvit's dynamic backbones.

    Every forward pass makes one :class:`~mmdvit.sparse.SparsityDecision` per predictor, in
    forward order, handed out through :func:`~mmdvit.sparse.record_decisions`. Training:
    ``keep_mask`` is the straight-through hard mask (with gradient) that the keep-ratio loss
    consumes; inference: ``keep_indices`` are the kept positions.

    Only :class:`~mmdvit.SparsityTrainer` trains the predictors: a backbone with predictors
    that trains without it warns once (:func:`warn_outside_trainer`). :attr:`trainer_role` is
    what the wrapper made it: ``'student'`` (its predictors are trained), ``'teacher'`` or
    ``None``; weight loads name it in the log.

    Subclasses set :attr:`schedule` and call :meth:`build_predictors`, and implement
    :meth:`convert_checkpoint` and :meth:`reset_parameters`.
    """

    schedule: Dict[int, StageSchedule]

    def __init__(self, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.trainer_role: Optional[str] = None
        self._warned_untrained = False
        self.register_forward_pre_hook(warn_outside_trainer)

    def build_predictors(self, channels: Sequence[int], eps: float) -> None:
        """One :class:`ScorePredictor` per scheduled location, as
        ``score_predictors.<stage>.<i>``; ``channels[s]`` is stage s's width."""
        self.score_predictors = nn.ModuleDict({
            str(stage): nn.ModuleList(
                [ScorePredictor(channels[stage], eps) for _ in sched.pruning_locs])
            for stage, sched in self.schedule.items()
        })

    def decide_args(self, stage: int, local_index: int) -> Dict[str, Any]:
        """The arguments of :func:`~mmdvit.sparse.decide` that name predictor
        ``local_index`` of ``stage``: its ``keep_ratio``, ``training``, ``stage`` and its
        ``index`` among all predictors."""
        sched = self.schedule[stage]
        return dict(keep_ratio=sched.keep_ratios[local_index], training=self.training,
                    stage=stage, index=sched.first_index + local_index)

    def predictor_scores(self, stage: int, local_index: int, tokens: Tensor,
                         previous: Optional[SparsityDecision] = None,
                         nested: bool = False) -> Callable[[], Tensor]:
        """The function computing the scores of predictor ``local_index`` of ``stage`` on
        ``tokens`` (B, N, C): (B, N, 2) float32 log-probabilities, for
        :func:`~mmdvit.sparse.decide` (which calls it only when the decision can prune).

        ``tokens`` are the positions of a feature map, or for window decisions its pooled
        windows. ``nested`` (plain ViTs): the decision nests in ``previous`` (``None`` before
        the first one), and the predictor's global summary averages the positions kept so far:
        in training ``tokens`` are all N positions, weighted by ``previous.keep_mask``; at
        inference only the n positions still kept, in the order of ``previous.keep_indices``.
        """
        predictor = self.score_predictors[str(stage)][local_index]

        def scores() -> Tensor:
            policy = None
            if nested and self.training:
                policy = (tokens.new_ones(tokens.shape[:2], dtype=torch.float32)
                          if previous is None else previous.keep_mask).unsqueeze(-1)
            return score_in_float32(predictor, tokens, policy)

        return scores

    def predictor_at(self, stage: int, block: int) -> Optional[int]:
        """Local index of the predictor of ``stage`` placed before ``block``, if any."""
        sched = self.schedule.get(stage)
        return sched.predictor_before(block) if sched is not None else None

    def stage_predictors(self, stage: int) -> List[nn.Module]:
        """The predictors of ``stage`` as a one-element list (empty for a dense stage), for
        :meth:`frozen_parts`."""
        key = str(stage)
        return [self.score_predictors[key]] if key in self.score_predictors else []

    def frozen_parts(self) -> List[Union[nn.Module, nn.Parameter]]:
        """What ``frozen_stages`` freezes (modules and loose parameters); none by default."""
        return []

    def freeze_stages(self) -> None:
        """Put :meth:`frozen_parts` in eval mode without gradients (as upstream backbones do
        after construction and on every ``train()``)."""
        for part in self.frozen_parts():
            if isinstance(part, nn.Parameter):
                part.requires_grad = False
                continue
            part.eval()
            for param in part.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'DynamicBackbone':
        super().train(mode)
        self.freeze_stages()
        return self

    def convert_checkpoint(self, state):  # pragma: no cover - abstract
        raise NotImplementedError

    def reset_parameters(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_weights(self) -> Optional[LoadReport]:
        """Initialise; with ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)``
        load the checkpoint (any supported layout) and log every missing / unexpected key.
        Other ``init_cfg`` types go through mmengine's initialisers."""
        self.reset_parameters()
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            role = ' '.join(filter(None, (self.trainer_role, 'backbone init_cfg checkpoint')))
            report = load_pretrained(self, cfg['checkpoint'], self.convert_checkpoint,
                                     prefix=cfg.get('prefix'), role=role)
            self._is_init = True
            return report
        if cfg is not None:
            super().init_weights()
        return None
