"""DynamicViT: dense equality with timm's DeiT, the masked-attention formula in training,
exact token counts at inference, token distillation, and argument checks."""
from pathlib import Path
from typing import List, Optional

import pytest
import torch
import torch.nn.functional as F
from helpers import FixedScores, randomize
from torch import Tensor

from mmdvit.models import DynamicViT, keep_ratio_loss
from mmdvit.models.checkpoint.vit import convert_vit_checkpoint
from mmdvit.sparse import record_decisions

TINY = dict(embed_dims=32, num_layers=6, num_heads=2)


def tiny_vit(**kwargs) -> DynamicViT:
    args = dict(arch=TINY, img_size=64, pruning_locs=(1, 3, 4), keep_ratios=(0.75, 0.5, 0.25))
    args.update(kwargs)
    model = DynamicViT(**args)
    randomize(model, std=0.2)
    return model


def nested_sets(batch: int, num: int, counts: List[int], seed: int = 0) -> List[Tensor]:
    """(B, N) bool masks with counts[i] ones per image, each a subset of the previous."""
    gen = torch.Generator().manual_seed(seed)
    masks = []
    for b in range(batch):
        order = torch.randperm(num, generator=gen)
        masks.append([torch.zeros(num, dtype=torch.bool).index_fill(0, order[:c], True)
                      for c in counts])
    return [torch.stack([m[i] for m in masks]) for i in range(len(counts))]


def reference_forward(model: DynamicViT, x: Tensor, masks: Optional[List[Tensor]]) -> Tensor:
    """Float64 reference of the training forward with given cumulative keep masks (B, N):
    before block ``pruning_locs[i]`` the policy becomes [1, masks[i]], and attention is
    ``A_ij = (exp(a_ij - max_k a_ik) G_ij + eps/N) / (sum_k exp(a_ik - max_k a_ik) G_ik + eps)``
    with ``G_ij = D_j + (1 - D_j) [i == j]``, eps = 1e-6. Returns all normed tokens (B, 1 + N,
    C)."""
    p = {k: v.double() for k, v in model.state_dict().items()}
    x = F.conv2d(x.double(), p['patch_embed.proj.weight'], p['patch_embed.proj.bias'], stride=16)
    x = x.flatten(2).transpose(1, 2)
    batch, num, dims = x.shape
    x = torch.cat([p['cls_token'].expand(batch, -1, -1), x], dim=1) + p['pos_embed']
    heads = model.blocks[0].attn.num_heads
    locs = model.schedule[0].pruning_locs
    gate = None
    for i in range(len(model.blocks)):
        if masks is not None and i in locs:
            keep = torch.cat([torch.ones(batch, 1, dtype=torch.float64),
                              masks[locs.index(i)].double()], dim=1)  # (B, 1 + N)
            eye = torch.eye(num + 1, dtype=torch.float64)
            gate = keep[:, None, None, :] + (1 - keep[:, None, None, :]) * eye
        pre = f'blocks.{i}.'
        h = F.layer_norm(x, (dims, ), p[pre + 'norm1.weight'], p[pre + 'norm1.bias'], 1e-6)
        qkv = F.linear(h, p[pre + 'attn.qkv.weight'], p[pre + 'attn.qkv.bias'])
        q, k, v = qkv.reshape(batch, num + 1, 3, heads, dims // heads).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-2, -1) * (dims // heads)**-0.5
        e = (logits - logits.max(dim=-1, keepdim=True).values).exp()
        if gate is None:
            attn = e / e.sum(dim=-1, keepdim=True)
        else:
            attn = (e * gate + 1e-6 / (num + 1)) / ((e * gate).sum(dim=-1, keepdim=True) + 1e-6)
        out = (attn @ v).transpose(1, 2).reshape(batch, num + 1, dims)
        x = x + F.linear(out, p[pre + 'attn.proj.weight'], p[pre + 'attn.proj.bias'])
        h = F.layer_norm(x, (dims, ), p[pre + 'norm2.weight'], p[pre + 'norm2.bias'], 1e-6)
        h = F.gelu(F.linear(h, p[pre + 'mlp.fc1.weight'], p[pre + 'mlp.fc1.bias']))
        x = x + F.linear(h, p[pre + 'mlp.fc2.weight'], p[pre + 'mlp.fc2.bias'])
    return F.layer_norm(x, (dims, ), p['norm.weight'], p['norm.bias'], 1e-6)


@pytest.mark.parametrize('training', [False, True])
def test_keep_ratio_one_equals_timm_deit_small(training):
    """In eval and in train mode (no dropout, no drop path): the predictors are skipped in both,
    and training attention is timm's unmasked one."""
    import timm
    ref = timm.create_model('deit_small_patch16_224', pretrained=False).train(training)
    state, layout, dropped = convert_vit_checkpoint(randomize(ref, std=0.02))
    assert layout == 'timm' and dropped == ['head.weight', 'head.bias']
    ours = DynamicViT(arch='deit-small', keep_ratios=(1.0, 1.0, 1.0), out_type='featmap',
                      distill_tokens=True).train(training)
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith('score_predictors.') for k in missing)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        with record_decisions() as decisions:
            tokens, featmap = ours(x)
        ref_tokens = ref.forward_features(x)
        ours.out_type = 'cls_token'
        cls = ours(x)[1]
    torch.testing.assert_close(cls, ref.forward_head(ref_tokens, pre_logits=True), rtol=0,
                               atol=1e-5)
    torch.testing.assert_close(tokens, ref_tokens[:, 1:], rtol=0, atol=1e-5)
    assert featmap.shape == (1, 384, 14, 14)
    torch.testing.assert_close(featmap.flatten(2).transpose(1, 2), tokens)
    assert [d.num_keep for d in decisions] == [196] * 3
    assert all(d.log_probs is None and bool(d.keep_mask.eq(1).all()) for d in decisions)


