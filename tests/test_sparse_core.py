"""The sparsification machinery: schedules, decisions, routing, the keep-ratio loss."""
import re
from dataclasses import FrozenInstanceError, replace

import pytest
import torch
from torch import nn

from mmdvit.sparse import (BlockScorePredictor, ScorePredictor, SparseConvGate, SparsityDecision,
                           build_schedule, decide, drop_pruned, keep_ratio_loss, record_decisions,
                           route_tokens)
from mmdvit.sparse import decision as decision_module
from mmdvit.sparse.decision import NONFINITE_ENV, num_kept
from mmdvit.sparse.gate import check_gate_args
from mmdvit.sparse.gather import pad_to_multiple

SWIN_LOCS = {6: (1, 2, 3), 18: (2, 4, 6)}


def test_schedule_defaults_follow_the_published_placements():
    sched = build_schedule((2, 2, 18, 2), (2, ), None, (0.7, 0.5, 0.3), SWIN_LOCS)
    assert list(sched) == [2]
    assert sched[2].pruning_locs == (2, 4, 6)
    assert [sched[2].is_sparse(j) for j in range(8)] == [False] * 2 + [True] * 6
    assert sched[2].predictor_before(4) == 1 and sched[2].predictor_before(5) is None


def test_schedule_splits_ratios_over_several_stages():
    sched = build_schedule((2, 2, 6, 2), (1, 2), ((0, ), (1, 3)), (0.9, 0.7, 0.5), SWIN_LOCS)
    assert sched[1].keep_ratios == (0.9, ) and sched[2].keep_ratios == (0.7, 0.5)
    assert sched[2].first_index == 1


@pytest.mark.parametrize('kwargs, message', [
    (dict(keep_ratios=(0.7, 0.5, 0.0)), '0 < ratio <= 1'),
    (dict(keep_ratios=(1.2, 0.5, 0.3)), '0 < ratio <= 1'),
    (dict(keep_ratios=(0.7, 0.5)), 'one ratio per predictor'),
    (dict(pruning_locs=(1, 6)), 'out of range'),
    (dict(pruning_locs=(3, 1)), 'strictly increasing'),
    (dict(pruning_locs=tuple(range(6)) + (5, )), 'only 6 blocks'),
    (dict(sparse_stages=(4, )), 'out of range'),
])
def test_schedule_rejects_bad_arguments(kwargs, message):
    args = dict(sparse_stages=(2, ), pruning_locs=None, keep_ratios=(0.7, 0.5, 0.3))
    args.update(kwargs)
    n = len(args['pruning_locs']) if args['pruning_locs'] else 3
    if 'keep_ratios' not in kwargs:
        args['keep_ratios'] = (0.5, ) * n
    with pytest.raises(ValueError, match=message):
        build_schedule((2, 2, 6, 2), args['sparse_stages'], args['pruning_locs'],
                       args['keep_ratios'], SWIN_LOCS)


@pytest.mark.parametrize('ratio', [0.0, 1.5])
def test_backbone_schedule_and_conv_gate_share_the_keep_ratio_check(ratio):
    """One check for every keep ratio: a backbone's schedule and a head's gate raise the same
    message, each naming its owner."""
    expected = f'keep ratio {ratio} must satisfy 0 < ratio <= 1'
    with pytest.raises(ValueError,
                       match=re.escape(f'keep_ratios=(0.7, 0.5, {ratio}): {expected}')):
        build_schedule((2, 2, 6, 2), (2, ), None, (0.7, 0.5, ratio), SWIN_LOCS)
    with pytest.raises(ValueError, match=re.escape(f'decode_head (gate 2): {expected}')):
        SparseConvGate(8, 8, ratio, index=2, source='decode_head')


def test_conv_gates_and_block_predictor_share_the_tile_size_check():
    """One check for every tile size: a head's gate arguments and the tile predictor raise the
    same message, each naming its argument."""
    expected = '=0 must be >= 1 (the side of a square tile'
    with pytest.raises(ValueError, match=re.escape('DynamicFPN: block_size' + expected)):
        check_gate_args('DynamicFPN', 'sparse_levels', (0, ), (0.5, ), 0, 4, 'the FPN')
    with pytest.raises(ValueError, match=re.escape('BlockScorePredictor: block' + expected)):
        BlockScorePredictor(8, block=0)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('size, multiple, halo', [((7, 9), 4, 0), ((8, 4), 4, 0), ((5, 6), 3, 2)])
