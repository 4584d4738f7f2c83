"""Sparsity behaviour shared by both dynamic backbones (tiny widths, CPU)."""
import pytest
import torch

from helpers import force_decisions, random_keep_sets
from mmengine.registry import init_default_scope
from test_sparsity_trainer import seg_batch, seg_student

from mmdvit.models import DynamicConvNeXt, DynamicSwinTransformer, keep_ratio_loss
from mmdvit.sparse import SparsityDecision, record_decisions

RATIOS = (0.7, 0.5, 0.3)


def tiny_swin(**kwargs):
    args = dict(embed_dims=32, depths=(1, 1, 4, 1), num_heads=(1, 2, 4, 8), drop_path_rate=0.0,
                pruning_locs=(0, 1, 2), keep_ratios=RATIOS)
    args.update(kwargs)
    return DynamicSwinTransformer(**args)


def tiny_convnext(**kwargs):
    args = dict(arch=dict(depths=[1, 1, 4, 1], channels=[16, 32, 64, 128]),
                out_indices=(0, 1, 2, 3),
                gap_before_final_norm=False, pruning_locs=(0, 1, 2), keep_ratios=RATIOS,
                layer_scale_init_value=0.5)
    args.update(kwargs)
    return DynamicConvNeXt(**args)


BUILDERS = {'swin': tiny_swin, 'convnext': tiny_convnext}


