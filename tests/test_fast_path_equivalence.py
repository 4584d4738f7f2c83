"""Every speed optimisation of the sparse inference path is exact: bitwise equal to the
straightforward gather / slice / cat / scatter formulation it replaces."""
import pytest
import torch
from torch import Tensor, nn

import mmdvit.models.backbones.convnext_layers as convnext_layers
import mmdvit.models.backbones.swin_layers as swin_layers
from helpers import randomize
from mmdvit.models import DynamicConvNeXt, DynamicSwinTransformer
from mmdvit.sparse import decide, record_decisions, route_tokens
from mmdvit.sparse.decision import SparsityDecision


def reference_route(x: Tensor, slow, fast, decision: SparsityDecision) -> Tensor:
    """The straightforward inference routing: gather by the score order with an expanded index,
    slow path on the first k, fast path on the rest, concatenate, scatter back."""
    if decision.num_keep is None:
        return route_tokens(x, slow, fast, decision)
    k, num = decision.num_keep, x.shape[1]
    if k == num:
        return slow(x)
    if k == 0:
        return fast(x)
    order = decision.order.unsqueeze(-1)
    gathered = x.gather(1, order.expand(-1, -1, x.shape[-1]))
    slow_out, fast_out = slow(gathered[:, :k]), fast(gathered[:, k:])
    dtype = torch.promote_types(slow_out.dtype, fast_out.dtype)
    out = torch.cat([slow_out.to(dtype), fast_out.to(dtype)], dim=1)
    return torch.empty_like(out).scatter_(1, order.expand(-1, -1, out.shape[-1]), out)


def paths(channels: int, out: int):
    slow = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, 4 * channels), nn.GELU(),
                         nn.Linear(4 * channels, out))
    fast = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, out))
    randomize(slow, seed=1), randomize(fast, seed=2)
    return slow.eval(), fast.eval()


@pytest.mark.parametrize('batch, num, ratio', [(1, 49, 0.7), (2, 196, 0.5), (3, 30, 0.3),
                                               (2, 17, 0.06)])
@pytest.mark.parametrize('autocast', [False, True])
def test_row_copy_routing_equals_gather_scatter(batch, num, ratio, autocast):
    slow, fast = paths(24, 24)
    x = torch.randn(batch, num, 24)
    decision = decide(torch.randn(batch, num, 2).log_softmax(-1), ratio, False, 2, 0, (1, num))
    assert 0 < decision.num_keep < num
    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16, enabled=autocast):
        fast_out = route_tokens(x, slow, fast, decision)
        ref = reference_route(x, slow, fast, decision)
    assert fast_out.dtype == ref.dtype and fast_out.shape == ref.shape
    assert torch.equal(fast_out, ref)


def test_routing_with_mixed_path_dtypes_casts_to_the_wider_one():
    slow, fast = paths(16, 16)
    x = torch.randn(2, 20, 16)
    decision = decide(torch.randn(2, 20, 2).log_softmax(-1), 0.5, False, 2, 0, (4, 5))
    half_fast = lambda t: fast(t).to(torch.bfloat16)  # noqa: E731
    with torch.no_grad():
        out = route_tokens(x, slow, half_fast, decision)
        ref = reference_route(x, slow, half_fast, decision)
    assert out.dtype == torch.float32
    assert torch.equal(out, ref)


def test_flat_rows_are_computed_once_and_index_the_flattened_tokens():
    decision = decide(torch.randn(3, 10, 2).log_softmax(-1), 0.4, False, 2, 0, (2, 5))
    kept, pruned = decision.flat_rows()
    assert decision.flat_rows()[0] is kept
    rows = torch.arange(30).view(3, 10)
    assert torch.equal(kept.view(3, 4), rows.gather(1, decision.order[:, :4]))
    assert torch.equal(pruned.view(3, 6), rows.gather(1, decision.order[:, 4:]))
    assert sorted(torch.cat([kept, pruned]).tolist()) == list(range(30))
    # One tensor, the kept rows of every image first: what one gather reads for both paths.
    assert torch.equal(decision.flat_order(), torch.cat([kept, pruned]))
    assert kept.data_ptr() == decision.flat_order().data_ptr()
    single = decide(torch.randn(1, 10, 2).log_softmax(-1), 0.4, False, 2, 0, (2, 5))
    assert torch.equal(single.flat_order(), single.order.flatten())
    with pytest.raises(ValueError, match='order'):
        decide(torch.randn(1, 4, 2), 1.0, False, 2, 0, (2, 2)).flat_rows()


def tiny_swin():
    return DynamicSwinTransformer(embed_dims=16, depths=(1, 1, 4, 1), num_heads=(1, 2, 2, 4),
                                  window_size=4, drop_path_rate=0.0, pruning_locs=(0, 1, 2))


def tiny_convnext():
    return DynamicConvNeXt(arch=dict(depths=[1, 1, 4, 1], channels=[16, 24, 32, 48]),
                           out_indices=(0, 1, 2, 3), gap_before_final_norm=False,
                           pruning_locs=(0, 1, 2), layer_scale_init_value=0.5)


@pytest.mark.parametrize('build', [tiny_swin, tiny_convnext], ids=['swin', 'convnext'])
@pytest.mark.parametrize('batch, size', [(1, (96, 96)), (3, (80, 112))])
def test_backbones_with_the_fast_path_equal_the_straightforward_path(monkeypatch, build, batch,
                                                                     size):
    model = build()
    randomize(model, seed=3)
    model.eval()
    x = torch.randn(batch, 3, *size)
    with torch.no_grad():
        with record_decisions() as decisions:
            fast_outs = model(x)
        num_keep = [d.num_keep for d in decisions]
        for module in (swin_layers, convnext_layers):
            monkeypatch.setattr(module, 'route_tokens', reference_route)
        ref_outs = model(x)
    assert all(0 < k < d.keep_mask.shape[1] for k, d in zip(num_keep, decisions))
    for out, ref in zip(fast_outs, ref_outs):
        assert torch.equal(out, ref)


def saved_bytes(fn):
    """Bytes of the tensors autograd keeps for the backward pass of ``fn()``, and its output."""
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(sizes), out


def test_vit_masked_attention_checkpointing_is_exact_and_stores_less(monkeypatch):
    from mmdvit.models.backbones.vit_layers import Attention
    attn = Attention(32, 4, attn_drop_rate=0.2)
    randomize(attn, seed=5)
    attn.train()
    x = torch.randn(2, 50, 32, requires_grad=True)
    policy = (torch.rand(2, 50, 1) > 0.4).float()
    policy[:, 0] = 1.0

    def run():
        torch.manual_seed(7)
        stored, out = saved_bytes(lambda: attn(x, policy))
        grads = torch.autograd.grad(out.square().sum(), [x, *attn.parameters()])
        return stored, out, grads

    stored, out, grads = run()
    monkeypatch.setattr(torch.utils.checkpoint, 'checkpoint',
                        lambda fn, *args, **kwargs: fn(*args))
    plain_stored, plain_out, plain_grads = run()
    assert torch.equal(out, plain_out)
    assert all(torch.equal(g, p) for g, p in zip(grads, plain_grads))
    # the plain path keeps several (B, heads, N, N) float32 maps (80 KB each here)
    assert plain_stored - stored >= 4 * 2 * 4 * 50 * 50 * 4