def test_dense_build_has_no_predictors():
    model = DynamicViT(arch=TINY, img_size=64, pruning_locs=(), keep_ratios=()).eval()
    assert len(model.score_predictors) == 0
    with torch.no_grad(), record_decisions() as decisions:
        model(torch.randn(1, 3, 64, 64))
    assert decisions == []


def test_training_with_forced_masks_equals_masked_attention_formula():
    model = tiny_vit(out_type='raw').train()
    batch, num = 2, 16
    keep_sets = [m for m in nested_sets(batch, num, [12, 9, 4])]
    # Predictor i proposes keep_sets[i] plus extra tokens: the nested product must drop them.
    proposals = [keep_sets[0], keep_sets[1] | ~keep_sets[0], keep_sets[2] | ~keep_sets[1]]
    for i, proposal in enumerate(proposals):
        model.score_predictors['0'][i] = FixedScores(proposal)
    x = torch.randn(batch, 3, 64, 64)
    with record_decisions() as decisions:
        out = model(x)[0]
    assert len(decisions) == len(keep_sets)
    for decision, expected in zip(decisions, keep_sets):
        assert decision.keep_mask.shape == (batch, num)
        assert torch.equal(decision.keep_mask.bool(), expected)
    expected = reference_forward(model, x, keep_sets)
    # All tokens, pruned ones included (they attend to themselves only).
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)
    # The masks matter: without them the class token differs.
    assert (reference_forward(model, x, None) - expected)[:, 0].abs().max() > 1e-2
    loss = keep_ratio_loss(decisions)
    target = torch.stack([((s.float().mean(1) - r)**2).mean()
                          for s, r in zip(keep_sets, (0.75, 0.5, 0.25))]).mean()
    torch.testing.assert_close(loss, target)