def stage_hw(name, height, width):
    """(H, W) of stage 3 (index 2) for an input of (height, width)."""
    if name == 'swin':
        h, w = -(-height // 4), -(-width // 4)
        for _ in range(2):
            h, w = -(-h // 2), -(-w // 2)
        return h, w
    h, w = height // 4, width // 4
    for _ in range(2):
        h, w = h // 2, w // 2
    return h, w


@pytest.mark.parametrize('name', BUILDERS)
@pytest.mark.parametrize('shape', [(128, 128), (97, 131)])
def test_training_with_forced_masks_equals_inference(name, shape):
    backbone = BUILDERS[name]()
    h, w = stage_hw(name, *shape)
    masks = random_keep_sets(2, h * w, RATIOS)
    assert not torch.equal(masks[0], masks[1])  # the kept set changes between predictors
    force_decisions(backbone, 2, masks)
    x = torch.randn(2, 3, *shape)
    backbone.train()
    with record_decisions() as decisions:
        out_train = backbone(x)
    train_masks = [d.keep_mask for d in decisions]
    backbone.eval()
    with torch.no_grad():
        out_eval = backbone(x)
        dense_like = BUILDERS[name](keep_ratios=(1.0, 1.0, 1.0))
        dense_like.load_state_dict(backbone.state_dict(), strict=False)
        out_dense = dense_like.eval()(x)
    for mask, expected in zip(train_masks, masks):
        assert torch.equal(mask.detach().bool(), expected)
    for a, b in zip(out_train, out_eval):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # The routing matters: the sparse stage output is not the dense one.
    assert (out_eval[2] - out_dense[2]).abs().max() > 1e-3


@pytest.mark.parametrize('name', BUILDERS)
@pytest.mark.parametrize('batch', [1, 2, 3])
def test_inference_keeps_exactly_int_n_ratio_and_full_maps(name, batch):
    backbone = BUILDERS[name]().eval()
    x = torch.randn(batch, 3, 96, 160)
    with torch.no_grad(), record_decisions() as decisions:
        outs = backbone(x)
    h, w = stage_hw(name, 96, 160)
    assert [d.index for d in decisions] == [0, 1, 2]
    assert [d.keep_ratio for d in decisions] == list(RATIOS)
    for d, ratio in zip(decisions, RATIOS):
        k = int(h * w * ratio)
        assert d.hw_shape == (h, w)
        assert d.keep_indices.shape == (batch, k)
        assert torch.equal(d.keep_mask.sum(1), torch.full((batch, ), float(k)))
        for b in range(batch):
            assert d.keep_indices[b].unique().numel() == k
    if name == 'swin':
        expected = [(24, 40), (12, 20), (6, 10), (3, 5)]
    else:
        expected = [(24, 40), (12, 20), (6, 10), (3, 5)]
    assert [tuple(o.shape[-2:]) for o in outs] == expected
    assert all(o.shape[0] == batch for o in outs)


@pytest.mark.parametrize('name', BUILDERS)
def test_keep_ratio_one_equals_the_dense_backbone(name):
    sparse = BUILDERS[name](keep_ratios=(1.0, 1.0, 1.0)).eval()
    dense = BUILDERS[name](sparse_stages=()).eval()
    missing, unexpected = dense.load_state_dict(sparse.state_dict(), strict=False)
    assert not missing and all('score_predictors' in k or 'fast_path' in k for k in unexpected)
    x = torch.randn(2, 3, 100, 75)
    with torch.no_grad():
        for a, b in zip(sparse(x), dense(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not hasattr(dense, 'score_predictors') or len(dense.score_predictors) == 0


@pytest.mark.parametrize('name', BUILDERS)
def test_bf16_autocast_stays_close_to_float32(name):
    backbone = BUILDERS[name]()
    h, w = stage_hw(name, 128, 128)
    force_decisions(backbone, 2, random_keep_sets(2, h * w, RATIOS))
    x = torch.randn(2, 3, 128, 128)
    backbone.eval()
    with torch.no_grad():
        ref = backbone(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = backbone(x)
    assert len(ref) == len(low) == 4
    for a, b in zip(ref, low):
        assert a.shape == b.shape
        rel = (a - b.float()).norm() / a.norm()
        assert rel < 0.05
    # Training: the bf16 backward reaches every parameter float32 training reaches, with finite
    # float32 gradients, and departs from float32's gradients no more than the dense backbone
    # (the same weights, no sparsity) does under the same autocast.
    dense = BUILDERS[name](sparse_stages=())
    dense.load_state_dict(backbone.state_dict(), strict=False)
    sparse_error = bf16_gradient_error(backbone, x)
    assert sparse_error < 2 * bf16_gradient_error(dense, x) + 0.05


def bf16_gradient_error(backbone, x) -> float:
    """Relative distance between the gradients of a bf16-autocast and a float32 training step
    (all parameters flattened together), after checking that both reach the same parameters
    (fast paths among them, for a sparse backbone) with finite float32 gradients."""
    grads = {}
    for precision in ('float32', 'bfloat16'):
        backbone.zero_grad()
        backbone.train()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=precision == 'bfloat16'):
            loss = sum(o.float().pow(2).mean() for o in backbone(x))
        loss.backward()
        grads[precision] = {n: p.grad.clone() for n, p in backbone.named_parameters()
                            if p.grad is not None}
    assert grads['bfloat16'].keys() == grads['float32'].keys()
    sparse = len(getattr(backbone, 'score_predictors', ())) > 0
    assert any('fast_path' in n for n in grads['float32']) == sparse
    for n, grad in grads['bfloat16'].items():
        assert grad.dtype == torch.float32 and bool(torch.isfinite(grad).all()), n
    ref = torch.cat([g.flatten() for g in grads['float32'].values()])
    low = torch.cat([g.flatten() for g in grads['bfloat16'].values()])
    return ((low - ref).norm() / ref.norm()).item()


def untied_swaps(ref_decision, low_decision) -> torch.Tensor:
    """Positions kept by exactly one of two decisions whose float32 keep score (in the
    reference) is not tied with the k-th kept score, i.e. differs from it by more than 2% of
    the scores' spread. A decision that depends only on the scores has none."""
    scores = ref_decision.log_probs[..., 0]
    kth = scores.topk(ref_decision.num_keep, dim=1).values[:, -1:]
    untied = (scores - kth).abs() > 0.02 * scores.std(dim=1, keepdim=True)
    swapped = ref_decision.keep_mask != low_decision.keep_mask
    return swapped & untied


@pytest.mark.parametrize('name', BUILDERS)
def test_bf16_autocast_keeps_the_float32_positions(name):
    """Under bf16 autocast the predictors still score (and top-k still ranks) in float32, so
    the kept positions are float32's except where scores are tied; with the predictors in bf16
    their log-probabilities round to a few bits and reorder many positions."""
    torch.manual_seed(0)
    backbone = BUILDERS[name]().eval()
    with torch.no_grad():  # decisive predictors: scores spread far beyond bf16 feature noise
        for predictor in backbone.score_predictors['2']:
            predictor.out_conv[-2].weight.mul_(20.0)
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        with record_decisions() as ref:
            backbone(x)
        with torch.autocast('cpu', dtype=torch.bfloat16), record_decisions() as low:
            backbone(x)
    assert [d.log_probs.dtype for d in low] == [torch.float32] * 3
    for r, d in zip(ref, low):
        assert d.num_keep == r.num_keep
        assert not untied_swaps(r, d).any()


@pytest.mark.parametrize('name', BUILDERS)
def test_gradients_reach_the_predictors_and_fast_paths(name):
    backbone = BUILDERS[name]().train()
    with record_decisions() as decisions:
        outs = backbone(torch.randn(2, 3, 64, 64))
    loss = sum(o.pow(2).mean() for o in outs) + keep_ratio_loss(decisions)
    loss.backward()
    for predictor in backbone.score_predictors['2']:
        assert predictor.out_conv[4].weight.grad.abs().sum() > 0
    fast_grads = [p.grad for n, p in backbone.named_parameters() if 'fast_path' in n]
    assert fast_grads and all(g is not None and g.abs().sum() > 0 for g in fast_grads)


@pytest.mark.parametrize('name', BUILDERS)
def test_gradient_checkpointing_gives_the_same_gradients(name):
    torch.manual_seed(1)
    plain = BUILDERS[name]()
    h, w = stage_hw(name, 64, 64)
    masks = random_keep_sets(2, h * w, RATIOS)
    force_decisions(plain, 2, masks)
    cp = BUILDERS[name](with_cp=True)
    force_decisions(cp, 2, masks)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for model in (plain, cp):
        model.train()
        sum(o.pow(2).mean() for o in model(x)).backward()
    for (name_a, a), (_, b) in zip(plain.named_parameters(), cp.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, msg=name_a)


@pytest.mark.parametrize('name', BUILDERS)
def test_frozen_stages_do_not_train(name):
    frozen = 2 if name == 'swin' else 1
    backbone = BUILDERS[name](frozen_stages=frozen)
    backbone.train()
    stage0 = backbone.stages[0]
    assert not stage0.training
    assert all(not p.requires_grad for p in stage0.parameters())
    assert all(p.requires_grad for p in backbone.stages[2].parameters())
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    opt = torch.optim.SGD(backbone.parameters(), lr=0.1)
    sum(o.mean() for o in backbone(torch.randn(1, 3, 64, 64))).backward()
    opt.step()
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith('stages.0.'))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith('stages.2.'))


@pytest.mark.parametrize('name', BUILDERS)
@pytest.mark.parametrize('kwargs, message', [
    (dict(keep_ratios=(0.7, 0.5, 0.0)), '0 < ratio <= 1'),
    (dict(keep_ratios=(0.7, 0.5, 1.5)), '0 < ratio <= 1'),
    (dict(pruning_locs=(0, 1, 2, 3, 4), keep_ratios=(0.9, ) * 5), 'only 4 blocks'),
    (dict(pruning_locs=(0, 4, 9)), 'out of range'),
    (dict(out_indices=(0, 4)), 'out_indices'),
])
def test_bad_arguments_raise_clear_errors(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        BUILDERS[name](**kwargs)


@pytest.mark.parametrize('name', BUILDERS)
def test_small_maps_keep_one_position_at_inference(name):
    """A 32x32 input gives stage 2 a 2x2 map: ratios 0.2 / 0.1 keep one position per image
    (int(4 * ratio) = 0 would prune the stage whole) chosen by the predictor."""
    backbone = BUILDERS[name](keep_ratios=(0.2, 0.1, 0.1)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), record_decisions() as decisions:
        outs = backbone(x)
    assert [d.hw_shape for d in decisions] == [(2, 2)] * 3
    assert [d.num_keep for d in decisions] == [1] * 3
    assert all(d.keep_mask.sum(1).tolist() == [1.0, 1.0] for d in decisions)
    for d in decisions:
        margin = d.log_probs[..., 0] - d.log_probs[..., 1]
        assert torch.equal(d.keep_indices[:, 0], margin.argmax(1))
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('name', BUILDERS)
def test_non_finite_scores_raise_naming_the_predictor(name, monkeypatch):
    """NaN weights in one predictor, or Inf in the input, are refused at inference with the
    predictor named; MMDVIT_NONFINITE_SCORES=warn warns once and ranks them as before."""
    monkeypatch.delenv('MMDVIT_NONFINITE_SCORES', raising=False)
    backbone = BUILDERS[name]().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        backbone.score_predictors['2'][1].out_conv[4].weight[0, 0] = float('nan')
        with pytest.raises(FloatingPointError,
                           match=r'backbone predictor 1 \(stage 2\) produced non-finite'):
            backbone(x)
        clean = BUILDERS[name]().eval()
        bad = x.clone()
        bad[0, :, 5, 7] = float('inf')
        with pytest.raises(FloatingPointError, match=r'backbone predictor 0 \(stage 2\)'):
            clean(bad)
        monkeypatch.setenv('MMDVIT_NONFINITE_SCORES', 'warn')
        from mmdvit.sparse import decision as decision_module
        monkeypatch.setattr(decision_module, '_warned_nonfinite', set())
        with pytest.warns(RuntimeWarning, match=r'backbone predictor 1 \(stage 2\)') as record:
            backbone(x)
            with record_decisions() as decisions:
                outs = backbone(x)
    assert len(record) == 1
    decision = decisions[1]
    assert decision.log_probs.isnan().all()  # a NaN weight spreads to every score
    assert torch.equal(decision.order, torch.arange(decision.order.shape[1]).expand(2, -1))
    assert all(torch.isfinite(o).all() for o in outs)


def decision_attributes(model: torch.nn.Module) -> list:
    """(module, attribute) of every decision, or list of decisions, stored on a module."""
    return [(name, key) for name, module in model.named_modules()
            for key, value in vars(module).items()
            if any(isinstance(v, SparsityDecision)
                   for v in (value if isinstance(value, (list, tuple)) else [value]))]


@pytest.mark.parametrize('name', BUILDERS)
def test_a_backbone_called_twice_under_one_recorder_hands_out_both_calls(name):
    """Re-entrancy: two calls under one recorder give both calls' decisions, equal (masks,
    orders, counts exactly) to those of two separately recorded calls; without a recorder
    nothing is kept, and no module holds a decision after its forward."""
    backbone = BUILDERS[name]().eval()
    x, y = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        backbone(x)
        with record_decisions() as both:
            backbone(x)
            backbone(y)
        with record_decisions() as first:
            backbone(x)
        with record_decisions() as second:
            backbone(y)
    assert len(both) == 6 and len(first) == len(second) == 3
    for got, expected in zip(both, first + second):
        assert got.num_keep == expected.num_keep and got.stage == expected.stage
        assert torch.equal(got.keep_mask, expected.keep_mask)
        assert torch.equal(got.order, expected.order)
    assert any(not torch.equal(a.order, b.order) for a, b in zip(first, second))
    assert not decision_attributes(backbone)


def test_slide_inference_records_the_decisions_of_every_window():
    """A whole segmentor in sliding-window inference: every crop's backbone decisions, in the
    order mmseg visits the crops, each equal to those of the backbone run on that crop."""
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    cfg = seg_student()
    cfg.test_cfg = dict(mode='slide', crop_size=(32, 32), stride=(16, 16))
    model = MODELS.build(cfg).eval()
    data = model.data_preprocessor(seg_batch(batch=1), False)
    with torch.no_grad(), record_decisions() as decisions:
        preds = model.predict(data['inputs'], data['data_samples'])
    assert preds[0].pred_sem_seg.data.shape == (1, 64, 64)
    starts = (0, 16, 32)  # 3 x 3 crops of 32 x 32, stride 16, row by row
    assert len(decisions) == 9 * 3
    with torch.no_grad():
        for i, (top, left) in enumerate((t, l) for t in starts for l in starts):
            with record_decisions() as expected:
                model.backbone(data['inputs'][:, :, top:top + 32, left:left + 32])
            for got, ref in zip(decisions[3 * i:3 * i + 3], expected):
                assert got.num_keep == ref.num_keep and torch.equal(got.order, ref.order)
    assert not decision_attributes(model)
