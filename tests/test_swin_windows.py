"""Window granularity of DynamicSwinTransformer (tiny widths, CPU).

References are independent of the code under test: mmseg's and mmdet's ``SwinTransformer``
with the same weights, and per-window re-derivations written here (dense block output at kept
windows, ``x + fast_path(x)`` at pruned ones, the shifted-window rule recomputed by counting).
"""
import math
from dataclasses import replace

import pytest
import torch
from helpers import FixedScores, randomize

from mmdvit.analysis.flops import count_macs
from mmdvit.models import DynamicSwinTransformer
from mmdvit.models.backbones.swin_layers import DynamicSwinBlock
from mmdvit.sparse import SparsityDecision, decide, record_decisions
from mmdvit.sparse.windows import pool_windows, shifted_decision

TINY = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.0)
ALL_STAGES = dict(sparse_stages=(0, 1, 2, 3), pruning_locs=((0, ), (0, ), (0, 1), (0, )))
RATIOS = (0.5, 0.6, 0.75, 0.5, 1.0)


def window_swin(keep_ratios=RATIOS, window_size=4, **kwargs):
    """A tiny window-granular Swin with a predictor in every stage (two in stage 2, the second
    before its shifted block)."""
    args = dict(TINY, **ALL_STAGES, window_size=window_size, keep_ratios=keep_ratios,
                granularity='window')
    args.update(kwargs)
    return DynamicSwinTransformer(**args)


def stage_maps(height, width, num_stages=4, patch=4):
    """(H_i, W_i) of every stage for an input of (height, width), as mmseg's Swin pads."""
    h, w = math.ceil(height / patch), math.ceil(width / patch)
    maps = [(h, w)]
    for _ in range(num_stages - 1):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        maps.append((h, w))
    return maps


def decisive_predictors(model, gain=20.0):
    """Scale the last layer of every predictor so window scores are far apart."""
    with torch.no_grad():
        for predictors in model.score_predictors.values():
            for predictor in predictors:
                predictor.out_conv[4].weight.mul_(gain)


def upstream_swin(scope, **kwargs):
    """mmseg's or mmdet's SwinTransformer, built through that library's registry (in its own
    scope, whatever default scope earlier tests left)."""
    from mmengine.registry import DefaultScope
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(dict(type='SwinTransformer', init_cfg=None, **kwargs))


def force_window_decisions(model, masks):
    """Replace predictor i of ``model`` (forward order) with :class:`FixedScores` keeping
    exactly ``masks[i]`` (B, nW); ``None`` leaves predictor i (one skipped at ratio 1.0)."""
    slots = [(preds, j) for preds in model.score_predictors.values() for j in range(len(preds))]
    for (preds, j), mask in zip(slots, masks, strict=True):
        if mask is not None:
            preds[j] = FixedScores(mask)


def assert_outputs_close(outs, refs, atol=1e-5):
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs):
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=atol)


# --------------------------------------------------------------------------- 1. ratio 1.0
@pytest.fixture(scope='module')
def upstream_pair():
    """mmseg and mmdet Swins (window 7) sharing random weights, and that state dict."""
    torch.manual_seed(0)
    seg = upstream_swin('mmseg', **TINY)
    state = randomize(seg, seed=3)
    det = upstream_swin('mmdet', **TINY)
    det.load_state_dict(state)
    return seg, det, state


@pytest.mark.parametrize('training', [False, True])
def test_window_mode_at_ratio_one_equals_mmseg_and_mmdet_swin(upstream_pair, training):
    """At keep ratio 1.0 in every stage, window granularity equals mmseg's and mmdet's Swin,
    in eval and in train mode (the predictors are skipped in both), at odd sizes whose maps
    all need padding to the 7-position window, including maps smaller than one window."""
    seg, det, state = upstream_pair
    ours = window_swin(keep_ratios=(1.0, ) * 5, window_size=7)
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected
    assert missing and all('score_predictors' in k or 'fast_path' in k for k in missing)
    for model in (seg, det, ours):
        model.train(training)
    inputs = [torch.randn(2, 3, 511, 517), torch.randn(1, 3, 61, 45)]
    with torch.no_grad():
        for x in inputs:
            ref = seg(x)
            assert_outputs_close(det(x), ref, atol=1e-6)
            with record_decisions() as decisions:
                assert_outputs_close(ours(x), ref)
            assert len(decisions) == 5 and all(d.window_size == 7 for d in decisions)
            assert all(d.log_probs is None and d.num_keep == d.keep_mask.shape[1]
                       and bool(d.keep_mask.eq(1).all()) for d in decisions)
    # 511x517: every stage pads (128x130, 64x65, 32x33, 16x17); 61x45: 16x12, 8x6, 4x3, 2x2.
    assert all(h % 7 and w % 7 for h, w in stage_maps(511, 517))


