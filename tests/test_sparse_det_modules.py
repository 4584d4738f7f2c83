"""DynamicFPN and DynamicRPNHead: at keep ratio 1.0 they are mmdet's FPN / RPNHead, kept tiles
take the dense 3x3 convolution and pruned tiles the 1x1 fast path, training equals inference for
the same kept tiles, dense checkpoints start the fast paths, and gradients reach the
predictors."""
from typing import List

import pytest
import torch
import torch.nn.functional as F
from helpers import FixedTileScores, random_keep_sets, randomize
from mmdet.structures import DetDataSample
from mmengine.config import ConfigDict
from mmengine.registry import MODELS, DefaultScope
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmdvit.sparse import SparseConvGate, record_decisions
from mmdvit.sparse.sparse_conv import expand_block_mask

FPN_ARGS = dict(in_channels=[4, 8, 16, 32], out_channels=8, num_outs=5)
RPN_ARGS = dict(
    in_channels=8, feat_channels=8,
    anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                          strides=[4, 8, 16, 32, 64]),
    bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
    loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
    loss_bbox=dict(type='L1Loss', loss_weight=1.0),
    train_cfg=ConfigDict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                      match_low_quality=True, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=64, pos_fraction=0.5, neg_pos_ub=-1,
                     add_gt_as_proposals=False),
        allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=ConfigDict(nms_pre=100, max_per_img=20, min_bbox_size=0,
                        nms=dict(type='nms', iou_threshold=0.7)))
# level 0 at 1/4 scale of a 148 x 204 image, odd sizes; block 8 -> 5 x 7 tiles at levels 0, 1
SIZES = [(37, 51), (19, 26), (10, 13), (5, 7), (3, 4)]
GRIDS = [(5, 7), (5, 7)]
BLOCK = 8


def build(type_: str, **kwargs) -> nn.Module:
    """mmdet's FPN / RPNHead, or the dynamic module (sparse levels 0 and 1, ratio 1.0, 8x8
    tiles at level 0) with the same tiny arguments, built from mmdet scope."""
    import mmdet.models  # noqa: F401  (registers FPN, RPNHead and their parts)
    args = dict(FPN_ARGS if 'FPN' in type_ else RPN_ARGS, type=type_)
    if type_.startswith('mmdvit.'):
        args.update(keep_ratios=(1.0, 1.0), sparse_levels=(0, 1), block_size=BLOCK,
                    score_dims=8)
    args.update(kwargs)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(args)


def fpn_inputs(batch: int = 2) -> List[Tensor]:
    torch.manual_seed(1)
    return [torch.randn(batch, c, *s) for c, s in zip(FPN_ARGS['in_channels'], SIZES)]


def rpn_inputs(batch: int = 2) -> List[Tensor]:
    torch.manual_seed(2)
    return [torch.randn(batch, RPN_ARGS['in_channels'], *s) for s in SIZES]


def gates_of(module: nn.Module) -> List[nn.Module]:
    """The gates of the sparse levels, in level order."""
    if hasattr(module, 'rpn_gates'):
        return list(module.rpn_gates)
    return [module.fpn_convs[level].gate for level in module.sparse_levels]


def flat_outputs(module: nn.Module, inputs: List[Tensor]) -> List[Tensor]:
    """FPN levels, or RPN cls scores then bbox preds of every level."""
    outs = module(inputs)
    return list(outs) if isinstance(outs[0], Tensor) else [*outs[0], *outs[1]]