def test_pad_to_multiple_matches_an_explicit_padding(size, multiple, halo, channels_last):
    """Bottom / right up to the multiple plus ``halo`` around, in both layouts; the input itself
    when nothing is added."""
    x = torch.randn(2, 3, *size)
    height, width = (-(-s // multiple) * multiple for s in size)
    expected = torch.full((2, 3, height + 2 * halo, width + 2 * halo), -1.0)
    expected[..., halo:halo + size[0], halo:halo + size[1]] = x
    if channels_last:
        out = pad_to_multiple(x.permute(0, 2, 3, 1), multiple, halo, -1.0, channels_last=True)
        out = out.permute(0, 3, 1, 2)
    else:
        out = pad_to_multiple(x, multiple, halo, -1.0)
    assert torch.equal(out, expected)
    if (height, width, halo) == (*size, 0):
        assert out.data_ptr() == x.data_ptr()


def test_schedule_without_published_default_asks_for_locations():
    with pytest.raises(ValueError, match='Pass pruning_locs'):
        build_schedule((2, 2, 4, 2), (2, ), None, (0.7, 0.5, 0.3), SWIN_LOCS)


@pytest.mark.parametrize('num', [1, 7, 49, 50])
def test_predictor_scores_any_number_of_positions(num):
    predictor = ScorePredictor(16)
    out = predictor(torch.randn(3, num, 16))
    assert out.shape == (3, num, 2)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(3, num))


def test_predictor_global_half_is_a_plain_or_policy_weighted_mean():
    predictor = ScorePredictor(8)
    x = torch.randn(2, 5, 8)
    h = predictor.in_conv(x)
    summary = h[..., 4:].mean(1, True).expand(-1, 5, -1)
    expected = predictor.out_conv(torch.cat([h[..., :4], summary], -1))
    torch.testing.assert_close(predictor(x), expected)
    policy = torch.tensor([[1, 1, 0, 0, 1], [0, 1, 1, 1, 1]], dtype=torch.float)[..., None]
    # Positions outside the policy do not influence the scores of the others.
    x2 = x.clone()
    x2[policy[..., 0] == 0] = 100.0
    keep = policy[..., 0] == 1
    torch.testing.assert_close(predictor(x, policy)[keep], predictor(x2, policy)[keep])


@pytest.mark.parametrize('num, ratio', [(49, 0.7), (196, 0.5), (10, 0.3), (12, 1.0)])
def test_inference_keeps_int_n_ratio_highest_scores(num, ratio):
    log_probs = torch.randn(3, num, 2).log_softmax(-1)
    d = decide(log_probs, ratio, training=False, stage=2, index=0, hw_shape=(1, num))
    k = int(num * ratio)
    assert d.num_keep == k
    assert torch.equal(d.keep_mask.sum(1), torch.full((3, ), float(k)))
    for b in range(3):
        expected = set(log_probs[b, :, 0].argsort(descending=True)[:k].tolist())
        assert set(d.keep_indices[b].tolist()) == expected


def test_training_mask_is_hard_and_straight_through():
    logits = torch.randn(4, 30, 2, requires_grad=True)
    d = decide(logits.log_softmax(-1), 0.5, training=True, stage=0, index=0, hw_shape=(5, 6))
    assert d.num_keep is None and d.keep_indices is None
    assert torch.all((d.keep_mask - d.keep_mask.round()).abs() < 1e-6)
    (d.keep_mask * torch.arange(30.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize('ratio', [0.6, 1.0, 0.01])
def test_routing_training_stream_equals_gather_scatter(ratio):
    slow, fast = nn.Linear(8, 8), nn.Linear(8, 8)
    x = torch.randn(2, 20, 8)
    scores = torch.randn(2, 20, 2).log_softmax(-1)
    inference = decide(scores, ratio, False, 0, 0, (4, 5))
    out_inference = route_tokens(x, slow, fast, inference)
    # The same kept set as a training-style (mask-only) decision.
    training = replace(decide(scores, ratio, True, 0, 0, (4, 5)), keep_mask=inference.keep_mask)
    out_training = route_tokens(x, slow, fast, training)
    torch.testing.assert_close(out_training, out_inference)
    kept = inference.keep_mask.bool()
    torch.testing.assert_close(out_inference[kept], slow(x)[kept])
    torch.testing.assert_close(out_inference[~kept], fast(x)[~kept])


def test_keep_ratio_loss_is_per_image_then_averaged():
    scores = torch.zeros(2, 10, 2)
    d1 = decide(scores, 0.5, True, 2, 0, (2, 5))
    d2 = decide(scores, 0.3, True, 2, 1, (2, 5))
    d1 = replace(d1, keep_mask=torch.tensor([[1.0] * 10, [0.0] * 10]))  # means 1.0 and 0.0
    d2 = replace(d2, keep_mask=torch.tensor([[1.0] * 3 + [0.0] * 7] * 2))  # exactly on target
    expected = ((0.5**2 + 0.5**2) / 2 + 0.0) / 2
    assert keep_ratio_loss([d1, d2]).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match='no decisions'):
        keep_ratio_loss([])


def test_keep_ratio_loss_does_not_count_decisions_that_keep_everything():
    """A ratio-1.0 decision (predictor skipped) adds no term and does not dilute the others; a
    model whose ratios are all 1.0 has loss 0 (not an error)."""
    scores = torch.zeros(2, 10, 2, requires_grad=True)
    scored = decide(scores, 0.3, True, 2, 0, (2, 5))
    skipped = decide(scores, 1.0, True, 2, 1, (2, 5))
    assert skipped.log_probs is None
    kept = scored.keep_mask.detach().mean(1)
    expected = ((kept - 0.3)**2).mean()
    torch.testing.assert_close(keep_ratio_loss([scored, skipped]), expected)
    keep_ratio_loss([scored, skipped]).backward()
    assert scores.grad is not None
    zero = keep_ratio_loss([skipped, decide(scores, 1.0, True, 2, 2, (2, 5))])
    assert zero.shape == () and zero.item() == 0.0


@pytest.mark.parametrize('training', [False, True])
def test_ratio_one_keeps_everything_without_scoring_in_both_modes(training):
    """At ratio 1.0 the scores are never computed, in training as at inference: the decision
    keeps every position (no Gumbel draw) and routing takes the slow path everywhere."""
    calls = []

    def scores():
        calls.append(1)
        return torch.randn(3, 20, 2).log_softmax(-1)

    x = torch.randn(3, 20, 8)
    d = decide(scores, 1.0, training, 1, 0, (4, 5), like=x, source='backbone', window_size=2)
    assert not calls
    assert d.log_probs is None and d.order is None and d.num_keep == 20
    assert torch.equal(d.keep_mask, torch.ones(3, 20))
    assert (d.stage, d.index, d.hw_shape, d.window_size) == (1, 0, (4, 5), 2)
    slow, fast = nn.Linear(8, 8), nn.Linear(8, 8)
    torch.testing.assert_close(route_tokens(x, slow, fast, d), slow(x), rtol=0, atol=0)
    # Given as a tensor, the scores are ignored alike: no Gumbel mask at ratio 1.0.
    assert torch.equal(decide(scores(), 1.0, training, 1, 0, (4, 5)).keep_mask,
                       torch.ones(3, 20))
    # Nested in a decision that kept everything, still everything.
    assert torch.equal(decide(scores, 1.0, training, 1, 1, (4, 5), previous=d).keep_mask,
                       torch.ones(3, 20))
    assert len(calls) == 1  # only the explicit call above


def test_a_training_decision_at_ratio_one_cannot_nest_in_one_that_prunes():
    first = decide(torch.zeros(2, 20, 2), 0.5, True, 0, 0, (4, 5))
    with pytest.raises(ValueError, match='must not increase'):
        decide(None, 1.0, True, 0, 1, (4, 5), previous=first)


@pytest.mark.parametrize('num, ratio, k', [(1, 0.3, 1), (1, 1.0, 1), (4, 0.2, 1), (4, 0.3, 1),
                                           (4, 0.5, 2), (4, 0.7, 2), (9, 0.1, 1), (196, 0.7, 137),
                                           (0, 0.5, 0)])
def test_num_kept_keeps_at_least_one_position_of_a_non_empty_map(num, ratio, k):
    assert num_kept(num, ratio) == k


@pytest.mark.parametrize('grid, ratio', [((1, 1), 0.3), ((2, 2), 0.2), ((2, 2), 0.5)])
def test_small_grids_keep_at_least_one_position_at_inference(grid, ratio):
    """A 1x1 or 2x2 grid is never pruned whole at inference (int(N * ratio) would be 0): the
    best-scored position is kept; a single position is kept without scoring."""
    num = grid[0] * grid[1]
    log_probs = torch.randn(3, num, 2).log_softmax(-1)
    calls = []

    def scores():
        calls.append(1)
        return log_probs

    d = decide(scores, ratio, False, 3, 0, grid, like=log_probs)
    k = max(1, int(num * ratio))
    assert d.num_keep == k and d.keep_mask.sum(1).tolist() == [float(k)] * 3
    assert len(calls) == int(k < num)
    margin = log_probs[..., 0] - log_probs[..., 1]
    for b in range(3):
        assert set(d.keep_indices[b].tolist()) == set(margin[b].argsort(descending=True)[:k]
                                                      .tolist())


def test_non_finite_scores_at_inference_raise_naming_the_predictor(monkeypatch):
    monkeypatch.delenv(NONFINITE_ENV, raising=False)
    log_probs = torch.randn(2, 20, 2).log_softmax(-1)
    for bad in (float('nan'), float('inf'), float('-inf')):
        scores = log_probs.clone()
        scores[1, 7, 0] = bad
        with pytest.raises(FloatingPointError, match=r'backbone predictor 2 \(stage 1\)'
                           r'.*NaN / Inf weights in the checkpoint.*fp16 overflow'):
            decide(scores, 0.5, False, 1, 2, (4, 5))
        with pytest.raises(FloatingPointError, match=r'decode_head gate 1 \(level 0\)'):
            decide(scores, 0.5, False, 0, 1, (4, 5), source='decode_head')
        first = decide(log_probs, 0.5, False, 0, 0, (4, 5))  # nested: scores of the kept
        with pytest.raises(FloatingPointError, match='backbone predictor 1'):
            decide(scores[:, :10], 0.25, False, 0, 1, (4, 5), previous=first)
    # Nothing to prune: the scores are not computed, so nothing to refuse.
    assert decide(scores, 1.0, False, 0, 0, (4, 5)).num_keep == 20
    monkeypatch.setenv(NONFINITE_ENV, 'sometimes')
    with pytest.raises(ValueError, match=NONFINITE_ENV):
        decide(scores, 0.5, False, 0, 0, (4, 5))
    # Finite log-probabilities as large as float32 goes pass (their margins do not overflow,
    # and the check sums them in float64).
    monkeypatch.delenv(NONFINITE_ENV)
    huge = torch.zeros(2, 20, 2)
    huge[:, :10, 1] = huge[:, 10:, 0] = -3e38
    assert decide(huge, 0.5, False, 0, 0, (4, 5)).num_keep == 10


def test_inference_keep_mask_is_built_on_first_read_at_the_kept_positions():
    """decide() hands no mask to an inference decision; the first read builds it from order
    (the kept positions, nothing else) and later reads return the same tensor."""
    log_probs = torch.randn(3, 20, 2).log_softmax(-1)
    d = decide(log_probs, 0.3, False, 0, 0, (4, 5))
    assert d.__dict__['keep_mask'] is None
    mask = d.keep_mask
    assert d.keep_mask is mask and mask.shape == (3, 20) and mask.dtype == torch.float32
    for b in range(3):
        assert mask[b].nonzero().flatten().tolist() == sorted(d.keep_indices[b].tolist())
    assert torch.equal(d.margin, log_probs[..., 0] - log_probs[..., 1])
    with pytest.raises(ValueError, match='needs order and num_keep'):
        SparsityDecision.for_training(log_probs, None, stage=0, index=0, keep_ratio=0.3,
                                      hw_shape=(4, 5)).keep_mask


def test_non_finite_scores_warn_once_with_the_option_and_rank_as_before(monkeypatch):
    monkeypatch.setenv(NONFINITE_ENV, 'warn')
    monkeypatch.setattr(decision_module, '_warned_nonfinite', set())
    scores = torch.randn(2, 20, 2).log_softmax(-1)
    scores[:, 3:9] = float('nan')
    with pytest.warns(RuntimeWarning, match=r'neck gate 0 \(level 1\)') as record:
        d = decide(scores, 0.5, False, 1, 0, (4, 5), source='neck')
        again = decide(scores, 0.5, False, 1, 0, (4, 5), source='neck')
    assert len(record) == 1
    expected = torch.sort(scores[..., 0] - scores[..., 1], dim=1, descending=True,
                          stable=True).indices
    assert torch.equal(d.order, expected) and torch.equal(again.order, expected)
    monkeypatch.setenv(NONFINITE_ENV, 'off')
    assert torch.equal(decide(scores, 0.5, False, 1, 0, (4, 5), source='neck').order,
                       expected)


def test_nested_inference_decisions_choose_among_the_previously_kept():
    """A nested decision keeps, per image, the k = int(N * ratio) best-scored positions among
    those the previous one kept (checked position by position against a brute-force pick), and
    drop_pruned hands over exactly those tokens in keep_indices order."""
    torch.manual_seed(0)
    batch, num, dims = 3, 20, 4
    tokens = torch.randn(batch, num, dims)
    first = decide(torch.randn(batch, num, 2).log_softmax(-1), 0.6, False, 0, 0, (4, 5))
    present = drop_pruned(tokens, first)
    assert torch.equal(present, tokens.gather(1, first.keep_indices[..., None].expand(-1, -1, 4)))
    scores = torch.randn(batch, 12, 2).log_softmax(-1)  # for the 12 tokens still present
    second = decide(scores, 0.25, False, 0, 1, (4, 5), previous=first)
    assert second.num_keep == 5 and second.log_probs.dtype == torch.float32
    for b in range(batch):
        ranked = sorted(range(12), key=lambda i: -scores[b, i, 0].item())[:5]
        expected = [first.keep_indices[b, i].item() for i in ranked]
        assert second.keep_indices[b].tolist() == expected
        assert second.keep_mask[b].nonzero().flatten().tolist() == sorted(expected)
        pruned_before = first.keep_mask[b] == 0
        assert torch.isneginf(second.log_probs[b, pruned_before, 0]).all()
        assert sorted(second.order[b].tolist()) == list(range(num))
    kept = drop_pruned(present, second, first)
    assert torch.equal(kept, tokens.gather(1, second.keep_indices[..., None].expand(-1, -1, 4)))
    # Without the places decide() records, drop_pruned finds them: the same tokens.
    assert second.slots is not None
    assert torch.equal(drop_pruned(present, replace(second, slots=None), first), kept)
    # Nothing more to prune: no scores needed, the sequence is handed over unchanged.
    same = decide(None, 0.6, False, 0, 1, (4, 5), previous=first)
    assert torch.equal(same.keep_indices, first.keep_indices)
    assert drop_pruned(present, same, first) is present
    with pytest.raises(ValueError, match='previous one kept 12'):
        decide(scores, 0.7, False, 0, 1, (4, 5), previous=first)


def test_nested_training_masks_stay_inside_the_previous_mask():
    torch.manual_seed(0)
    log_probs = torch.zeros(2, 50, 2, requires_grad=True)
    first = decide(log_probs, 0.5, True, 0, 0, (5, 10))
    second = decide(log_probs, 0.25, True, 0, 1, (5, 10), previous=first)
    assert (second.keep_mask <= first.keep_mask).all()
    assert second.keep_mask.sum() < first.keep_mask.sum()
    second.keep_mask.sum().backward()
    assert log_probs.grad.abs().sum() > 0


def test_inference_ranks_confident_keeps_by_their_margin():
    """Logit margins of 20-40: float32 log_softmax gives log p(keep) == 0.0 for all of them, yet
    the kept set is the k largest margins (not the sort's tie-break)."""
    margins = torch.tensor([[20.0, 40.0, 25.0, 35.0, 30.0, -5.0]])
    log_probs = torch.stack([margins, torch.zeros_like(margins)], -1).log_softmax(-1)
    assert (log_probs[0, :5, 0] == 0).all()  # saturated keep scores
    decision = decide(log_probs, 0.5, False, 0, 0, (2, 3))
    assert decision.keep_indices[0].tolist() == [1, 3, 4]


def test_exactly_tied_scores_keep_the_lower_positions():
    """Identical positions score exactly alike; the kept ones are the first in position order
    (ONNX TopK's tie-break), at any N, also when nested."""
    torch.manual_seed(0)
    for num in (10, 257, 4096):
        log_probs = torch.zeros(2, num, 2).log_softmax(-1)  # every score tied
        decision = decide(log_probs, 0.5, False, 0, 0, (1, num))
        assert decision.keep_indices.tolist() == [list(range(num // 2))] * 2
        nested = decide(log_probs[:, :num // 2], 0.25, False, 0, 1, (1, num), previous=decision)
        assert nested.keep_indices.tolist() == [list(range(int(num * 0.25)))] * 2


def test_inference_decisions_compile_with_fullgraph_without_the_finite_check():
    """torch.compile(fullgraph=True) traces decide() in one graph: the check of non-finite
    scores (a host read) is skipped while compiling, as while tracing or exporting."""
    log_probs = torch.randn(2, 20, 2).log_softmax(-1)
    compiled = torch.compile(lambda s: decide(s, 0.5, False, 0, 0, (4, 5)).keep_mask,
                             fullgraph=True, backend='eager')
    assert torch.equal(compiled(log_probs), decide(log_probs, 0.5, False, 0, 0, (4, 5)).keep_mask)
    log_probs[0, 3] = float('nan')
    assert compiled(log_probs).sum(1).tolist() == [10.0, 10.0]


# ------------------------------------------------------------- decisions are values, recorded
def test_decisions_are_frozen_and_derived_ones_are_new_values():
    """Assigning a field raises; ``dataclasses.replace`` builds a new decision whose lazily
    derived rows are its own (not copied from the original)."""
    d = decide(torch.randn(2, 20, 2).log_softmax(-1), 0.5, False, 0, 0, (4, 5))
    with pytest.raises(FrozenInstanceError):
        d.window_size = 4
    with pytest.raises(FrozenInstanceError):
        d.keep_mask = torch.ones(2, 20)
    kept, pruned = d.flat_rows()
    assert d.flat_rows()[0] is kept  # computed once
    reordered = replace(d, order=d.order.flip(1))
    assert reordered.window_size is None and d.order is not reordered.order
    assert torch.equal(reordered.flat_rows()[0], (reordered.order[:, :10] + torch.tensor(
        [[0], [20]])).reshape(-1))


def test_the_constructors_set_what_each_mode_guarantees():
    where = dict(stage=1, index=2, keep_ratio=0.5, hw_shape=(2, 3), source='neck')
    log_probs, mask = torch.randn(2, 6, 2).log_softmax(-1), torch.ones(2, 6)
    trained = SparsityDecision.for_training(log_probs, mask, **where)
    assert trained.order is None and trained.num_keep is None and trained.keep_indices is None
    order = torch.arange(6).expand(2, 6)
    inferred = SparsityDecision.for_inference(log_probs, mask, order, 3, **where)
    assert inferred.num_keep == 3 and torch.equal(inferred.keep_indices, order[:, :3])
    everything = SparsityDecision.keep_all(2, torch.device('cpu'), **where)
    assert (everything.log_probs, everything.order, everything.num_keep) == (None, None, 6)
    assert torch.equal(everything.keep_mask, torch.ones(2, 6))
    assert (everything.stage, everything.index, everything.source) == (1, 2, 'neck')
    # decide() builds the keep-everything decision with that constructor: equal fields.
    skipped = decide(None, 1.0, True, 1, 2, (2, 3), source='neck', like=mask)
    assert skipped.num_keep == 6 and torch.equal(skipped.keep_mask, everything.keep_mask)


def test_record_decisions_collects_every_decide_call_in_order_and_nests():
    """Nothing is recorded without a recorder; an open recorder gets every decision in call
    order, nested recorders both get those made while both are open, and a recorder closed by
    an exception stops recording."""
    scores = torch.randn(2, 20, 2).log_softmax(-1)
    decide(scores, 0.5, False, 0, 0, (4, 5))
    assert not decision_module._RECORDERS
    with record_decisions() as outer:
        first = decide(scores, 0.5, False, 0, 0, (4, 5))
        with record_decisions() as inner:
            second = decide(scores, 0.3, True, 0, 1, (4, 5))
        third = decide(scores, 1.0, False, 0, 2, (4, 5))
    assert [d is e for d, e in zip(outer, (first, second, third))] == [True] * 3
    assert len(outer) == 3 and len(inner) == 1 and inner[0] is second
    with pytest.raises(RuntimeError, match='boom'):
        with record_decisions() as broken:
            decide(scores, 0.5, False, 0, 0, (4, 5))
            raise RuntimeError('boom')
    decide(scores, 0.5, False, 0, 0, (4, 5))
    assert len(broken) == 1 and not decision_module._RECORDERS