def test_window_mode_at_ratio_one_costs_what_mmseg_swin_costs(upstream_pair):
    """Keeping every window computes the dense block: the FFN runs on the map's positions, not
    on the padding of its windows (which mmseg's Swin pads for attention only), so the
    multiply-accumulates equal mmseg's exactly (whole counts of the ops executed)."""
    seg = upstream_pair[0]
    seg.eval()  # mmseg's Swin.train() returns None
    ours = window_swin(keep_ratios=(1.0, ) * 5, window_size=7).eval()
    for x in (torch.randn(1, 3, 511, 517), torch.randn(1, 3, 224, 224)):
        assert count_macs(ours, x) == count_macs(seg, x)
    # The same map through the sparse path's windows (every window kept, as a merged training
    # stream computes it) would run the FFN on 133x133 padded positions of stage 0 instead of
    # 128x130: the cost this test keeps out.


# --------------------------------------------------------------------------- 2. train == infer
def test_merged_training_stream_equals_inference_for_forced_window_masks():
    """Training with hard masks equal to the inference decisions gives the inference output
    (predictors replaced by fixed scores that keep the windows real predictors chose, the same
    scores in both modes, so shifted blocks break ties alike): shifted blocks, padded maps
    (23x30 -> 24x32 ...), three images with different kept windows."""
    torch.manual_seed(0)
    model = window_swin()
    randomize(model, seed=1)
    decisive_predictors(model)
    x = torch.randn(3, 3, 90, 118)
    model.eval()
    with torch.no_grad(), record_decisions() as captured:
        out_eval = model(x)
    assert [d.num_keep for d in captured] == [24, 7, 3, 2, 1]  # grids 6x8, 3x4, 2x2, 2x2, 1x1
    assert any(not torch.equal(d.keep_mask[0], d.keep_mask[1])
               or not torch.equal(d.keep_mask[1], d.keep_mask[2]) for d in captured[:4])

    dense = window_swin(keep_ratios=(1.0, ) * 5).eval()
    dense.load_state_dict(model.state_dict())
    with torch.no_grad():
        out_dense = dense(x)

    force_window_decisions(model, [None if d.log_probs is None else d.keep_mask.bool()
                                   for d in captured])
    with torch.no_grad():
        with record_decisions() as fixed:
            out_fixed = model(x)
        assert [torch.equal(d.keep_mask, c.keep_mask)
                for d, c in zip(fixed, captured)] == [True] * 5
        model.train()
        with record_decisions() as trained:
            out_train = model(x)
    assert [torch.equal(d.keep_mask, c.keep_mask)
            for d, c in zip(trained, captured)] == [True] * 5
    assert [d.num_keep for d in trained] == [None] * 4 + [1]
    assert_outputs_close(out_train, out_fixed)
    # The routing matters: the dense (ratio 1.0) model differs.
    assert (out_dense[2] - out_eval[2]).abs().max() > 1e-3


