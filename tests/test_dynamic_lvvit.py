"""DynamicViT on LV-ViT: equality with a float64 reference of the authors' LVViTDiffPruning
(raoyongming/DynamicViT models/dylvvit.py) at keep ratio 1, with forced masks in training and
with their top-k inference at real size; exact token counts; training equal to inference for the
same kept tokens; the releases' checkpoints; the published GFLOPs; argument checks."""
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
import torch
import torch.nn.functional as F
from helpers import FixedScores, randomize
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdvit.analysis.complexity import complexity
from mmdvit.analysis.inputs import sample_photos
from mmdvit.models import DynamicLVViT, DynamicViT, LVViTClsHead, keep_ratio_loss
from mmdvit.models.checkpoint.lvvit import convert_lvvit_classifier_checkpoint
from mmdvit.sparse import record_decisions

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(embed_dims=32, num_layers=6, num_heads=2, mlp_ratio=3.0, skip_lam=2.0)
StateDict = Dict[str, Tensor]


def tiny_lvvit(**kwargs) -> DynamicLVViT:
    args = dict(arch=TINY, img_size=64, stem_channels=8, pruning_locs=(1, 3, 4),
                keep_ratios=(0.75, 0.5, 0.25))
    args.update(kwargs)
    model = DynamicLVViT(**args)
    randomize(model, std=0.2)
    gen = torch.Generator().manual_seed(1)
    for name, buf in model.named_buffers():  # non-trivial BatchNorm statistics
        if name.endswith('running_mean'):
            buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
        elif name.endswith('running_var'):
            buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
    return model


def tiny_head(channels: int = 32, classes: int = 10) -> LVViTClsHead:
    head = LVViTClsHead(classes, channels)
    randomize(head, std=0.2, seed=2)
    return head


def authors_state(model: DynamicLVViT, head: LVViTClsHead) -> StateDict:
    """The model and head as one state dict with the authors' key names."""
    state = {k.replace('score_predictors.0.', 'score_predictor.'): v
             for k, v in model.state_dict().items()}
    state.update(head.state_dict())
    return state


