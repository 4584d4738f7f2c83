"""Where predictors sit and which keep ratio each one targets (docs/method.md, 'Where the
predictors sit')."""
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

Locations = Union[Sequence[int], Sequence[Sequence[int]]]


@dataclass(frozen=True)
class StageSchedule:
    """The sparsity schedule of one stage.

    A predictor sits before each block in ``pruning_locs`` (0-based block indices within the
    stage) and chooses afresh over all positions; blocks after it use its decision until the
    next predictor. Blocks before the first predictor are dense.
    """

    stage: int
    pruning_locs: Tuple[int, ...]
    keep_ratios: Tuple[float, ...]
    first_index: int  # index of this stage's first predictor among all predictors

    def predictor_before(self, block: int) -> Optional[int]:
        """Local index of the predictor placed before ``block``, if any."""
        return self.pruning_locs.index(block) if block in self.pruning_locs else None

    def is_sparse(self, block: int) -> bool:
        """Whether ``block`` has a fast path (it runs at or after the first predictor)."""
        return block >= self.pruning_locs[0]


def check_keep_ratio(ratio: float, where: str) -> float:
    """``ratio`` as a float; a ValueError naming ``where`` (the module or argument it belongs
    to) unless 0 < ratio <= 1."""
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f'{where}: keep ratio {ratio} must satisfy 0 < ratio <= 1 (the fraction '
                         'of positions kept); note that rho - 0.4 is <= 0 for rho <= 0.4.')
    return ratio


def build_schedule(depths: Sequence[int], sparse_stages: Sequence[int],
                   pruning_locs: Optional[Locations], keep_ratios: Sequence[float],
                   default_locs: Mapping[int, Tuple[int, ...]]) -> Dict[int, StageSchedule]:
    """Validate sparsity arguments and return ``{stage: StageSchedule}``.

    Args:
        depths: number of blocks per stage.
        sparse_stages: stages that get predictors (0-based); empty disables sparsification.
        pruning_locs: block indices (0-based, within the stage) that get a predictor before
            them: a flat sequence when one stage is sparse, else one sequence per sparse stage.
            ``None`` takes ``default_locs[depth]`` (the published placements).
        keep_ratios: one target ratio per predictor, in forward order over all sparse stages.
        default_locs: published placements by stage depth.

    Raises:
        ValueError: naming the bad argument and how to fix it.
    """
    num_stages = len(depths)
    sparse_stages = tuple(sparse_stages)
    for stage in sparse_stages:
        if not 0 <= stage < num_stages:
            raise ValueError(f'sparse_stages={sparse_stages}: stage {stage} is out of range for a '
                             f'backbone with {num_stages} stages (use 0..{num_stages - 1}).')
    if len(set(sparse_stages)) != len(sparse_stages) or list(sparse_stages) != sorted(
            sparse_stages):
        raise ValueError(f'sparse_stages={sparse_stages} must be increasing without repeats.')
    if not sparse_stages:
        return {}

    if pruning_locs is None:
        locs_per_stage = []
        for stage in sparse_stages:
            depth = depths[stage]
            if depth not in default_locs:
                raise ValueError(
                    f'No published predictor placement for stage {stage} of depth {depth} '
                    f'(known depths: {sorted(default_locs)}). Pass pruning_locs explicitly, '
                    f'e.g. pruning_locs=(0,) to put one predictor before the first block.')
            locs_per_stage.append(tuple(default_locs[depth]))
    else:
        locs = list(pruning_locs)
        if locs and all(isinstance(v, int) for v in locs):
            locs = [locs]
        if len(locs) != len(sparse_stages):
            raise ValueError(
                f'pruning_locs={pruning_locs} gives {len(locs)} stage(s) of locations but '
                f'sparse_stages={sparse_stages} has {len(sparse_stages)}: give one sequence of '
                f'block indices per sparse stage.')
        locs_per_stage = [tuple(int(v) for v in stage_locs) for stage_locs in locs]

    num_predictors = sum(len(locs) for locs in locs_per_stage)
    keep_ratios = tuple(float(r) for r in keep_ratios)
    if len(keep_ratios) != num_predictors:
        raise ValueError(
            f'keep_ratios={keep_ratios} has {len(keep_ratios)} value(s) but the schedule has '
            f'{num_predictors} predictor(s) (pruning_locs={tuple(locs_per_stage)}): give one '
            f'ratio per predictor.')
    for ratio in keep_ratios:
        check_keep_ratio(ratio, f'keep_ratios={keep_ratios}')

    schedules, first = {}, 0
    for stage, locs in zip(sparse_stages, locs_per_stage):
        depth = depths[stage]
        if not locs:
            raise ValueError(f'pruning_locs for stage {stage} is empty: drop the stage from '
                             f'sparse_stages or give at least one block index.')
        if len(locs) > depth:
            raise ValueError(f'{len(locs)} predictors requested for stage {stage}, which has only '
                             f'{depth} blocks: at most one predictor per block.')
        for loc in locs:
            if not 0 <= loc < depth:
                raise ValueError(f'pruning_locs: block {loc} is out of range for stage {stage} '
                                 f'with {depth} blocks (use 0..{depth - 1}).')
        if list(locs) != sorted(set(locs)):
            raise ValueError(f'pruning_locs {locs} for stage {stage} must be strictly increasing.')
        schedules[stage] = StageSchedule(stage, locs, keep_ratios[first:first + len(locs)], first)
        first += len(locs)
    return schedules