# --------------------------------------------------------------------------- 3. one block
def reference_shifted_order(keep_mask, log_probs, grid, ws, shift, hw):
    """(B, nW) long: the windows of the map rolled by -shift in the documented order (most
    kept positions first, ties by the mean keep margin log p(keep) - log p(prune), then by
    position), counted position by position in float64 over the real (unpadded) positions of
    the (H, W) = ``hw`` map."""
    rows, cols = grid
    height, width = rows * ws, cols * ws
    margin = (log_probs[..., 0] - log_probs[..., 1]).double()
    orders = []
    for b in range(keep_mask.shape[0]):
        keys = []
        for a in range(rows):
            for c in range(cols):
                count, total, size = 0.0, 0.0, 0
                for i in range(a * ws, (a + 1) * ws):
                    for j in range(c * ws, (c + 1) * ws):
                        r, s = (i + shift) % height, (j + shift) % width
                        if r >= hw[0] or s >= hw[1]:
                            continue  # padding
                        window = (r // ws) * cols + s // ws
                        count += float(keep_mask[b, window])
                        total += float(margin[b, window])
                        size += 1
                keys.append((-count, -total / max(size, 1), a * cols + c))
        orders.append([window for _, _, window in sorted(keys)])
    return torch.tensor(orders)


def reference_shifted_keep(keep_mask, log_probs, grid, ws, shift, k, hw):
    """(B, nW) bool: the first k windows of :func:`reference_shifted_order`."""
    order = reference_shifted_order(keep_mask, log_probs, grid, ws, shift, hw)
    return torch.zeros_like(keep_mask, dtype=torch.bool).scatter_(1, order[:, :k], True)


@pytest.mark.parametrize('shift', [False, True])
def test_single_block_under_a_window_decision_matches_a_per_window_reference(shift):
    """A block under an inference window decision outputs the dense block at the positions of
    kept windows and ``x + fast_path(x)`` at the others; a shifted block keeps the rolled
    map's windows with the most kept positions (ties: mean keep margin), recomputed
    here position by position. The 10x13 map pads to 12x16 (3x4 windows of 4)."""
    torch.manual_seed(0)
    ws, hw, batch = 4, (10, 13), 2
    block = DynamicSwinBlock(16, 2, 32, window_size=ws, shift=shift, sparse=True)
    randomize(block, seed=2)
    block.eval()
    x = torch.randn(batch, hw[0] * hw[1], 16)
    grid = (3, 4)
    log_probs = torch.randn(batch, 12, 2).log_softmax(-1)
    decision = decide(log_probs, 0.5, False, 0, 0, grid, window_size=ws)
    with torch.no_grad():
        out = block(x, hw, decision)
        dense = block(x, hw)
        fast = x + block.fast_path(x)
    offset = ws // 2 if shift else 0
    if shift:
        kept = reference_shifted_keep(decision.keep_mask, log_probs, grid, ws, offset, 6, hw)
    else:
        kept = decision.keep_mask.bool()
    assert torch.equal(kept.sum(1), torch.tensor([6, 6]))
    rows, cols = torch.meshgrid(torch.arange(hw[0]), torch.arange(hw[1]), indexing='ij')
    # Position (r, c) lies at ((r - offset) mod 12, (c - offset) mod 16) of the rolled map.
    window = (((rows - offset) % 12 // ws) * 4 + (cols - offset) % 16 // ws).flatten()
    expected = torch.where(kept[:, window].unsqueeze(-1), dense, fast)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # Both paths occur in each image, and they differ.
    assert all(0 < kept[b, window].sum() < window.numel() for b in range(batch))
    assert (dense - fast).abs().max() > 1e-2
    if shift:  # the rolled grid's choice is not the regular grid's indices
        assert not torch.equal(kept, decision.keep_mask.bool())


@pytest.mark.parametrize('hw', [(12, 16), (10, 13)])
def test_shifted_windows_break_ties_by_the_keep_margin_where_probabilities_saturate(hw):
    """Confident windows (margins 20-40: every keep probability is exactly 1.0 in float32) that
    tie on kept positions are ordered by their mean keep margin, as a brute-force reference
    computes it; ranking by the saturated probability would leave them in position order."""
    ws, grid, batch, k = 4, (3, 4), 3, 6
    gen = torch.Generator().manual_seed(0)
    margins = 20.0 + 20.0 * torch.rand(batch, 12, generator=gen)
    log_probs = torch.stack([margins, torch.zeros_like(margins)], -1).log_softmax(-1)
    assert bool((log_probs[..., 0].exp() == 1.0).all())  # the probabilities saturate
    # Checkerboards: many shifted windows hold the same number of kept positions.
    window = torch.arange(12)
    keep = ((window // 4 + window % 4) % 2 == 0).float().expand(batch, 12)
    decision = SparsityDecision(0, 0, 0.5, grid, log_probs, keep, None, k, window_size=ws)
    shifted = shifted_decision(decision, ws, ws // 2, hw)
    expected = reference_shifted_order(keep, log_probs, grid, ws, ws // 2, hw)
    assert torch.equal(shifted.order, expected)
    assert torch.equal(shifted.keep_mask.bool(),
                       reference_shifted_keep(keep, log_probs, grid, ws, ws // 2, k, hw))
    # The margins decide: the probability rule (position order among ties) orders otherwise,
    # and on the unpadded map, where all shifted windows tie, keeps other windows.
    saturated = reference_shifted_order(keep, torch.zeros_like(log_probs), grid, ws, ws // 2,
                                        hw)
    assert not torch.equal(expected, saturated)
    if hw == (12, 16):
        assert not torch.equal(expected[:, :k].sort(1).values, saturated[:, :k].sort(1).values)


# --------------------------------------------------------------------------- 4. counts
@pytest.mark.parametrize('batch', [1, 2, 3])
def test_inference_keeps_int_num_windows_times_ratio_per_image(batch):
    """Every decision keeps exactly int(nW * ratio) windows of each image over the window grid
    (ceil(H / ws), ceil(W / ws)) of its stage's map; the decision carried to the shifted grid
    keeps the same number, at inference (per batch) and in training (per image)."""
    ws = 4
    model = window_swin(keep_ratios=(0.5, 0.6, 0.75, 0.5, 0.5), window_size=ws).eval()
    x = torch.randn(batch, 3, 96, 160)
    with torch.no_grad(), record_decisions() as decisions:
        outs = model(x)
    maps = stage_maps(96, 160)
    assert [tuple(o.shape[-2:]) for o in outs] == maps
    stages = [0, 1, 2, 2, 3]
    assert [d.stage for d in decisions] == stages
    for d, stage, ratio in zip(decisions, stages, (0.5, 0.6, 0.75, 0.5, 0.5)):
        h, w = maps[stage]
        grid = (math.ceil(h / ws), math.ceil(w / ws))
        k = int(grid[0] * grid[1] * ratio)
        assert d.window_size == ws and tuple(d.hw_shape) == grid
        assert d.num_keep == k and d.keep_indices.shape == (batch, k)
        assert torch.equal(d.keep_mask.sum(1), torch.full((batch, ), float(k)))
        for b in range(batch):
            assert d.keep_indices[b].unique().numel() == k
            assert d.keep_mask[b, d.keep_indices[b]].eq(1).all()
        moved = shifted_decision(d, ws, ws // 2, maps[d.stage])
        assert moved.num_keep == k and moved.window_size == ws
        assert torch.equal(moved.keep_mask.sum(1), torch.full((batch, ), float(k)))
        assert moved.keep_indices.shape == (batch, k)
    assert [d.num_keep for d in decisions] == [30, 9, 4, 3, 1]

    model.train()
    with record_decisions() as trained:
        model(x)
    for d in trained:
        moved = shifted_decision(d, ws, ws // 2, maps[d.stage])
        torch.testing.assert_close(moved.keep_mask.detach().sum(1), d.keep_mask.detach().sum(1))
        assert set(moved.keep_mask.detach().unique().tolist()) <= {0.0, 1.0}


# --------------------------------------------------------------------------- 5. pooling
def test_pool_windows_averages_real_positions_only():
    """Each window's pooled vector is the mean over its real positions: the partial windows of
    the last row / column of a 10x13 map (windows of 4) ignore the padding."""
    torch.manual_seed(0)
    hw, ws = (10, 13), 4
    tokens = torch.randn(2, hw[0] * hw[1], 5) + 3.0
    pooled, grid = pool_windows(tokens, hw, ws)
    assert grid == (3, 4) and pooled.shape == (2, 12, 5)
    image = tokens.view(2, *hw, 5)
    for a in range(3):
        for c in range(4):
            patch = image[:, a * ws:(a + 1) * ws, c * ws:(c + 1) * ws]
            expected = patch.reshape(2, -1, 5).mean(1)
            torch.testing.assert_close(pooled[:, a * 4 + c], expected)
    # The corner window holds 2x1 real positions.
    torch.testing.assert_close(pooled[:, 11], image[:, 8:10, 12].mean(1))


# --------------------------------------------------------------------------- 6. bf16
def test_bf16_autocast_keeps_the_float32_windows():
    """Under bf16 autocast the predictors still score in float32: their scores move by far
    less than the gap between the last kept and the first pruned window, so every decision
    keeps the same windows of each image as in float32; outputs stay finite and close."""
    torch.manual_seed(0)
    model = window_swin()
    # Weights whose decisions have no near-tie (the claim is about untied scores: a gap below
    # the bf16 perturbation may go either way, see test_backbone_sparsity's untied_swaps).
    randomize(model, seed=4)
    model.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        with record_decisions() as ref_decisions:
            ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16), record_decisions() as low_decisions:
            low = model(x)
    assert [d.num_keep for d in ref_decisions] == [12, 3, 1, 1, 1]  # grids 4x6, 2x3, 1x2, 1x1
    for r, d in zip(ref_decisions, low_decisions):
        assert d.num_keep == r.num_keep and d.window_size == r.window_size
        if r.log_probs is None:
            continue
        assert d.log_probs.dtype == torch.float32
        scores = r.log_probs[..., 0].sort(dim=1, descending=True).values
        gap = (scores[:, r.num_keep - 1] - scores[:, r.num_keep]).min()
        # bf16 scores would move in steps of ~4e-3; float32 scoring of bf16 features moves them
        # by a fraction of the gap, which cannot reorder the kept and pruned windows.
        assert (r.log_probs - d.log_probs).abs().max() < gap / 2
        for b in range(x.shape[0]):
            assert set(r.keep_indices[b].tolist()) == set(d.keep_indices[b].tolist())
    for a, b in zip(ref, low):
        assert a.shape == b.shape and torch.isfinite(b).all()
        assert (a - b.float()).norm() / a.norm() < 0.05


# --------------------------------------------------------------------------- 7. arguments
@pytest.mark.parametrize('kwargs, message', [
    (dict(granularity='patch'), "granularity='patch'.*'window'"),
    (dict(keep_ratios=(0.5, 0.5)), 'keep_ratios=.*one ratio per predictor'),
    (dict(keep_ratios=(0.5, ) * 6), 'keep_ratios=.*one ratio per predictor'),
])
def test_bad_arguments_raise_value_errors_naming_the_fix(kwargs, message):
    """An unknown granularity and a keep_ratios of the wrong length for the schedule raise a
    ValueError naming the argument and what to give instead."""
    with pytest.raises(ValueError, match=message):
        window_swin(**kwargs)


def test_a_decision_over_other_windows_is_rejected_by_the_block():
    """A window decision built for another window size, or another grid, is refused."""
    block = DynamicSwinBlock(8, 1, 16, window_size=4, sparse=True).eval()
    x = torch.randn(1, 10 * 13, 8)
    decision = decide(torch.randn(1, 12, 2).log_softmax(-1), 0.5, False, 0, 0, (3, 4),
                      window_size=7)
    with pytest.raises(ValueError, match='window_size=4'):
        block(x, (10, 13), decision)
    decision = replace(decision, window_size=4)
    with pytest.raises(ValueError, match='window grid'):
        block(torch.randn(1, 10 * 17, 8), (10, 17), decision)


# --------------------------------------------------------------------------- 8. gradients
@pytest.mark.parametrize('locs', [(0, ), (1, )], ids=['regular_block', 'shifted_block_only'])
def test_output_loss_reaches_the_predictor_of_every_stage(locs):
    """In training, a loss on the outputs alone back-propagates to every stage's predictor,
    also when the predictor's only consumer is a shifted block (pruning_locs=(1,))."""
    torch.manual_seed(0)
    model = window_swin(keep_ratios=(0.5, ) * 4, pruning_locs=(locs, ) * 4).train()
    with record_decisions() as decisions:
        outs = model(torch.randn(2, 3, 64, 96))
    assert all(d.window_size == 4 for d in decisions)
    sum(o.pow(2).mean() for o in outs).backward()
    for stage in '0123':
        for predictor in model.score_predictors[stage]:
            grads = [p.grad for p in predictor.parameters()]
            assert all(g is not None for g in grads)
            assert predictor.out_conv[4].weight.grad.abs().sum() > 0, stage