def reference_forward(p: StateDict, x: Tensor, heads: int, skip_lam: float,
                      pruning_locs: Sequence[int] = (), masks: Optional[List[Tensor]] = None,
                      ratios: Optional[Sequence[float]] = None, training: bool = False):
    """Float64 forward of the authors' LVViTDiffPruning from its state dict ``p`` (their keys).

    Stem: conv 7x7/2 -> BN -> ReLU -> (conv 3x3 -> BN -> ReLU) x 2 -> conv (patch/2)/(patch/2);
    BN uses batch statistics when ``training`` (no running-stat update), else running ones.
    Blocks: ``x + attn(LN(x)) / skip_lam``, ``x + mlp(LN(x)) / skip_lam``, no qkv bias, LN eps
    1e-5. Training (``masks``, cumulative keep masks (B, N)): the policy starts all ones and,
    from block ``pruning_locs[i]`` on, is [1, masks[i]]; every block then uses the authors'
    ``softmax_with_policy``: ``(exp(a - max) G + eps / N) / (sum exp(a - max) G + eps)``,
    ``G_ij = D_j + (1 - D_j) [i == j]``, eps 1e-6. Inference (``ratios``): before block
    ``pruning_locs[i]`` the predictor scores the tokens still there (global half averaged over
    them), ``argsort`` descending keeps the first ``int(N * ratios[i])``. Neither: dense.

    Returns:
        (normed tokens (B, 1 + n, C), class logits (B, K), fused logits ``cls + 0.5 * max aux``
        (B, K), kept original positions per predictor at inference).
    """
    p = {k: v.double() for k, v in p.items()}
    x = x.double()

    def bn(x: Tensor, i: int) -> Tensor:
        pre = f'patch_embed.bn{i}.'
        mean, var = ((None, None) if training else
                     (p[pre + 'running_mean'], p[pre + 'running_var']))
        return F.batch_norm(x, mean, var, p[pre + 'weight'], p[pre + 'bias'], training, 0.0, 1e-5)

    x = F.relu(bn(F.conv2d(x, p['patch_embed.conv1.weight'], stride=2, padding=3), 1))
    x = F.relu(bn(F.conv2d(x, p['patch_embed.conv2.weight'], padding=1), 2))
    x = F.relu(bn(F.conv2d(x, p['patch_embed.conv3.weight'], padding=1), 3))
    stride = p['patch_embed.proj.weight'].shape[-1]
    x = F.conv2d(x, p['patch_embed.proj.weight'], p['patch_embed.proj.bias'], stride=stride)
    x = x.flatten(2).transpose(1, 2)
    batch, num, dims = x.shape
    x = torch.cat([p['cls_token'].expand(batch, -1, -1), x], dim=1) + p['pos_embed']
    policy = torch.ones(batch, num + 1, dtype=torch.float64) if masks is not None else None
    positions = torch.arange(num).expand(batch, -1)
    kept = []
    depth = len({k.split('.')[1] for k in p if k.startswith('blocks.')})

    def ln(x: Tensor, name: str) -> Tensor:
        return F.layer_norm(x, (x.shape[-1], ), p[name + '.weight'], p[name + '.bias'], 1e-5)

    for i in range(depth):
        if i in pruning_locs and masks is not None:
            policy = torch.cat([torch.ones(batch, 1, dtype=torch.float64),
                                masks[pruning_locs.index(i)].double()], dim=1)
        elif i in pruning_locs and ratios is not None:
            j = pruning_locs.index(i)
            pre = f'score_predictor.{j}.'
            h = F.gelu(F.linear(ln(x[:, 1:], pre + 'in_conv.0'), p[pre + 'in_conv.1.weight'],
                                p[pre + 'in_conv.1.bias']))
            half = dims // 2
            h = torch.cat([h[..., :half], h[..., half:].mean(1, keepdim=True).expand(
                -1, h.shape[1], -1)], dim=-1)
            for k in (0, 2):
                h = F.gelu(F.linear(h, p[pre + f'out_conv.{k}.weight'],
                                    p[pre + f'out_conv.{k}.bias']))
            score = F.linear(h, p[pre + 'out_conv.4.weight'], p[pre + 'out_conv.4.bias'])
            score = score.log_softmax(-1)[..., 0]
            keep = score.argsort(dim=1, descending=True)[:, :int(num * ratios[j])]
            x = torch.cat([x[:, :1], x[:, 1:].gather(1, keep[..., None].expand(-1, -1, dims))],
                          dim=1)
            positions = positions.gather(1, keep)
            kept.append(positions)
        pre = f'blocks.{i}.'
        n = x.shape[1]
        h = ln(x, pre + 'norm1')
        q, k, v = F.linear(h, p[pre + 'attn.qkv.weight']).reshape(
            batch, n, 3, heads, dims // heads).permute(2, 0, 3, 1, 4)
        a = q * (dims // heads)**-0.5 @ k.transpose(-2, -1)
        e = (a - a.max(dim=-1, keepdim=True).values).exp()
        if policy is None:
            attn = e / e.sum(dim=-1, keepdim=True)
        else:
            keep = policy[:, None, None, :]
            gate = keep + (1 - keep) * torch.eye(n, dtype=torch.float64)
            attn = (e * gate + 1e-6 / n) / ((e * gate).sum(dim=-1, keepdim=True) + 1e-6)
        out = (attn @ v).transpose(1, 2).reshape(batch, n, dims)
        x = x + F.linear(out, p[pre + 'attn.proj.weight'], p[pre + 'attn.proj.bias']) / skip_lam
        h = F.gelu(F.linear(ln(x, pre + 'norm2'), p[pre + 'mlp.fc1.weight'],
                            p[pre + 'mlp.fc1.bias']))
        x = x + F.linear(h, p[pre + 'mlp.fc2.weight'], p[pre + 'mlp.fc2.bias']) / skip_lam
    x = ln(x, 'norm')
    cls = F.linear(x[:, 0], p['head.weight'], p['head.bias'])
    aux = F.linear(x[:, 1:], p['aux_head.weight'], p['aux_head.bias'])
    return x, cls, cls + 0.5 * aux.max(1).values, kept


def nested_sets(batch: int, num: int, counts: List[int], seed: int = 0) -> List[Tensor]:
    """(B, N) bool masks with counts[i] ones per image, each a subset of the previous."""
    gen = torch.Generator().manual_seed(seed)
    masks = [[], [], []]
    for _ in range(batch):
        order = torch.randperm(num, generator=gen)
        for i, c in enumerate(counts):
            masks[i].append(torch.zeros(num, dtype=torch.bool).index_fill(0, order[:c], True))
    return [torch.stack(m) for m in masks]


@pytest.mark.parametrize('training', [False, True])
def test_keep_ratio_one_and_dense_build_equal_the_reference(training):
    """In eval and in train mode (the stem's BatchNorms on batch statistics, no dropout, no
    drop path): at ratio 1.0 the predictors are skipped in both and attention is unmasked."""
    model = tiny_lvvit(keep_ratios=(1.0, 1.0, 1.0)).train(training)
    head = tiny_head().train(training)
    dense = DynamicLVViT(arch=TINY, img_size=64, stem_channels=8, pruning_locs=(),
                         keep_ratios=()).train(training)
    dense.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(2, 3, 64, 64)
    tokens, _, fused, _ = reference_forward(authors_state(model, head), x, 2, 2.0,
                                            training=training)
    decisions = {}
    for backbone in (model, dense):
        with torch.no_grad():
            with record_decisions() as decisions[backbone]:
                feats = backbone(x)
            torch.testing.assert_close(feats[0].double(), tokens, rtol=0, atol=1e-5)
            torch.testing.assert_close(head.fused_logits(feats).double(), fused, rtol=0,
                                       atol=1e-5)
            scores = head.predict(feats)[0].pred_score
        torch.testing.assert_close(scores.double(), fused[0].softmax(-1), rtol=0, atol=1e-6)
    assert decisions[dense] == [] and len(dense.score_predictors) == 0
    assert len(decisions[model]) == 3
    assert all(d.log_probs is None and bool(d.keep_mask.eq(1).all()) for d in decisions[model])


def test_training_with_forced_masks_equals_the_reference():
    model = tiny_lvvit().train()
    head = tiny_head().train()
    batch, num = 2, 16
    keep_sets = nested_sets(batch, num, [12, 8, 4])
    # Predictor i proposes keep_sets[i] plus extra tokens: the nested product must drop them.
    proposals = [keep_sets[0], keep_sets[1] | ~keep_sets[0], keep_sets[2] | ~keep_sets[1]]
    for i, proposal in enumerate(proposals):
        model.score_predictors['0'][i] = FixedScores(proposal)
    x = torch.randn(batch, 3, 64, 64)
    with record_decisions() as decisions:
        feats = model(x)
    cls_logits, aux_logits = head(feats)
    for decision, expected in zip(decisions, keep_sets):
        assert torch.equal(decision.keep_mask.bool(), expected)
    tokens, cls, _, _ = reference_forward(authors_state(model, head), x, 2, 2.0, (1, 3, 4),
                                          masks=keep_sets, training=True)
    # All tokens stay in training (pruned ones attend to themselves only). The reference applies
    # the eps-stabilised policy softmax from block 0 as the authors do; mmdvit's plain softmax
    # before the first predictor differs by O(eps) = 1e-6 only.
    torch.testing.assert_close(feats[0].double(), tokens, rtol=0, atol=1e-5)
    torch.testing.assert_close(cls_logits.double(), cls, rtol=0, atol=1e-5)
    assert aux_logits.shape == (batch, num, 10)
    masked = reference_forward(authors_state(model, head), x, 2, 2.0, training=True)[0]
    assert (masked - tokens)[:, 0].abs().max() > 1e-2  # the masks matter
    loss = keep_ratio_loss(decisions)
    (cls_logits.sum() + loss).backward()
    assert model.patch_embed.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('batch', [1, 2, 3])
def test_inference_keeps_exactly_int_n_ratio_tokens(batch):
    ratios = (0.7, 0.49, 0.343)
    model = tiny_lvvit(img_size=224, keep_ratios=ratios, pruning_locs=(1, 2, 4)).eval()
    lengths = []
    for block in model.blocks:
        block.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    with torch.no_grad(), record_decisions() as decisions:
        out = model(torch.randn(batch, 3, 224, 224))[0]
    counts = [int(196 * r) for r in ratios]
    assert counts == [137, 96, 67]
    assert lengths == [197, 1 + 137, 1 + 96, 1 + 96, 1 + 67, 1 + 67]
    assert out.shape == (batch, 1 + 67, 32)
    previous = None
    for decision, count in zip(decisions, counts):
        assert decision.num_keep == count and decision.keep_indices.shape == (batch, count)
        assert torch.equal(decision.keep_mask.sum(1), torch.full((batch, ), float(count)))
        if previous is not None:
            assert bool((decision.keep_mask <= previous).all())
        previous = decision.keep_mask


def test_training_equals_inference_for_the_same_kept_tokens():
    model = tiny_lvvit(img_size=224, keep_ratios=(0.7, 0.49, 0.343))
    head = tiny_head().eval()
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad(), record_decisions() as decisions:
        inferred = model.eval()(x)[0]
    last = decisions[-1].keep_indices
    kept = [d.keep_mask.bool() for d in decisions]
    for i, mask in enumerate(kept):
        model.score_predictors['0'][i] = FixedScores(mask)
    model.train()
    model.patch_embed.eval()  # the stem's BatchNorm on its running statistics, as at inference
    with torch.no_grad():
        trained = model(x)[0]
    index = torch.cat([torch.zeros_like(last[:, :1]), last + 1], dim=1)
    trained = trained.gather(1, index[..., None].expand(-1, -1, trained.shape[-1]))
    # Pruned tokens stay in the training sequence but receive only eps/N of attention.
    torch.testing.assert_close(trained, inferred, rtol=0, atol=1e-4)
    torch.testing.assert_close(head.fused_logits((trained, )), head.fused_logits((inferred, )),
                               rtol=0, atol=1e-4)


def authors_checkpoint(arch: str, predictors: bool, seed: int = 0) -> StateDict:
    """A synthetic checkpoint with the key names and shapes of the authors' LVViTDiffPruning
    (``patch_size=16, p_emb='4_2', return_dense=True``; DynamicViT models/dylvvit.py) or, without
    predictors, of TokenLabeling's lvvit_s / lvvit_m."""
    dims, depth, classes, hidden = {'lvvit-s': (384, 16, 1000, 1152),
                                    'lvvit-m': (512, 20, 1000, 1536)}[arch]
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.02) -> Tensor:
        return torch.randn(shape, generator=gen) * std

    shapes = {'cls_token': (1, 1, dims), 'pos_embed': (1, 197, dims),
              'patch_embed.conv1.weight': (64, 3, 7, 7), 'patch_embed.conv2.weight': (64, 64, 3, 3),
              'patch_embed.conv3.weight': (64, 64, 3, 3),
              'patch_embed.proj.weight': (dims, 64, 8, 8), 'patch_embed.proj.bias': (dims, ),
              'norm.weight': (dims, ), 'norm.bias': (dims, ), 'head.weight': (classes, dims),
              'head.bias': (classes, ), 'aux_head.weight': (classes, dims),
              'aux_head.bias': (classes, )}
    for i in range(1, 4):
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            shapes[f'patch_embed.bn{i}.{name}'] = (64, )
    for i in range(depth):
        pre = f'blocks.{i}.'
        shapes.update({pre + 'norm1.weight': (dims, ), pre + 'norm1.bias': (dims, ),
                       pre + 'attn.qkv.weight': (3 * dims, dims),
                       pre + 'attn.proj.weight': (dims, dims), pre + 'attn.proj.bias': (dims, ),
                       pre + 'norm2.weight': (dims, ), pre + 'norm2.bias': (dims, ),
                       pre + 'mlp.fc1.weight': (hidden, dims), pre + 'mlp.fc1.bias': (hidden, ),
                       pre + 'mlp.fc2.weight': (dims, hidden), pre + 'mlp.fc2.bias': (dims, )})
    for j in range(3 if predictors else 0):
        pre = f'score_predictor.{j}.'
        widths = [(dims, dims), (dims // 2, dims), (dims // 4, dims // 2), (2, dims // 4)]
        shapes.update({pre + 'in_conv.0.weight': (dims, ), pre + 'in_conv.0.bias': (dims, )})
        for name, (out, inp) in zip(('in_conv.1', 'out_conv.0', 'out_conv.2', 'out_conv.4'),
                                    widths):
            shapes.update({f'{pre}{name}.weight': (out, inp), f'{pre}{name}.bias': (out, )})
    state = {}
    for key, shape in shapes.items():
        if key.endswith('running_var'):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif 'score_predictor' in key and not key.endswith('.0.weight'):
            state[key] = rand(*shape, std=0.3)  # spread scores: top-k far from ties
        elif key.endswith('weight') and len(shape) == 1:
            state[key] = 1.0 + rand(*shape, std=0.1)
        else:
            state[key] = rand(*shape, std=0.1 if 'bn' in key or 'running' in key else 0.02)
    state['patch_embed.bn1.num_batches_tracked'] = torch.tensor(10)
    for i in (2, 3):
        state[f'patch_embed.bn{i}.num_batches_tracked'] = torch.tensor(10)
    return state


def test_authors_checkpoint_loads_and_matches_the_reference_at_real_size(tmp_path):
    state = authors_checkpoint('lvvit-s', predictors=True)
    path = tmp_path / 'dynamicvit_lvvit-s-0.7.pth'
    torch.save({'model': state}, path)
    init = dict(type='Pretrained', checkpoint=str(path))
    model = DynamicLVViT('lvvit-s', init_cfg=init)
    report = model.init_weights()
    assert report.layout == 'dynamicvit-lvvit'
    assert report.missing == [] and report.new_modules == [] and report.unexpected == []
    assert sorted(report.dropped) == sorted(k for k in state if 'head.' in k)
    assert len(report.loaded) == len(model.state_dict())
    head = LVViTClsHead(1000, 384, init_cfg=init)
    head.init_weights()
    model.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad(), record_decisions() as decisions:
        fused = head.fused_logits(model(x))
    _, _, expected, kept = reference_forward(state, x, 6, 2.0, (4, 8, 12),
                                             ratios=(0.7, 0.49, 0.343))
    for decision, positions in zip(decisions, kept):
        assert torch.equal(decision.keep_indices.sort(1).values, positions.sort(1).values)
    torch.testing.assert_close(fused.double(), expected, rtol=0, atol=1e-4)


def test_plain_lvvit_checkpoint_and_classifier_conversion(tmp_path):
    path = tmp_path / 'lvvit_s-26M-224-83.3.pth.tar'
    torch.save(authors_checkpoint('lvvit-s', predictors=False), path)
    model = DynamicLVViT('lvvit-s', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    report = model.init_weights()
    assert report.layout == 'lvvit' and report.missing == [] and report.unexpected == []
    assert report.new_modules and all(k.startswith('score_predictors.0.')
                                      for k in report.new_modules)
    converted, layout = convert_lvvit_classifier_checkpoint(
        authors_checkpoint('lvvit-m', predictors=False))
    cfg = Config.fromfile(str(ROOT / 'configs/imagenet/dynamic-lvvit-medium-r0.7_in1k.py'))
    student = cfg.model.student
    student.backbone.init_cfg = student.head.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmpretrain'), torch.device('meta'):
        classifier = MODELS.build(student)
    own = {k: v.shape for k, v in classifier.state_dict().items()}
    assert layout == 'lvvit'
    assert {k: v.shape for k, v in converted.items()} == {
        k: v for k, v in own.items() if 'score_predictors' not in k}


def test_wrong_checkpoints_and_arguments_raise_with_the_fix():
    deit = {'cls_token': torch.zeros(1, 1, 32), 'blocks.0.norm1.weight': torch.zeros(32),
            'patch_embed.proj.weight': torch.zeros(32, 3, 16, 16)}
    with pytest.raises(ValueError, match='mmdvit.DynamicViT'):
        tiny_lvvit().convert_checkpoint(deit)
    state = authors_state(tiny_lvvit(), tiny_head())
    del state['aux_head.weight']
    with pytest.raises(ValueError, match=r"lacks \['aux_head.weight'\]"):
        convert_lvvit_classifier_checkpoint(state)
    with pytest.raises(ValueError, match="arch='lvvit-x' is unknown"):
        DynamicLVViT('lvvit-x')
    with pytest.raises(ValueError, match="out_type='pooled'"):
        DynamicLVViT(arch=TINY, img_size=64, out_type='pooled')
    with pytest.raises(ValueError, match='non-increasing'):
        DynamicLVViT(arch=TINY, img_size=64, pruning_locs=(1, 3, 4), keep_ratios=(0.5, 0.7, 0.3))
    with pytest.raises(ValueError, match='keep_ratios must be'):
        DynamicLVViT(arch=TINY, img_size=64, pruning_locs=())
    with pytest.raises(ValueError, match='multiples of patch_size'):
        DynamicLVViT(arch=TINY, img_size=60)
    with pytest.raises(ValueError, match="out_type='raw'"):
        tiny_head()((torch.zeros(2, 32), ))


def test_sparsity_trainer_step_on_a_tiny_config():
    """The ImageNet config's wrapper with a tiny student: classification loss on the class
    logits, keep-ratio loss, logit distillation (class-token logits) and token distillation
    from the dense twin; predictions fuse the auxiliary logits of the kept tokens."""
    cfg = Config.fromfile(str(ROOT / 'configs/imagenet/dynamic-lvvit-small-r0.7_in1k.py'))
    student = cfg.model.student
    student.backbone.update(arch=dict(TINY, num_layers=4), img_size=64, stem_channels=8,
                            pruning_locs=(1, 2, 3), init_cfg=None)
    student.head.update(num_classes=5, in_channels=32, init_cfg=None)
    student.train_cfg = None  # no Mixup / CutMix on two images
    cfg.model.teacher.checkpoint = None
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
        model.init_weights()
        samples = [DataSample().set_gt_label(i) for i in (1, 3)]
        x = torch.randn(2, 3, 64, 64)
        losses = model.train()(x, samples, mode='loss')
        assert {'loss', 'loss_keep_ratio', 'loss_feat_distill', 'loss_logit_distill'} <= set(
            losses)
        sum(v for k, v in losses.items() if k.startswith('loss')).backward()
        assert model.backbone.score_predictors['0'][0].out_conv[4].weight.grad.abs().sum() > 0
        with torch.no_grad():
            cls_logits, aux_logits = model.eval()(x, mode='tensor')
            scores = model(x, mode='predict')[0].pred_score
    assert aux_logits.shape == (2, int(16 * 0.7**3), 5)
    fused = cls_logits[0] + 0.5 * aux_logits[0].max(0).values
    torch.testing.assert_close(scores, fused.softmax(-1))


PUBLISHED = {  # config: (dynamic GFLOPs, dense GFLOPs) at 224, DynamicViT paper / README
    'dynamic-lvvit-small-r0.5_in1k.py': (3.7, 6.6),
    'dynamic-lvvit-small-r0.7_in1k.py': (4.6, 6.6),
    'dynamic-lvvit-medium-r0.7_in1k.py': (8.5, 12.7),
}


@pytest.fixture(scope='module')
def photo():
    return sample_photos(1)


@pytest.mark.parametrize('name', PUBLISHED)
def test_published_224_flops_within_0_1g(photo, name):
    """Whole classifier (backbone, class-token head, auxiliary head on the tokens still there),
    as the authors count their LVViTDiffPruning."""
    result = complexity(Config.fromfile(str(ROOT / 'configs/imagenet' / name)), (224, 224),
                        photo)
    dynamic, dense = PUBLISHED[name]
    assert abs(result['model']['dynamic'] - dynamic) <= 0.1, result['model']
    assert abs(result['model']['dense'] - dense) <= 0.1, result['model']


def test_converter_tool_detects_lvvit_releases(tmp_path):
    """``dynamicvit2mmdvit.py`` sends a file with LV-ViT's convolutional stem to the LV-ViT
    conversion (not the DeiT one) and writes the keys the LV-ViT configs load, heads included."""
    from test_converters import converter_tool
    src, dst = tmp_path / 'dylvvit_s.pth', tmp_path / 'out.pth'
    state = authors_checkpoint('lvvit-s', predictors=True)
    torch.save({'model': state}, src)
    result = converter_tool().main([str(src), str(dst)])
    assert (result.family, result.layout) == ('lvvit', 'dynamicvit-lvvit')
    written = torch.load(dst, weights_only=True)['state_dict']
    expected, _ = convert_lvvit_classifier_checkpoint(state)
    assert set(written) == set(expected)
    assert {'head.head.weight', 'head.aux_head.weight'} <= set(written)
    assert 'backbone.score_predictors.0.2.out_conv.4.weight' in written


@pytest.mark.parametrize('cls, names, optional, mlp_ratio', [
    (DynamicViT, ['base', 'deit-256', 'deit-base', 'deit-small', 'deit-tiny', 'large'],
     'mlp_ratio', 4),
    (DynamicLVViT, ['lvvit-m', 'lvvit-s'], 'mlp_ratio, skip_lam', 3),
])
def test_deit_and_lvvit_share_the_architecture_lookup(cls, names, optional, mlp_ratio):
    """One lookup for both plain ViTs: each names its own architectures and optional keys, and
    fills the keys an arch dict omits with its own defaults (LV-ViT: MLP ratio 3, skip_lam 1)."""
    with pytest.raises(ValueError, match=re.escape(f"arch='x' is unknown; use one of {names}")):
        cls(arch='x')
    with pytest.raises(ValueError, match=re.escape(f'(and optionally {optional})')):
        cls(arch=dict(embed_dims=32, num_layers=2))
    model = cls(arch=dict(embed_dims=32, num_layers=2, num_heads=2), img_size=32,
                pruning_locs=(), keep_ratios=())
    assert model.blocks[1].mlp.fc1.out_features == 32 * mlp_ratio
    assert model.blocks[1].skip_lam == 1.0
