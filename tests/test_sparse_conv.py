"""The block-sparse convolution of the core and DynamicUPerHead: kept tiles equal the dense
convolution, pruned tiles the 1x1 fast path, training equals inference for the same kept tiles,
and at keep ratio 1.0 the head is mmseg's UPerHead."""
import pytest
import torch
import torch.nn.functional as F
from helpers import FixedTileScores, gate_decision, random_keep_sets, randomize
from mmcv.cnn import ConvModule
from mmengine.registry import MODELS, DefaultScope
from torch import nn

from mmdvit.models.layers import SparseConvModule
from mmdvit.models.layers.sparse_conv_module import settings
from mmdvit.sparse import (SparseConvGate, SparsityDecision, decide, keep_everything,
                           record_decisions, sparse_conv2d)
from mmdvit.sparse.gate import low_rank_residual
from mmdvit.sparse.predictor import BlockScorePredictor
from mmdvit.sparse.sparse_conv import block_grid, expand_block_mask


def tile_decision(keep: torch.Tensor, grid, training: bool) -> SparsityDecision:
    """A decision keeping exactly ``keep`` (B, tiles) through the real decide()."""
    logits = torch.where(keep, 50.0, -50.0)
    log_probs = torch.stack([logits, -logits], -1).log_softmax(-1)
    return decide(log_probs, keep[0].float().mean().item(), training, 0, 0, grid)


@pytest.mark.parametrize('batch, size, k, dilation, block', [
    (1, (13, 17), 3, 1, 4), (2, (16, 16), 3, 1, 8), (3, (9, 22), 1, 1, 4),
    (2, (15, 11), 3, 2, 5), (2, (10, 12), 5, 1, 3)])
def test_sparse_conv_equals_dense_conv_on_kept_tiles_and_fast_path_elsewhere(
        batch, size, k, dilation, block):
    torch.manual_seed(0)
    x = torch.randn(batch, 6, *size)
    weight, bias = torch.randn(5, 6, k, k), torch.randn(5)
    fast_w, fast_b = torch.randn(5, 6, 1, 1), torch.randn(5)
    grid = block_grid(*size, block)
    keep = random_keep_sets(batch, grid[0] * grid[1], [0.5], seed=1)[0]
    decision = tile_decision(keep, grid, training=False)
    assert decision.num_keep == int(grid[0] * grid[1] * 0.5)
    out = sparse_conv2d(x, weight, bias, fast_w, fast_b, decision, block, dilation)
    dense = F.conv2d(x, weight, bias, padding=dilation * (k - 1) // 2, dilation=dilation)
    fast = F.conv2d(x, fast_w, fast_b)
    mask = expand_block_mask(decision.keep_mask, grid, block, *size).bool().expand_as(dense)
    assert out.shape == dense.shape
    torch.testing.assert_close(out[mask], dense[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[~mask], fast[~mask], rtol=1e-5, atol=1e-5)
    # training: the merged stream gives the same map for the same kept tiles
    merged = sparse_conv2d(x, weight, bias, fast_w, fast_b, tile_decision(keep, grid, True),
                           block, dilation)
    torch.testing.assert_close(merged, out, rtol=1e-5, atol=1e-5)


def test_sparse_conv_under_bf16_autocast_stays_close_to_float32():
    torch.manual_seed(0)
    x, weight = torch.randn(2, 16, 20, 20), torch.randn(8, 16, 3, 3) * 0.1
    fast_w = weight.sum((2, 3), keepdim=True)
    keep = random_keep_sets(2, 25, [0.4])[0]
    ref = sparse_conv2d(x, weight, None, fast_w, None, tile_decision(keep, (5, 5), False), 4)
    with torch.autocast('cpu', torch.bfloat16):
        out = sparse_conv2d(x, weight, None, fast_w, None, tile_decision(keep, (5, 5), False),
                            4)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


def test_fast_path_starts_as_the_summed_kernel_and_matches_it_on_flat_input():
    torch.manual_seed(0)
    gate = SparseConvGate(4, 3, 0.5, block=4)
    weight, bias = torch.randn(3, 4, 3, 3), torch.randn(3)
    gate.init_fast_path(weight, bias)
    flat = torch.ones(1, 4, 12, 12) * torch.randn(1, 4, 1, 1)
    dense = F.conv2d(flat, weight, bias, padding=1)
    torch.testing.assert_close(gate.fast_path(flat)[..., 1:-1, 1:-1], dense[..., 1:-1, 1:-1])


@pytest.mark.parametrize('batch', [1, 2, 3])
def test_gate_keeps_int_tiles_times_ratio_per_image_and_decides_in_float32(batch):
    torch.manual_seed(0)
    gate = SparseConvGate(8, 8, 0.3, block=4, source='decode_head', index=1, level=2).eval()
    x = torch.randn(batch, 8, 18, 23)  # 5 x 6 tiles
    decision = gate_decision(gate, x)
    assert decision.hw_shape == (5, 6) and decision.num_keep == int(30 * 0.3)
    assert decision.keep_mask.sum(1).tolist() == [int(30 * 0.3)] * batch
    assert (decision.source, decision.stage, decision.index) == ('decode_head', 2, 1)
    scores = gate.score_predictor(x)[..., 0]
    expected = scores.topk(decision.num_keep, dim=1).indices.sort(1).values
    assert torch.equal(decision.keep_indices.sort(1).values, expected)
    with torch.autocast('cpu', torch.bfloat16):
        amp = gate_decision(gate, x.bfloat16())
    assert amp.log_probs.dtype == torch.float32
    # bf16 input rounds the scored map, so compare with float32 decisions on the same values
    assert torch.equal(amp.keep_mask, gate_decision(gate, x.bfloat16().float()).keep_mask)


def test_block_predictor_scores_every_tile_including_partial_ones():
    predictor = BlockScorePredictor(6, embed_dims=8, block=4)
    out = predictor(torch.randn(2, 6, 9, 13))
    assert out.shape == (2, 3 * 4, 2)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 12))