@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('name, inputs', [('FPN', fpn_inputs), ('RPNHead', rpn_inputs)])
def test_at_ratio_one_the_module_is_mmdets_and_loads_its_checkpoint(name, inputs, training):
    """In eval and in train mode: at ratio 1.0 the predictors are skipped in both."""
    dense = build(name)
    state = randomize(dense)
    dynamic = build(f'mmdvit.Dynamic{name}')
    result = dynamic.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    gates = tuple(n + '.' for n, m in dynamic.named_modules() if isinstance(m, SparseConvGate))
    assert len(gates) == 2
    assert set(result.missing_keys) == {k for k in dynamic.state_dict() if k.startswith(gates)}
    assert all('score_predictor' in k or 'fast_path' in k for k in result.missing_keys)
    assert set(dynamic.state_dict()) - set(result.missing_keys) == set(state)
    dense.train(training), dynamic.train(training)
    with torch.no_grad():
        expected = flat_outputs(dense, inputs())
        with record_decisions() as decisions:
            actual = flat_outputs(dynamic, inputs())
    assert len(actual) == len(expected)
    assert all(torch.equal(a, e) for a, e in zip(actual, expected))
    assert [(d.hw_shape, d.num_keep) for d in decisions] == [(g, g[0] * g[1]) for g in GRIDS]
    assert all(d.log_probs is None and bool(d.keep_mask.eq(1).all()) for d in decisions)
    # the fast paths were started from the loaded kernel, summed over its taps
    prefix = 'rpn_conv.' if name == 'RPNHead' else 'fpn_convs.{}.conv.'
    for level, gate in zip((0, 1), gates_of(dynamic)):
        kernel = state[prefix.format(level) + 'weight']
        torch.testing.assert_close(gate.fast_path.weight, kernel.sum((2, 3), keepdim=True))
        torch.testing.assert_close(gate.fast_path.bias, state[prefix.format(level) + 'bias'])


@pytest.mark.parametrize('name', ['FPN', 'RPNHead'])
def test_init_weights_re_derives_the_fast_paths_from_the_initialised_kernels(name):
    dynamic = build(f'mmdvit.Dynamic{name}')
    for gate in gates_of(dynamic):
        nn.init.zeros_(gate.fast_path.weight)
    dynamic.init_weights()
    convs = ([dynamic.rpn_conv] * 2 if name == 'RPNHead' else
             [dynamic.fpn_convs[level].conv for level in dynamic.sparse_levels])
    for conv, gate in zip(convs, gates_of(dynamic)):
        torch.testing.assert_close(gate.fast_path.weight,
                                   conv.weight.sum((2, 3), keepdim=True))


