"""FLOP counting: the published 224x224 figures, monotonicity in the keep ratio, ratio 1.0 equal
to dense, counts of gathered subsets, and tools/analysis_tools/get_flops.py end to end."""
import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdvit.analysis.complexity import complexity
from mmdvit.analysis.flops import count_macs
from mmdvit.analysis.inputs import sample_photos
from mmdvit.analysis.models import load_config
from mmdvit.sparse import decide, route_tokens

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GET_FLOPS = os.path.join(ROOT, 'tools', 'analysis_tools', 'get_flops.py')


@pytest.fixture(scope='module')
def photo():
    return sample_photos(1)


def load_tool(path):
    """A tool script imported as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('tool_under_test', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(path, argv):
    return load_tool(path).main(argv)


# (preset, backbone overrides, published dynamic GFLOPs, published dense GFLOPs)
PUBLISHED = {
    'DynamicSwin-T/0.7': ('swin-t', {}, 4.0, 4.5),
    'DynamicCNN-T/0.7': ('convnext-t', {}, 3.6, 4.5),
    'DynamicCNN-T/0.9': ('convnext-t', dict(keep_ratios=(0.9, 0.7, 0.5)), 3.9, 4.5),
    'DynamicViT-DeiT-S/0.7': ('deit-s', {}, 2.9, 4.6),
    # Published for DeiT-256 is the dynamic figure only; its dense count is checked to be the
    # MACs of the architecture (embed 256, 12 blocks, 197 tokens) in the test below.
    'DynamicViT-DeiT-256/0.7': ('deit-s', dict(arch='deit-256'), 1.3, None),
}


@pytest.mark.parametrize('model', PUBLISHED)
def test_published_224_flops_within_0_1g(photo, model):
    preset, overrides, dynamic, dense = PUBLISHED[model]
    cfg = load_config(preset)
    cfg.model.update(overrides)
    result = complexity(cfg, (224, 224), photo)
    assert abs(result['backbone']['dynamic'] - dynamic) <= 0.1, result['backbone']
    if dense is None:  # closed form: patch embedding + 12 x (qkv, attention, proj, MLP)
        tokens, dims = 197, 256
        block = 12 * tokens * dims**2 + 2 * tokens**2 * dims
        dense = (196 * 768 * dims + 12 * block) / 1e9
    assert abs(result['backbone']['dense'] - dense) <= 0.1, result['backbone']


@pytest.mark.parametrize('preset', ['swin-test', 'convnext-test', 'deit-test'])
def test_flops_fall_as_rho_falls_and_ratio_one_equals_dense(photo, preset):
    nested = preset == 'deit-test'
    counts = []
    for rho in (1.0, 0.9, 0.7, 0.5):
        cfg = load_config(preset)
        cfg.model.keep_ratios = (rho, rho**2, rho**3) if nested else (rho, rho - 0.2, rho - 0.4)
        if rho == 1.0:
            cfg.model.keep_ratios = (1.0, 1.0, 1.0)
        result = complexity(cfg, (128, 128), photo)
        counts.append(result['backbone']['dynamic'])
        if rho == 1.0:
            # the predictor is skipped at inference when every position is kept: exactly dense
            assert result['backbone']['dynamic'] == result['backbone']['dense']
    assert all(a > b for a, b in zip(counts, counts[1:])), counts


@pytest.mark.parametrize('hw, ratio, k', [((5, 8), 0.3, 12), ((2, 2), 0.2, 1), ((1, 1), 0.5, 1)])
def test_counts_gathered_subsets_at_their_size_and_cpu_attention(hw, ratio, k):
    """The count follows the kept positions, k = max(1, int(N * ratio)) (small grids keep
    one)."""
    batch, channels = 2, 8
    num = hw[0] * hw[1]
    slow = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(),
                         nn.Linear(4 * channels, channels))
    fast = nn.Linear(channels, channels)
    decision = decide(torch.randn(batch, num, 2).log_softmax(-1), ratio, False, 2, 0, hw)
    assert decision.num_keep == k
    macs = count_macs(route_tokens, torch.randn(batch, num, channels), slow, fast, decision)
    assert macs == batch * (k * 8 * channels**2 + (num - k) * channels**2)
    q, key, v = (torch.randn(2, 3, 10, 4) for _ in range(3))
    assert count_macs(F.scaled_dot_product_attention, q, key, v) == 2 * 2 * 3 * 10 * 10 * 4


TINY_SEG = """
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    _delete_=True,
    type='mmdvit.SparsityTrainer',
    student=dict(
        _base_.model,
        backbone=dict(_base_.model.backbone, type='mmdvit.DynamicSwinTransformer',
                      embed_dims=16, depths=(1, 1, 4, 1), num_heads=(1, 2, 2, 4),
                      window_size=4, pruning_locs=(0, 1, 2), init_cfg=None),
        decode_head=dict(_base_.model.decode_head, in_channels=[16, 32, 64, 128], channels=16,
                         norm_cfg=norm_cfg),
        auxiliary_head=dict(_base_.model.auxiliary_head, in_channels=64, channels=8,
                            norm_cfg=norm_cfg)),
    teacher=None, feature_distill_weight=0.0)