def test_training_predictors_see_the_previous_mask_and_get_gradients():
    model = tiny_vit().train()
    seen = []
    for predictor in model.score_predictors['0']:
        original = predictor.forward

        def spy(tokens, policy=None, original=original):
            seen.append(policy)
            return original(tokens, policy)

        predictor.forward = spy
    with record_decisions() as decisions:
        out = model(torch.randn(2, 3, 64, 64))[0]
    assert len(seen) == len(decisions) == 3
    assert torch.equal(seen[0], torch.ones(2, 16, 1))
    for policy, previous in zip(seen[1:], decisions[:-1]):
        assert torch.equal(policy.squeeze(-1), previous.keep_mask.detach())
    for prev, cur in zip(decisions, decisions[1:]):
        assert bool((cur.keep_mask <= prev.keep_mask).all())  # nested
    (out.sum() + keep_ratio_loss(decisions)).backward()
    for predictor in model.score_predictors['0']:
        assert predictor.out_conv[4].weight.grad.abs().sum() > 0


def test_training_equals_inference_for_the_same_kept_tokens():
    model = tiny_vit(img_size=224, keep_ratios=(0.7, 0.49, 0.343))
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad(), record_decisions() as decisions:
        inferred = model.eval()(x)[0]
    kept = [d.keep_mask.bool() for d in decisions]
    for i, mask in enumerate(kept):
        model.score_predictors['0'][i] = FixedScores(mask)
    with torch.no_grad():
        trained = model.train()(x)[0]
    # Pruned tokens stay in the training sequence but only receive eps/N of attention.
    torch.testing.assert_close(trained, inferred, rtol=0, atol=1e-4)


@pytest.mark.parametrize('batch', [1, 2, 3])
def test_inference_keeps_exactly_the_scheduled_token_counts(batch):
    ratios = (0.7, 0.49, 0.343)
    model = tiny_vit(img_size=224, keep_ratios=ratios, pruning_locs=(1, 2, 4)).eval()
    lengths = []
    for block in model.blocks:
        block.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    with torch.no_grad(), record_decisions() as decisions:
        model(torch.randn(batch, 3, 224, 224))
    counts = [int(196 * r) for r in ratios]
    assert counts == [137, 96, 67]
    assert lengths == [197, 1 + 137, 1 + 96, 1 + 96, 1 + 67, 1 + 67]
    previous = None
    assert len(decisions) == len(counts)
    for decision, count in zip(decisions, counts):
        assert decision.num_keep == count
        indices = decision.keep_indices
        assert indices.shape == (batch, count)
        assert all(len(set(row.tolist())) == count for row in indices)
        assert torch.equal(decision.keep_mask.sum(1), torch.full((batch, ), float(count)))
        assert decision.log_probs.shape == (batch, 196, 2)
        if previous is not None:  # nested: every kept token was kept before
            assert bool((decision.keep_mask <= previous).all())
            assert bool(torch.isinf(decision.log_probs[..., 0][previous == 0]).all())
        previous = decision.keep_mask