@pytest.mark.parametrize('kwargs, message', [
    (dict(keep_ratios=(0.5, )), 'one ratio per entry'),
    (dict(keep_ratios=(0.5, 0.5, 0.0)), '0 < ratio <= 1'),
    (dict(sparse_convs=('fpn_convs.3', 'fpn_bottleneck')), 'must name distinct'),
    (dict(block_size=0), 'block_size'),
])
def test_dynamic_uper_head_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_head(**kwargs)


HEAD = dict(in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3], channels=16,
            pool_scales=(1, 2, 3, 6), dropout_ratio=0.0, num_classes=5, align_corners=False,
            norm_cfg=dict(type='BN', requires_grad=True),
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))
SPARSE = ('fpn_convs.0', 'fpn_convs.1', 'fpn_bottleneck')


def build_head(type_='mmdvit.DynamicUPerHead', **kwargs):
    import mmseg.models  # noqa: F401  (registers UPerHead)
    args = dict(HEAD, type=type_)
    if type_ != 'UPerHead':
        args.update(keep_ratios=(1.0, 1.0, 1.0), sparse_convs=SPARSE, block_size=4)
    args.update(kwargs)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(args)


def head_inputs(batch: int = 2):
    torch.manual_seed(1)
    sizes = [(29, 34), (15, 17), (8, 9), (4, 5)]
    return [torch.randn(batch, c, *s) for c, s in zip(HEAD['in_channels'], sizes)]


@pytest.mark.parametrize('training', [False, True])
def test_dynamic_uper_head_at_ratio_one_is_mmseg_uper_head(training):
    """In eval and in train mode (batch statistics in both heads): at ratio 1.0 the
    predictors are skipped in both."""
    dense = build_head('UPerHead')
    state = randomize(dense)
    dynamic = build_head()
    result = dynamic.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all('.gate.' in k for k in result.missing_keys)
    assert set(dynamic.state_dict()) - set(result.missing_keys) == set(state)
    dense.train(training), dynamic.train(training)
    with torch.no_grad(), record_decisions() as decisions:
        assert torch.equal(dynamic(head_inputs()), dense(head_inputs()))
    assert all(d.log_probs is None and bool(d.keep_mask.eq(1).all()) for d in decisions)
    # the fast paths were started from the loaded kernels
    torch.testing.assert_close(dynamic.fpn_bottleneck.gate.fast_path.weight,
                               state['fpn_bottleneck.conv.weight'].sum((2, 3), keepdim=True))
    assert [d.num_keep == d.hw_shape[0] * d.hw_shape[1] for d in decisions] == [True] * 3


