"""Options that keep small and thin things in a sparse head (the detail cue and the neighbour
bonus of the tile predictor), and the trainer's warning when its teacher scored below the
student's starting checkpoint."""
import json
import warnings
from pathlib import Path

import pytest
import torch
from helpers import gate_decision
from mmengine.registry import init_default_scope
from test_sparsity_trainer import seg_student

from mmdvit.models.heads import DynamicUPerHead
from mmdvit.sparse import BlockScorePredictor, SparseConvGate, record_decisions
from mmdvit.sparse.predictor import detail_cue, neighbour_max
from mmdvit.models.wrappers.recorded_score import (checkpoint_step, recorded_scores,
                                                   warn_if_teacher_weaker)


def test_detail_cue_is_zero_on_a_flat_map_and_high_on_a_thin_line():
    flat = torch.full((2, 3, 16, 20), 0.7)
    cue = detail_cue(flat, 4)
    assert cue.shape == (2, 4 * 5)
    assert torch.equal(cue, torch.zeros_like(cue))
    line = torch.zeros(1, 3, 16, 16)
    line[:, :, :, 9] = 1.0  # a 1-px vertical line in tile column 2 (columns 8-11)
    cue = detail_cue(line, 4).view(4, 4)
    assert (cue[:, 2] > 1.0).all()
    assert torch.equal(cue[:, 0], torch.zeros(4)) and torch.equal(cue[:, 3], torch.zeros(4))
    # The line differs from its neighbours at columns 8 and 9 only: column 1 (4-7) sees none.
    assert torch.equal(cue[:, 1], torch.zeros(4))
    # Scale-free: the same line 10x brighter gives the same cue.
    torch.testing.assert_close(detail_cue(10 * line, 4).view(4, 4), cue)


def test_neighbour_max_equals_a_loop_reference():
    torch.manual_seed(0)
    margin = torch.randn(2, 5 * 7)
    got = neighbour_max(margin, (5, 7)).view(2, 5, 7)
    grid = margin.view(2, 5, 7)
    for b in range(2):
        for r in range(5):
            for c in range(7):
                window = grid[b, max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
                assert got[b, r, c] == window.max()


def test_options_off_keep_the_predictor_unchanged():
    torch.manual_seed(0)
    plain = BlockScorePredictor(8, 16, 4)
    assert plain.detail_weight is None
    assert not any('detail' in k for k in plain.state_dict())
    bonus = BlockScorePredictor(8, 16, 4, detail_cue=True, neighbour_bonus=0.5)
    assert set(bonus.state_dict()) == set(plain.state_dict()) | {'detail_weight'}
    with pytest.raises(ValueError, match='neighbour_bonus'):
        BlockScorePredictor(8, 16, 4, neighbour_bonus=-1.0)
    # With the cue's weight at 0 and no bonus, the options change nothing.
    bonus.load_state_dict(dict(plain.state_dict(), detail_weight=torch.zeros(())))
    bonus.neighbour_bonus = 0.0
    x = torch.randn(2, 8, 18, 13)
    torch.testing.assert_close(bonus(x), plain(x))


def small_thing_gate(keep_ratio: float, neighbour_bonus: float) -> SparseConvGate:
    """A gate whose own scores are flat (-20 for every tile) so that the detail cue (weight 100)
    and the neighbour bonus decide alone."""
    gate = SparseConvGate(3, 3, keep_ratio, block=4, detail_cue=True,
                          neighbour_bonus=neighbour_bonus)
    last = gate.score_predictor.score.out_conv[-2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 20.0]))
        gate.score_predictor.detail_weight.fill_(100.0)
    return gate


def impulse_map() -> torch.Tensor:
    """(1, 3, 32, 32): zeros but one position inside tile (row 3, column 5) of the 8x8 grid,
    away from the tile's border (its 3x3 box filter stays inside the tile)."""
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, 3 * 4 + 1, 5 * 4 + 2] = 1.0
    return x


def kept_tiles(gate: SparseConvGate, x: torch.Tensor, training: bool) -> set:
    gate.train(training)
    mask = gate_decision(gate, x).keep_mask[0]
    return set(torch.nonzero(mask).flatten().tolist())


def test_neighbour_bonus_keeps_the_tiles_around_a_small_thing_in_training_and_inference():
    torch.manual_seed(0)
    neighbourhood = {r * 8 + c for r in (2, 3, 4) for c in (4, 5, 6)}
    x = impulse_map()
    with_bonus = small_thing_gate(9 / 64, neighbour_bonus=1.0)
    assert kept_tiles(with_bonus, x, training=False) == neighbourhood
    assert kept_tiles(with_bonus, x, training=True) == neighbourhood  # Gumbel draws agree
    without = small_thing_gate(9 / 64, neighbour_bonus=0.0)
    assert 3 * 8 + 5 in kept_tiles(without, x, training=False)  # the cue keeps the thing's tile
    assert kept_tiles(without, x, training=True) == {3 * 8 + 5}  # and only it scores above 0
    assert kept_tiles(without, x, training=False) != neighbourhood


def test_ratio_one_keeps_every_tile_with_the_options():
    x = impulse_map()
    gate = small_thing_gate(1.0, neighbour_bonus=1.0)
    for training in (True, False):
        assert kept_tiles(gate, x, training) == set(range(64))