@pytest.mark.parametrize('name, inputs', [('FPN', fpn_inputs), ('RPNHead', rpn_inputs)])
def test_training_stream_equals_inference_for_the_same_tiles(name, inputs):
    ratios = (0.5, 0.3)
    dynamic = build(f'mmdvit.Dynamic{name}', keep_ratios=ratios)
    randomize(dynamic)
    for i, (gate, grid, ratio) in enumerate(zip(gates_of(dynamic), GRIDS, ratios)):
        keep = random_keep_sets(2, grid[0] * grid[1], [ratio], seed=i)[0]
        gate.score_predictor = FixedTileScores(keep)
    with record_decisions() as trained:
        train_out = flat_outputs(dynamic.train(), inputs())
    train_masks = [d.keep_mask for d in trained]
    with torch.no_grad(), record_decisions() as decisions:
        eval_out = flat_outputs(dynamic.eval(), inputs())
    assert [d.num_keep for d in decisions] == [17, 10]
    assert all(torch.equal(m, d.keep_mask) for m, d in zip(train_masks, decisions))
    for a, b in zip(train_out, eval_out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('batch', [1, 2, 3])
@pytest.mark.parametrize('name, inputs, source', [('FPN', fpn_inputs, 'neck'),
                                                  ('RPNHead', rpn_inputs, 'rpn_head')])
def test_inference_keeps_int_tiles_times_ratio_and_records_decisions(
        name, inputs, source, batch):
    dynamic = build(f'mmdvit.Dynamic{name}', keep_ratios=(0.4, 0.75)).eval()
    assert dynamic.keep_ratios == [0.4, 0.75]
    with torch.no_grad(), record_decisions() as decisions:
        flat_outputs(dynamic, inputs(batch))
    assert [(d.source, d.stage, d.index, d.hw_shape) for d in decisions] == [
        (source, 0, 0, GRIDS[0]), (source, 1, 1, GRIDS[1])]
    assert [d.keep_mask.sum(1).tolist() for d in decisions] == [[14.0] * batch,
                                                                [26.0] * batch]


def test_fpn_kept_tiles_are_the_dense_conv_and_pruned_tiles_the_fast_path():
    dense = build('FPN')
    state = randomize(dense)
    dynamic = build('mmdvit.DynamicFPN', keep_ratios=(0.5, 0.5))
    dynamic.load_state_dict(state, strict=False)
    maps = {}
    for level in (0, 1):  # the merged lateral map each fpn_conv gets
        dynamic.fpn_convs[level].register_forward_pre_hook(
            lambda m, args, level=level: maps.__setitem__(level, args[0]))
    dense.eval(), dynamic.eval()
    with torch.no_grad():
        with record_decisions() as decisions:
            expected, actual = dense(fpn_inputs()), dynamic(fpn_inputs())
        for level, decision in enumerate(decisions):
            gate = dynamic.fpn_convs[level].gate
            kept = expand_block_mask(decision.keep_mask, decision.hw_shape, gate.block,
                                     *SIZES[level]).bool().expand_as(actual[level])
            fast = gate.fast_path(maps[level])
            assert kept.any() and not kept.all()
            torch.testing.assert_close(actual[level][kept], expected[level][kept])
            torch.testing.assert_close(actual[level][~kept], fast[~kept])
        assert all(torch.equal(a, e) for a, e in zip(actual[2:], expected[2:]))


def test_rpn_kept_tiles_are_the_dense_head_and_pruned_tiles_the_relu_of_the_fast_path():
    dense = build('RPNHead')
    state = randomize(dense)
    dynamic = build('mmdvit.DynamicRPNHead', keep_ratios=(0.5, 0.5))
    dynamic.load_state_dict(state, strict=False)
    dense.eval(), dynamic.eval()
    x = rpn_inputs()
    with torch.no_grad():
        with record_decisions() as decisions:
            (cls_d, reg_d), (cls_s, reg_s) = dense(x), dynamic(x)
        for level, (decision, gate) in enumerate(zip(decisions, dynamic.rpn_gates)):
            fast = F.relu(gate.fast_path(x[level]))
            kept = expand_block_mask(decision.keep_mask, decision.hw_shape, gate.block,
                                     *SIZES[level]).bool()
            assert kept.any() and not kept.all()
            for out, ref, head in ((cls_s, cls_d, dynamic.rpn_cls),
                                   (reg_s, reg_d, dynamic.rpn_reg)):
                mask = kept.expand_as(out[level])
                torch.testing.assert_close(out[level][mask], ref[level][mask])
                torch.testing.assert_close(out[level][~mask], head(fast)[~mask])
        assert all(torch.equal(a, e) for a, e in zip(cls_s[2:] + reg_s[2:], cls_d[2:] + reg_d[2:]))


@pytest.mark.parametrize('name', ['FPN', 'RPNHead'])
@pytest.mark.parametrize('kwargs, message', [
    (dict(keep_ratios=(0.0, 0.5)), '0 < ratio <= 1'),
    (dict(keep_ratios=(1.5, 0.5)), '0 < ratio <= 1'),
    (dict(keep_ratios=(0.5, )), 'one ratio per entry of sparse_levels'),
    (dict(sparse_levels=(0, 5)), r'levels in \[0, [34]\]'),
    (dict(sparse_levels=(1, 0)), 'distinct, increasing'),
    (dict(block_size=0), 'block_size'),
])
def test_bad_arguments_raise_errors_naming_the_fix(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build(f'mmdvit.Dynamic{name}', **kwargs)


def test_rpn_head_with_several_convs_is_refused():
    with pytest.raises(ValueError, match='use num_convs=1'):
        build('mmdvit.DynamicRPNHead', num_convs=2)


def test_gradients_reach_every_predictor_through_the_rpn_loss_and_the_fpn():
    head = build('mmdvit.DynamicRPNHead', keep_ratios=(0.5, 0.5)).train()
    samples = []
    for b in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(148, 204), pad_shape=(148, 204)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10.0, 12.0, 60.0, 70.0], [90.0, 30.0, 180.0, 140.0]]) + b,
            labels=torch.zeros(2, dtype=torch.long))
        samples.append(sample)
    with record_decisions() as decisions:
        losses = head.loss(tuple(rpn_inputs()), samples)
    assert [d.log_probs is not None for d in decisions] == [True, True]
    sum(sum(v) if isinstance(v, list) else v for v in losses.values()).backward()
    neck = build('mmdvit.DynamicFPN', keep_ratios=(0.5, 0.5)).train()
    sum(out.sum() for out in neck(fpn_inputs())).backward()
    for gate in gates_of(head) + gates_of(neck):
        grad = gate.score_predictor.proj.weight.grad
        assert grad is not None and grad.abs().sum() > 0
    # predict goes through the sparse forward as well
    head.eval()
    with torch.no_grad(), record_decisions() as decisions:
        results = head.predict(tuple(rpn_inputs()), samples)
    assert len(results) == 2 and [d.num_keep for d in decisions] == [17, 17]