def test_dynamic_uper_head_training_stream_equals_inference_for_the_same_tiles():
    head = build_head(keep_ratios=(0.5, 0.4, 0.3))
    randomize(head)
    inputs = head_inputs()
    grids = [(8, 9)] * 3  # 29x34 in 4x4 tiles; the 15x17 1/8 map in 2x2 tiles
    for i, (name, grid, ratio) in enumerate(zip(SPARSE, grids, (0.5, 0.4, 0.3))):
        keep = random_keep_sets(2, grid[0] * grid[1], [ratio], seed=i)[0]
        head.get_submodule(name).gate.score_predictor = FixedTileScores(keep)
    head.train()
    for m in head.modules():  # batch statistics would differ between modes
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    with record_decisions() as trained:
        train_out = head(inputs)
    train_masks = [d.keep_mask for d in trained]
    head.eval()
    with torch.no_grad(), record_decisions() as decisions:
        eval_out = head(inputs)
    assert [torch.equal(a, d.keep_mask) for a, d in zip(train_masks, decisions)] == [True] * 3
    assert [d.num_keep for d in decisions] == [36, 28, 21]
    torch.testing.assert_close(train_out, eval_out, rtol=1e-4, atol=1e-5)


def test_dynamic_uper_head_gradients_reach_every_predictor():
    head = build_head(keep_ratios=(0.5, 0.5, 0.5)).train()
    head(head_inputs()).sum().backward()
    for name in SPARSE:
        grad = head.get_submodule(name).gate.score_predictor.proj.weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize('size, block', [((13, 17), 4), ((16, 16), 8), ((9, 22), 5)])
def test_traceable_gather_and_paste_equal_the_eager_ones(size, block):
    """On the accelerator path (GPUs, tracing / torch.compile / export) the tiles move through
    indexing ops instead of a Python loop over tile indices: the same result."""
    from mmdvit.sparse.accelerator import accelerator_path
    torch.manual_seed(0)
    x = torch.randn(2, 6, *size)
    weight, fast_w = torch.randn(5, 6, 3, 3), torch.randn(5, 6, 1, 1)
    grid = block_grid(*size, block)
    keep = random_keep_sets(2, grid[0] * grid[1], [0.4], seed=3)[0]
    eager = sparse_conv2d(x, weight, None, fast_w, None, tile_decision(keep, grid, False),
                          block)
    with accelerator_path():
        traced = sparse_conv2d(x, weight, None, fast_w, None, tile_decision(keep, grid, False),
                               block)
    torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('training', [False, True])
def test_gate_at_ratio_one_is_the_dense_convolution_without_scoring(training):
    """In training as at inference, ratio 1.0 keeps every tile (no Gumbel draw) without running
    the predictor, and the gate computes the dense convolution."""
    torch.manual_seed(0)
    gate = SparseConvGate(6, 5, 1.0, block=4, source='neck', index=1, level=1).train(training)
    calls = []
    gate.score_predictor.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(3, 6, 13, 17)
    weight, bias = torch.randn(5, 6, 3, 3), torch.randn(5)
    for dilation in (1, 2):
        with record_decisions() as decisions:
            out = gate(x, weight, bias, dilation)
        torch.testing.assert_close(out, F.conv2d(x, weight, bias, padding=dilation,
                                                 dilation=dilation), rtol=0, atol=0)
        (d, ) = decisions
        assert (d.hw_shape, d.num_keep, d.log_probs, d.source) == ((4, 5), 20, None, 'neck')
        assert torch.equal(d.keep_mask, torch.ones(3, 20))
    assert not calls


def test_dynamic_uper_head_names_a_gate_with_non_finite_scores(monkeypatch):
    monkeypatch.delenv('MMDVIT_NONFINITE_SCORES', raising=False)
    head = build_head(keep_ratios=(0.5, 0.5, 0.5)).eval()
    with torch.no_grad():
        head.fpn_convs[1].gate.score_predictor.proj.weight[0, 0] = float('nan')
        with pytest.raises(FloatingPointError, match=r'decode_head gate 1 \(level 1\)'):
            head(head_inputs())


