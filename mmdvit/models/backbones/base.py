"""What every dynamic backbone shares: predictors per sparse stage, the decisions of the last
forward pass, and pretrained loading that reports what it did."""
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from ..checkpoint import load_pretrained
from ..checkpoint.loading import LoadReport
from ..sparse import ScorePredictor, SparsityDecision, StageSchedule, decide
from ..sparse.decision import num_kept


class DynamicBackbone(BaseModule):
    """Base class of mmdvit's dynamic backbones.

    After every forward pass, :attr:`sparsity_decisions` lists one
    :class:`~mmdvit.models.sparse.SparsityDecision` per predictor, in forward order. Training:
    ``keep_mask`` is the straight-through hard mask (with gradient) that the keep-ratio loss
    consumes; inference: ``keep_indices`` are the kept positions. Loss wrappers read it right
    after calling the backbone (it is replaced on the next forward).

    Subclasses set :attr:`schedule` and call :meth:`build_predictors`, and implement
    :meth:`convert_checkpoint` and :meth:`reset_parameters`.
    """

    schedule: Dict[int, StageSchedule]

    def __init__(self, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.sparsity_decisions: List[SparsityDecision] = []

    def build_predictors(self, channels: Sequence[int], eps: float) -> None:
        """One :class:`ScorePredictor` per scheduled location, as
        ``score_predictors.<stage>.<i>``; ``channels[s]`` is stage s's width."""
        self.score_predictors = nn.ModuleDict({
            str(stage): nn.ModuleList(
                [ScorePredictor(channels[stage], eps) for _ in sched.pruning_locs])
            for stage, sched in self.schedule.items()
        })

    @property
    def keep_ratios(self) -> List[float]:
        """Target keep ratio of every predictor, in forward order."""
        return [r for sched in self.schedule.values() for r in sched.keep_ratios]

    def decide(self, stage: int, local_index: int, tokens: Tensor,
               hw_shape: Sequence[int]) -> SparsityDecision:
        """Run predictor ``local_index`` of ``stage`` on ``tokens`` (B, N, C) and record it.

        At inference with a ratio that keeps every position the predictor is skipped: the
        result cannot depend on it.
        """
        sched = self.schedule[stage]
        ratio = sched.keep_ratios[local_index]
        index, hw_shape = sched.first_index + local_index, tuple(hw_shape)
        batch, num = tokens.shape[:2]
        if not self.training and num_kept(num, ratio) == num:
            mask = tokens.new_ones(batch, num, dtype=torch.float32)
            decision = SparsityDecision(stage, index, ratio, hw_shape, None, mask, None, num)
        else:
            log_probs = self.score_predictors[str(stage)][local_index](tokens)
            decision = decide(log_probs, ratio, self.training, stage, index, hw_shape)
        self.sparsity_decisions.append(decision)
        return decision

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
            report = load_pretrained(self, cfg['checkpoint'], self.convert_checkpoint,
                                     prefix=cfg.get('prefix'))
            self._is_init = True
            return report
        if cfg is not None:
            super().init_weights()
        return None