def test_dynamic_uper_head_passes_the_options_to_every_gate():
    init_default_scope('mmseg')
    head = DynamicUPerHead(keep_ratios=(0.5, 0.3, 0.4),
                           sparse_convs=('fpn_convs.0', 'fpn_convs.1', 'fpn_bottleneck'),
                           block_size=4, detail_cue=True, neighbour_bonus=0.5,
                           in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3], channels=8,
                           num_classes=4, pool_scales=(1, 2))
    predictors = [head.get_submodule(n).gate.score_predictor for n in head.sparse_convs]
    assert all(p.detail_weight is not None and p.neighbour_bonus == 0.5 for p in predictors)
    head.eval()
    inputs = [torch.randn(2, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate([8, 16, 32, 64])]
    with record_decisions() as decisions:
        out = head(inputs)
    assert out.shape == (2, 4, 32, 32)
    # One ratio per level: 4x4 tiles of the 32x32 level 0, 2x2 tiles of the 16x16 level 1.
    assert [d.hw_shape for d in decisions] == [(8, 8)] * 3
    kept = [int(d.keep_mask[0].sum()) for d in decisions]
    assert kept == [32, 19, 25]


def write_run(folder: Path, step: int, score: float, metric: str = 'mIoU') -> str:
    """A checkpoint file and the scalars.json of the training that wrote it (a training line,
    then the validation at ``step``); returns the checkpoint's path."""
    log = folder / '20260101_000000' / 'vis_data' / 'scalars.json'
    log.parent.mkdir(parents=True)
    lines = [dict(loss=1.0, iter=step, step=step), {metric: score, 'aAcc': 90.0, 'step': step}]
    log.write_text('\n'.join(json.dumps(line) for line in lines) + '\n')
    checkpoint = folder / f'iter_{step}.pth'
    checkpoint.write_bytes(b'')
    return str(checkpoint)


def test_recorded_scores_read_the_validation_at_the_checkpoints_step(tmp_path):
    checkpoint = write_run(tmp_path / 'run', 600, 39.14)
    assert checkpoint_step(checkpoint) == 600
    assert checkpoint_step(str(tmp_path / 'best_mIoU_iter_50.pth')) == 50
    assert checkpoint_step(str(tmp_path / 'release.pth')) is None
    scores, log = recorded_scores(checkpoint)
    assert scores == {'mIoU': 39.14} and log.name == 'scalars.json'
    other = tmp_path / 'run' / 'iter_300.pth'  # no validation at 300
    other.write_bytes(b'')
    assert recorded_scores(str(other)) == ({}, None)


def test_warns_naming_both_scores_only_when_the_teacher_is_known_to_be_weaker(tmp_path):
    weak = write_run(tmp_path / 'weak', 300, 30.6)
    strong = write_run(tmp_path / 'strong', 900, 43.07)
    start = write_run(tmp_path / 'start', 600, 39.14)
    unknown = tmp_path / 'unknown' / 'iter_600.pth'
    unknown.parent.mkdir()
    unknown.write_bytes(b'')
    with pytest.warns(RuntimeWarning, match=r'mIoU 30\.60.*below.*mIoU 39\.14'):
        assert warn_if_teacher_weaker(weak, start) is not None
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert warn_if_teacher_weaker(strong, start) is None
        assert warn_if_teacher_weaker(str(unknown), start) is None
        assert warn_if_teacher_weaker(weak, str(unknown)) is None
        assert warn_if_teacher_weaker(weak, None) is None
        other_metric = write_run(tmp_path / 'cls', 300, 10.0, metric='accuracy/top1')
        assert warn_if_teacher_weaker(other_metric, start) is None  # nothing in common


def build_distilling_trainer(tmp_path: Path, teacher_score: float, start_score: float,
                             **kwargs):
    """A SparsityTrainer whose teacher and starting checkpoints are the same dense weights,
    recorded with the given validation scores."""
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    dense = MODELS.build(seg_student(keep_ratios=(1.0, 1.0, 1.0)))
    paths = []
    for name, step, score in (('teacher', 900, teacher_score), ('start', 600, start_score)):
        path = write_run(tmp_path / name, step, score)
        torch.save({'state_dict': dense.state_dict()}, path)
        paths.append(path)
    cfg = dict(type='mmdvit.SparsityTrainer', student=seg_student(),
               teacher=dict(checkpoint=paths[0]), student_checkpoint=paths[1],
               logit_distill_weight=0.5)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def test_trainer_warns_when_its_teacher_scored_below_the_students_start(tmp_path):
    trainer = build_distilling_trainer(tmp_path / 'weak', 30.6, 39.14)
    with pytest.warns(RuntimeWarning, match=r'teacher checkpoint .*mIoU 30\.60.*mIoU 39\.14'):
        trainer.init_weights()
    for name, kwargs in (('strong', dict(teacher_score=43.07, start_score=39.14)),
                         ('no_distill', dict(teacher_score=30.6, start_score=39.14,
                                             logit_distill_weight=0.0,
                                             feature_distill_weight=0.0))):
        trainer = build_distilling_trainer(tmp_path / name, **kwargs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            trainer.init_weights()
        assert not [w for w in caught if 'teacher checkpoint' in str(w.message)]


def test_the_dense_twin_drops_the_options():
    """The teacher built as the student's dense twin gets mmseg's UPerHead, without them."""
    from mmengine.config import ConfigDict

    from mmdvit.models.dense_twin import upstream_heads_config
    head = dict(in_channels=[8, 16, 32, 64], channels=8, num_classes=4)
    twin = upstream_heads_config(ConfigDict(decode_head=dict(
        head, type='mmdvit.DynamicUPerHead', detail_cue=True, neighbour_bonus=1.0)))
    assert twin.decode_head == ConfigDict(head, type='mmseg.UPerHead')