# ------------------------------------------------------------ SparseConvModule.from_dense
def conv_module(conv_padding_mode=None, **kwargs):
    """An mmcv ConvModule (6 -> 5 channels, 3x3, padding 1 unless given); with
    ``conv_padding_mode`` its convolution is swapped for a Conv2d with that padding mode (mmcv
    2.1's ConvModule accepts padding_mode='circular' but builds a zero-padded Conv2d)."""
    args = dict(in_channels=6, out_channels=5, kernel_size=3, padding=1)
    args.update(kwargs)
    module = ConvModule(**args)
    if conv_padding_mode is not None:
        module.conv = nn.Conv2d(6, 5, 3, padding=1, padding_mode=conv_padding_mode)
    return module


@pytest.mark.parametrize('kwargs, problem', [
    (dict(stride=2), r'stride \(2, 2\)'),
    (dict(in_channels=6, out_channels=6, groups=2), 'groups 2'),
    (dict(conv_padding_mode='circular'), "padding_mode 'circular'"),
    (dict(padding_mode='reflect'), 'padding_mode ReflectionPad2d'),
    (dict(order=('norm', 'conv', 'act'), norm_cfg=dict(type='BN')),
     r"order \('norm', 'conv', 'act'\)"),
    (dict(order=('conv', 'act', 'norm'), norm_cfg=dict(type='BN')),
     r"order \('conv', 'act', 'norm'\)"),
    (dict(padding=0), r'padding \(0, 0\) for kernel 3 and dilation 1'),
    (dict(padding=1, dilation=2), r'padding \(1, 1\) for kernel 3 and dilation 2'),
    (dict(kernel_size=(3, 5), padding=(1, 2)), r'kernel size \(3, 5\)'),
    (dict(kernel_size=2, padding=0), r'kernel size \(2, 2\)'),
    (dict(with_spectral_norm=True), 'spectral norm'),
    (dict(conv_cfg=dict(type='deconv')), 'a ConvTranspose2d convolution'),
])
def test_from_dense_refuses_what_the_sparse_convolution_cannot_compute(kwargs, problem):
    dense = conv_module(**kwargs)
    with pytest.raises(ValueError, match=rf"DynamicFoo's conv cannot run sparsely: it has "
                       rf'.*{problem}.*To use it, remove it from sparse_convs\.'):
        SparseConvModule.from_dense(dense, 0.5, dict(block=4), name="DynamicFoo's conv",
                                    fix='remove it from sparse_convs')


@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(bias=False),
    dict(norm_cfg=dict(type='BN', momentum=0.3, eps=1e-3), act_cfg=dict(type='GELU')),
    dict(norm_cfg=dict(type='GN', num_groups=5), act_cfg=None, bias=True),
    dict(kernel_size=5, padding=4, dilation=2, act_cfg=dict(type='LeakyReLU',
                                                            negative_slope=0.2),
         inplace=False),
    dict(kernel_size=1, padding=0, norm_cfg=dict(type='BN'), efficient_conv_bn_eval=True),
])
@pytest.mark.parametrize('training', [False, True])
def test_from_dense_copies_every_setting_and_equals_the_dense_module_at_ratio_one(
        kwargs, training):
    dense = conv_module(**kwargs)
    randomize(dense)
    sparse = SparseConvModule.from_dense(dense, 1.0, dict(block=4))
    assert settings(sparse) == settings(dense)
    assert sparse.conv.stride == dense.conv.stride and sparse.with_bias == dense.with_bias
    result = sparse.load_state_dict(dense.state_dict(), strict=False)
    assert not result.unexpected_keys and all('gate.' in k for k in result.missing_keys)
    dense.train(training), sparse.train(training)
    x = torch.randn(2, 6, 13, 17)
    with torch.no_grad(), record_decisions() as decisions:
        torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)
    (decision, ) = decisions
    assert decision.log_probs is None and decision.num_keep == 4 * 5


