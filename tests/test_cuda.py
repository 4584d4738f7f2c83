"""The same guarantees on a CUDA device (skipped without one): equality with upstream at keep
ratio 1.0, float32 decisions under float16 / bfloat16 autocast, window attention, the
tile-sparse convolution, an AMP training step, and the whole models compiled (inductor, CUDA
graphs) equal to eager."""
import pytest
import torch
from helpers import random_keep_sets, randomize
from test_backbone_sparsity import BUILDERS, untied_swaps
from test_compile import whole_model
from test_sparse_conv import tile_decision

from mmdvit.analysis.inputs import model_inputs, sample_photos
from mmdvit.models import DynamicConvNeXt, DynamicSwinTransformer, DynamicViT, keep_ratio_loss
from mmdvit.sparse import record_decisions, sparse_conv2d
from mmdvit.sparse.sparse_conv import block_grid

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
HALF = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 matmuls would make float32 comparisons loose; restore the settings afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_cuda_backbones_at_ratio_one_equal_upstream():
    from mmpretrain.models.backbones import ConvNeXt
    from mmseg.models.backbones import SwinTransformer
    torch.manual_seed(0)
    pairs = [(DynamicSwinTransformer(keep_ratios=(1.0, 1.0, 1.0), drop_path_rate=0.0),
              SwinTransformer(drop_path_rate=0.0)),
             (DynamicConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False,
                              keep_ratios=(1.0, 1.0, 1.0)),
              ConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False))]
    x = torch.randn(2, 3, 224, 160, device='cuda')
    for ours, ref in pairs:
        state = randomize(ref)
        ref.cuda().eval()
        ours.load_state_dict(state, strict=False)
        ours.cuda().eval()
        with torch.no_grad():
            for a, b in zip(ours(x), ref(x)):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('dtype', HALF)
@pytest.mark.parametrize('name', BUILDERS)
def test_cuda_autocast_keeps_the_float32_positions(name, dtype):
    torch.manual_seed(0)
    backbone = BUILDERS[name]().cuda().eval()
    with torch.no_grad():
        for predictor in backbone.score_predictors['2']:
            predictor.out_conv[-2].weight.mul_(20.0)
    x = torch.randn(3, 3, 96, 96, device='cuda')
    with torch.no_grad():
        with record_decisions() as ref_decisions:
            ref = backbone(x)
        with torch.autocast('cuda', dtype=HALF[dtype]), record_decisions() as low_decisions:
            low = backbone(x)
    assert [d.log_probs.dtype for d in low_decisions] == [torch.float32] * 3
    for r, d in zip(ref_decisions, low_decisions):
        assert d.num_keep == r.num_keep and not untied_swaps(r, d).any()
    assert all(torch.isfinite(b).all() and b.shape == a.shape for a, b in zip(ref, low))


@pytest.mark.parametrize('dtype', ['float32', 'float16'])
def test_cuda_window_attention_equals_mmseg(dtype):
    from mmseg.models.backbones.swin import ShiftWindowMSA as MMSegShiftWindowMSA

    from mmdvit.models.backbones.swin_layers import ShiftWindowMSA
    torch.manual_seed(0)
    ours = ShiftWindowMSA(96, 3, 7, 3).cuda().eval()
    ref = MMSegShiftWindowMSA(96, 3, 7, shift_size=3).cuda().eval()
    torch.nn.init.normal_(ours.w_msa.relative_position_bias_table)
    ref.load_state_dict(ours.state_dict(), strict=False)
    x = torch.randn(2, 28 * 35, 96, device='cuda')
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == 'float32' else dict(rtol=2e-2, atol=2e-2)
    with torch.no_grad(), torch.autocast('cuda', torch.float16, enabled=dtype == 'float16'):
        a, b = ours(x, (28, 35)), ref(x, (28, 35))
    torch.testing.assert_close(a.float(), b.float(), **tol)


def test_cuda_sparse_conv_equals_the_cpu_result():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 37, 45)
    weight, bias = torch.randn(6, 8, 3, 3), torch.randn(6)
    fast_w, fast_b = torch.randn(6, 8, 1, 1), torch.randn(6)
    grid = block_grid(37, 45, 8)
    keep = random_keep_sets(2, grid[0] * grid[1], [0.4], seed=1)[0]
    cpu = sparse_conv2d(x, weight, bias, fast_w, fast_b, tile_decision(keep, grid, False), 8, 1)
    args = [t.cuda() for t in (x, weight, bias, fast_w, fast_b)]
    gpu = sparse_conv2d(*args, tile_decision(keep.cuda(), grid, False), 8, 1)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('build', [
    lambda: DynamicSwinTransformer(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                                   granularity='window', sparse_stages=(0, 1, 2, 3),
                                   pruning_locs=((0, ), (0, ), (0, ), (0, )),
                                   keep_ratios=(0.6, 0.6, 0.5, 0.5)),
    lambda: DynamicViT(arch=dict(embed_dims=64, num_layers=4, num_heads=2), img_size=64,
                       pruning_locs=(1, 2, 3), keep_ratios=(0.7, 0.49, 0.343))
], ids=['swin-window', 'vit'])
def test_cuda_amp_training_step_reaches_every_predictor(build):
    torch.manual_seed(0)
    model = build().cuda().train()
    scaler = torch.amp.GradScaler('cuda')
    with torch.autocast('cuda', torch.float16), record_decisions() as decisions:
        outs = model(torch.randn(2, 3, 64, 64, device='cuda'))
        loss = sum(o.float().pow(2).mean() for o in outs)
        loss = loss + keep_ratio_loss(decisions)
    assert all(d.log_probs.dtype == torch.float32 for d in decisions)
    scaler.scale(loss).backward()
    for predictors in model.score_predictors.values():
        for predictor in predictors:
            grad = predictor.out_conv[4].weight.grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize('mode', ['default', 'reduce-overhead'])
@pytest.mark.parametrize('name', ['upernet-swin', 'maskrcnn-swin'])
def test_cuda_compiled_whole_models_equal_eager(name, mode):
    """torch.compile of the whole demo models (``reduce-overhead``: replayed CUDA graphs, whose
    outputs are cloned before the next replay) gives the eager outputs, image after image."""
    torch.manual_seed(0)
    model, shape, forward = whole_model(name)
    randomize(model, std=0.2)  # spread scores: no near-ties that rounding could swap
    model.cuda().eval()
    batches = [model_inputs(model, [photo] * 2, shape) for photo in sample_photos(3)]
    torch._dynamo.reset()
    compiled = torch.compile(forward, mode=mode, dynamic=False)
    with torch.no_grad():
        for data in batches + batches[:1]:
            torch.compiler.cudagraph_mark_step_begin()
            got = [t.clone() for t in _tensors(compiled(data))]
            expected = _tensors(forward(data))
            assert len(got) == len(expected)
            for a, b in zip(got, expected):
                torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def _tensors(out):
    """The tensors of a nested model output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _tensors(item)]