def test_featmap_keeps_pruned_tokens_at_their_positions():
    model = tiny_vit(out_type='featmap', distill_tokens=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens, featmap = model(x)
        model.out_type = 'raw'
        with record_decisions() as decisions:
            _, raw = model(x)
    assert featmap.shape == (2, 32, 4, 4)
    last = decisions[-1]
    assert raw.shape == (2, 1 + last.num_keep, 32)
    # The kept tokens sit at their original positions of the map.
    gathered = tokens.gather(1, last.keep_indices.unsqueeze(-1).expand(-1, -1, 32))
    torch.testing.assert_close(gathered, raw[:, 1:])


def test_feature_distill_loss_uses_the_tokens_kept_last():
    model = tiny_vit(distill_tokens=True).train()
    x = torch.randn(2, 3, 64, 64)
    with record_decisions() as decisions:
        student = model(x)
    teacher = (student[0].detach() + torch.randn_like(student[0]), student[1].detach())
    kept = decisions[-1].keep_mask.bool()
    expected = (student[0] - teacher[0])[kept].pow(2).mean()
    torch.testing.assert_close(model.feature_distill_loss(student, teacher, decisions), expected)
    assert student[1].shape == (2, 32)


def test_other_input_sizes_and_padding():
    model = tiny_vit(out_type='featmap').eval()
    with torch.no_grad(), record_decisions() as decisions:
        out = model(torch.randn(1, 3, 72, 100))[0]
    assert out.shape == (1, 32, 5, 7)
    assert [d.num_keep for d in decisions] == [26, 17, 8]


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='deit-huge'), 'arch'),
    (dict(arch=dict(embed_dims=32, num_layers=2)), 'num_heads'),
    (dict(arch=dict(embed_dims=30, num_layers=6, num_heads=4)), 'divisible'),
    (dict(out_type='avg'), 'out_type'),
    (dict(img_size=70), 'patch_size'),
    (dict(keep_ratios=(0.5, 0.7, 0.3)), 'non-increasing'),
    (dict(keep_ratios=(0.7, 0.5)), 'one ratio per predictor'),
    (dict(keep_ratios=(1.2, 0.5, 0.3)), '0 < ratio <= 1'),
    (dict(keep_ratios=(0.5, 0.3, 0.0)), '0 < ratio <= 1'),
    (dict(pruning_locs=(1, 3, 6)), 'out of range'),
    (dict(pruning_locs=(3, 1, 4)), 'increasing'),
    (dict(pruning_locs=()), 'dense'),
])
def test_bad_arguments_raise(kwargs, match):
    args = dict(arch=TINY, img_size=64, pruning_locs=(1, 3, 4), keep_ratios=(0.75, 0.5, 0.25))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DynamicViT(**args)


def test_default_schedule_needs_a_published_depth():
    model = DynamicViT(arch='deit-tiny')
    assert model.schedule[0].pruning_locs == (3, 6, 9)
    assert model.keep_ratios == [0.7, 0.49, 0.343]
    with pytest.raises(ValueError, match='pruning_locs'):
        DynamicViT(arch=TINY, img_size=64)


def test_decisions_and_outputs_equal_the_implementation_before_the_shared_core():
    """``golden/dynamic_vit_before_core.pt`` holds a small model, its input, and the training
    (seeded Gumbel masks, scores, outputs) and inference results (kept tokens in order, scores,
    featmap and tokens) of DynamicViT as it was before it decided through
    ``mmdvit.sparse``. The file was recorded on another CPU: decisions (masks, kept
    tokens and their order) must be equal, values within float32 rounding (CPUs with other
    vector units round the last bits differently)."""
    golden = torch.load(Path(__file__).parent / 'golden' / 'dynamic_vit_before_core.pt')
    model = DynamicViT(**golden['args'])
    model.load_state_dict(golden['state'])
    close = dict(rtol=1e-4, atol=1e-5)
    torch.manual_seed(1)
    with record_decisions() as decisions:
        tokens, out = model.train()(golden['x'])
    ref = golden['train']
    torch.testing.assert_close(tokens, ref['tokens'], **close)
    torch.testing.assert_close(out, ref['out'], **close)
    assert len(decisions) == len(ref['masks']) == len(ref['log_probs']) == 3
    for d, mask, log_probs in zip(decisions, ref['masks'], ref['log_probs']):
        assert torch.equal(d.keep_mask, mask)
        torch.testing.assert_close(d.log_probs, log_probs, **close)
    with torch.no_grad(), record_decisions() as decisions:
        tokens, out = model.eval()(golden['x'])
    ref = golden['eval']
    torch.testing.assert_close(tokens, ref['tokens'], **close)
    torch.testing.assert_close(out, ref['out'], **close)
    assert len(decisions) == len(ref['kept']) == len(ref['log_probs']) == 3
    for d, kept, log_probs in zip(decisions, ref['kept'], ref['log_probs']):
        assert torch.equal(d.keep_indices, kept)
        torch.testing.assert_close(d.log_probs, log_probs, **close)