def test_from_dense_is_used_with_the_owners_name():
    """DynamicUPerHead replaces its convolutions through from_dense: the modules it builds
    (mmseg's same-size 3x3 ConvModules) are accepted with every setting copied."""
    dense, head = build_head('UPerHead'), build_head()
    for name in SPARSE:
        assert settings(head.get_submodule(name)) == settings(dense.get_submodule(name))


def dw3x3_reference(x, weight, bias, fast_w, fast_b, dw, keep, grid, block, dilation):
    """Independent reference of the 'dw3x3' sparse convolution: the dense kxk convolution at
    kept positions, the 1x1 of the depthwise 3x3 (zero padding) of the whole map elsewhere."""
    dense = F.conv2d(x, weight, bias, padding=dilation * (weight.shape[-1] - 1) // 2,
                     dilation=dilation)
    fast = F.conv2d(F.conv2d(x, dw, padding=1, groups=x.shape[1]), fast_w, fast_b)
    mask = expand_block_mask(keep.float(), grid, block, *x.shape[-2:]).bool()
    return torch.where(mask, dense, fast)


@pytest.mark.parametrize('batch, size, k, dilation, block, ratio', [
    (1, (13, 17), 3, 1, 4, 0.5), (2, (16, 16), 3, 1, 8, 0.5), (2, (15, 11), 3, 2, 5, 0.3),
    (3, (9, 22), 1, 1, 4, 0.6), (2, (10, 12), 5, 1, 3, 0.5), (2, (12, 12), 3, 1, 2, 0.1)])
def test_dw3x3_fast_path_training_equals_inference_and_the_reference(
        batch, size, k, dilation, block, ratio):
    """Pruned tiles read their 3x3 neighbours (across tile borders, zeros past the map) in the
    gathered inference path exactly as in the merged training stream."""
    torch.manual_seed(0)
    x = torch.randn(batch, 6, *size)
    weight, bias = torch.randn(5, 6, k, k), torch.randn(5)
    fast_w, fast_b, dw = torch.randn(5, 6, 1, 1), torch.randn(5), torch.randn(6, 1, 3, 3)
    grid = block_grid(*size, block)
    num = grid[0] * grid[1]
    keep = random_keep_sets(batch, num, [ratio], seed=1)[0]
    decision = tile_decision(keep, grid, training=False)
    assert decision.num_keep == max(1, int(num * ratio))
    out = sparse_conv2d(x, weight, bias, fast_w, fast_b, decision, block, dilation, dw)
    ref = dw3x3_reference(x, weight, bias, fast_w, fast_b, dw, keep, grid, block, dilation)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    merged = sparse_conv2d(x, weight, bias, fast_w, fast_b, tile_decision(keep, grid, True),
                           block, dilation, dw)
    torch.testing.assert_close(merged, out, rtol=1e-5, atol=1e-5)


def test_dw3x3_gate_starts_as_the_1x1_gate_and_rejects_unknown_kinds():
    """The depthwise 3x3 starts as the identity (also after init_fast_path): the 'dw3x3' gate
    then equals the '1x1' gate on any input, and on a locally constant input the kxk one."""
    torch.manual_seed(0)
    plain, dw = SparseConvGate(4, 3, 0.5, block=4), SparseConvGate(4, 3, 0.5, block=4,
                                                                   fast_path_kind='dw3x3')
    assert plain.fast_path_dw is None and dw.fast_path_dw.weight.shape == (4, 1, 3, 3)
    weight, bias = torch.randn(3, 4, 3, 3), torch.randn(3)
    torch.nn.init.normal_(dw.fast_path_dw.weight)
    for gate in (plain, dw):
        gate.init_fast_path(weight, bias)
    dw.score_predictor = plain.score_predictor
    x = torch.randn(2, 4, 12, 12)
    plain.eval(), dw.eval()
    with torch.no_grad():
        torch.testing.assert_close(dw(x, weight, bias), plain(x, weight, bias))
        flat = torch.ones(1, 4, 12, 12) * torch.randn(1, 4, 1, 1)
        dense = F.conv2d(flat, weight, bias, padding=1)
        torch.testing.assert_close(dw(flat, weight, bias)[..., 1:-1, 1:-1],
                                   dense[..., 1:-1, 1:-1])
    with pytest.raises(ValueError, match=r"fast_path_kind='3x3'.*\('1x1', 'dw3x3', 'lowrank'\)"):
        SparseConvGate(4, 3, 0.5, fast_path_kind='3x3')