"""

TINY_DET = """
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
model = dict(
    backbone=dict(type='mmdvit.DynamicConvNeXt', _delete_=True,
                  arch=dict(depths=[1, 1, 4, 1], channels=[16, 24, 32, 48]),
                  pruning_locs=(0, 1, 2), out_indices=(0, 1, 2, 3),
                  gap_before_final_norm=False),
    neck=dict(in_channels=[16, 24, 32, 48], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=16),
                  bbox_head=dict(in_channels=16, fc_out_channels=32),
                  mask_roi_extractor=dict(out_channels=16),
                  mask_head=dict(in_channels=16, conv_out_channels=16)))
"""


@pytest.mark.parametrize('body, shape, padded', [(TINY_SEG, [64, 96], [64, 96]),
                                                 (TINY_DET, [70, 100], [96, 128])],
                         ids=['upernet-wrapper', 'mask-rcnn'])
def test_get_flops_tool_writes_the_figures(tmp_path, capsys, body, shape, padded):
    config = tmp_path / 'cfg.py'
    config.write_text(body)
    out = tmp_path / 'flops.json'
    run_tool(GET_FLOPS, [str(config), '--shape', *map(str, shape), '--num-images', '2',
                         '--out', str(out)])
    result = json.loads(out.read_text())
    assert result['shape'] == shape and result['input_shape'] == padded
    assert result['num_images'] == 2
    for part in ('backbone', 'model'):
        assert 0 < result[part]['dynamic'] < result[part]['dense']
    assert result['model']['dense'] > result['backbone']['dense']
    params = result['params']
    assert params['backbone']['dynamic'] > params['backbone']['dense']
    assert params['model']['dense'] > params['backbone']['dense']
    assert [d['kept'] for d in result['kept']] == [
        int(d['positions'] * r) for d, r in zip(result['kept'], (0.7, 0.5, 0.3))]
    assert 'multiply-adds' in result['convention']
    # The console rounds (dense / dynamic as N.NNx), the JSON keeps full precision.
    lines = capsys.readouterr().out.splitlines()
    dense, dynamic = result['model']['dense'], result['model']['dynamic']
    assert f'{dense:.3f}' in lines[4] and f'{dense / dynamic:.2f}x  GFLOPs' in lines[4]
    assert lines[4].startswith('model ') and lines[1].split()[-1] == 'dense/dynamic'


def test_get_flops_applies_student_overrides_and_refuses_them_on_the_wrapper(tmp_path):
    config = tmp_path / 'cfg.py'
    config.write_text(TINY_SEG)
    args = [str(config), '--shape', '64', '64', '--cfg-options']
    result = run_tool(GET_FLOPS, args + ['model.student.backbone.keep_ratios=(0.9,0.7,0.5)'])
    assert [d['keep_ratio'] for d in result['kept']] == [0.9, 0.7, 0.5]
    # The upstream spelling would be silently ignored on a wrapper config: it is refused.
    with pytest.raises(TypeError, match=r'model\.backbone\.keep_ratios -> '
                       r'model\.student\.backbone\.keep_ratios'):
        run_tool(GET_FLOPS, args + ['model.backbone.keep_ratios=(0.9,0.7,0.5)'])