@pytest.mark.parametrize('dilation', [1, 2])
def test_lowrank_fast_path_at_full_rank_is_the_kxk_convolution(dilation):
    """The 1x1 of the summed taps plus the full-rank residual is the kxk convolution itself
    (on the whole map and on pruned tiles gathered with their halo); at any rank the residual
    adds nothing inside a locally constant region, where the 1x1 alone is exact."""
    torch.manual_seed(dilation)
    c_in, c_out, block, size = 4, 6, 4, (12, 16)
    weight, bias = torch.randn(c_out, c_in, 3, 3), torch.randn(c_out)
    x = torch.randn(2, c_in, *size)
    dense = F.conv2d(x, weight, bias, padding=dilation, dilation=dilation)
    full = SparseConvGate(c_in, c_out, 0.5, block=block, fast_path_kind='lowrank',
                          fast_path_rank=c_out)
    full.init_fast_path(weight, bias)
    grid = block_grid(*size, block)
    keep = random_keep_sets(2, grid[0] * grid[1], [0.25], seed=3)[0]
    full.score_predictor = FixedTileScores(keep)
    with torch.no_grad():
        torch.testing.assert_close(full.eval()(x, weight, bias, dilation), dense,
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(full.train()(x, weight, bias, dilation), dense,
                                   rtol=1e-4, atol=1e-4)
        low = SparseConvGate(c_in, c_out, 0.5, block=block, fast_path_kind='lowrank',
                             fast_path_rank=1)
        low.init_fast_path(weight, bias)
        flat = torch.ones(1, c_in, *size) * torch.randn(1, c_in, 1, 1)
        detail = F.conv2d(F.conv2d(flat, low.fast_path_down.weight, padding=dilation,
                                   dilation=dilation), low.fast_path_up.weight)
        inner = (slice(None), slice(None), slice(dilation, -dilation), slice(dilation, -dilation))
        torch.testing.assert_close(detail[inner], torch.zeros_like(detail[inner]), atol=1e-5,
                                   rtol=0)
        assert detail.abs().amax() > 1e-2  # the border sees the zero padding


@pytest.mark.parametrize('kwargs, message', [
    (dict(fast_path_kind='lowrank'), r"needs fast_path_rank, an integer in \[1, 3\]; got None"),
    (dict(fast_path_kind='lowrank', fast_path_rank=4), r'in \[1, 3\]; got 4'),
    (dict(fast_path_rank=2), r"applies only to fast_path_kind='lowrank' \(got '1x1'\)")])
def test_lowrank_gate_rejects_a_bad_rank(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparseConvGate(4, 3, 0.5, **kwargs)


@pytest.mark.parametrize('kind, rank', [('dw3x3', None), ('lowrank', 2)])
def test_fast_path_flops_match_a_hand_count(kind, rank):
    """Kept tiles: the kxk convolution over T x T outputs each; pruned tiles: the 1x1, plus 9
    MACs per input channel and position for the depthwise 3x3, or r * (9 * C_in + C_out) for
    the rank-r 3x3."""
    from mmdvit.analysis.flops import count_macs
    torch.manual_seed(0)
    c_in, c_out, block, size = 6, 5, 4, (12, 16)
    grid = block_grid(*size, block)
    keep = random_keep_sets(2, grid[0] * grid[1], [0.5], seed=2)[0]
    x, weight = torch.randn(2, c_in, *size), torch.randn(c_out, c_in, 3, 3)
    gate = SparseConvGate(c_in, c_out, 0.5, block=block, fast_path_kind=kind,
                          fast_path_rank=rank).eval()
    gate.score_predictor = FixedTileScores(keep)
    macs = count_macs(gate, x, weight, None)
    kept = int(keep.sum())
    pruned = keep.numel() - kept
    tile = block * block
    extra = c_in * 9 if kind == 'dw3x3' else rank * (9 * c_in + c_out)
    assert macs == kept * tile * c_out * c_in * 9 + pruned * tile * (c_in * c_out + extra)


def test_keep_everything_runs_the_dense_head_whatever_the_keep_ratios():
    """Inside ``keep_everything()`` a head with keep ratios below 1 computes mmseg's UPerHead
    with the same weights (inference and training), and its decisions record ratio 1.0."""
    dense = build_head('UPerHead')
    state = randomize(dense)
    head = build_head(keep_ratios=(0.5, 0.4, 0.3), fast_path_kind='dw3x3')
    head.load_state_dict(state, strict=False)
    for training in (False, True):
        dense.train(training), head.train(training)
        with torch.no_grad(), keep_everything(), record_decisions() as decisions:
            out = head(head_inputs())
        assert [d.keep_ratio for d in decisions] == [1.0] * 3
        assert torch.equal(out, dense(head_inputs()))
    with torch.no_grad(), record_decisions() as decisions:
        head(head_inputs())
    assert [d.keep_ratio for d in decisions] == [0.5, 0.4, 0.3]  # closed: the ratios again


@pytest.mark.parametrize('options, new_keys', [
    (dict(fast_path_kind='dw3x3'), ('fast_path_dw.weight', )),
    (dict(fast_path_kind='lowrank', fast_path_rank=2),
     ('fast_path_down.weight', 'fast_path_up.weight'))])
def test_dynamic_uper_head_with_richer_fast_paths(options, new_keys):
    """Ratio 1.0 is mmseg's UPerHead (the fast path's extra kernels are the only other new
    keys), and the dense twin's head config drops the arguments; training equals inference for
    the same kept tiles."""
    from mmengine.config import ConfigDict

    from mmdvit.models.dense_twin import upstream_heads_config
    twin = upstream_heads_config(ConfigDict(decode_head=dict(
        HEAD, type='mmdvit.DynamicUPerHead', block_size=4, **options)))
    assert twin.decode_head == ConfigDict(HEAD, type='mmseg.UPerHead')
    dense = build_head('UPerHead')
    state = randomize(dense)
    dynamic = build_head(**options)
    missing = dynamic.load_state_dict(state, strict=False).missing_keys
    assert {k for k in missing if any(k.endswith(key) for key in new_keys)} == {
        f'{name}.gate.{key}' for name in SPARSE for key in new_keys}
    if options['fast_path_kind'] == 'lowrank':  # started from the loaded kernels
        for name in SPARSE:
            gate = dynamic.get_submodule(name).gate
            down, up = low_rank_residual(state[f'{name}.conv.weight'], 2)
            assert torch.equal(gate.fast_path_down.weight, down)
            assert torch.equal(gate.fast_path_up.weight, up)
    dense.eval(), dynamic.eval()
    with torch.no_grad():
        assert torch.equal(dynamic(head_inputs()), dense(head_inputs()))
    head = build_head(keep_ratios=(0.5, 0.4, 0.3), **options)
    randomize(head)
    for i, (name, ratio) in enumerate(zip(SPARSE, (0.5, 0.4, 0.3))):
        keep = random_keep_sets(2, 72, [ratio], seed=i)[0]
        head.get_submodule(name).gate.score_predictor = FixedTileScores(keep)
    head.train()
    for m in head.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    train_out = head(head_inputs())
    head.eval()
    with torch.no_grad(), record_decisions() as decisions:
        eval_out = head(head_inputs())
    assert [d.num_keep for d in decisions] == [36, 28, 21]
    torch.testing.assert_close(train_out, eval_out, rtol=1e-4, atol=1e-5)


def test_accelerator_path_is_taken_off_cpu_and_when_forced():
    """CPU tensors take the eager path unless the accelerator path is forced; any other device
    type takes the accelerator path."""
    from mmdvit.sparse.accelerator import accelerator_path, uses_accelerator_path
    assert not uses_accelerator_path(torch.zeros(1))
    assert uses_accelerator_path(torch.zeros(1, device='meta'))
    with accelerator_path():
        assert uses_accelerator_path(torch.zeros(1))
    assert not uses_accelerator_path(torch.zeros(1))
