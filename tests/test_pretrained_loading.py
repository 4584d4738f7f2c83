"""Pretrained loading through init_cfg: layouts, prefixes, and what gets reported."""
import logging

import pytest
import torch
from mmengine.logging import MMLogger

from helpers import randomize
from mmdvit.models import DynamicConvNeXt, DynamicSwinTransformer

TINY_SWIN = dict(embed_dims=32, depths=(1, 1, 4, 1), num_heads=(1, 2, 4, 8),
                 pruning_locs=(0, 1, 2))
TINY_CONVNEXT = dict(arch=dict(depths=[1, 1, 4, 1], channels=[16, 32, 64, 128]),
                     pruning_locs=(0, 1, 2), out_indices=(0, 1, 2, 3))


def official_swin_state(mmseg_state):
    """Write an mmseg-layout Swin state dict in Microsoft's layout (the inverse mapping,
    written independently of the converter under test)."""
    out = {}
    for key, value in mmseg_state.items():
        if key.endswith('relative_position_index'):
            continue
        new = key.replace('stages.', 'layers.').replace('.attn.w_msa.', '.attn.')
        new = new.replace('.ffn.layers.0.0.', '.mlp.fc1.').replace('.ffn.layers.1.', '.mlp.fc2.')
        new = new.replace('patch_embed.projection.', 'patch_embed.proj.').replace('norm3.', 'norm.')
        if '.downsample.' in key:  # unfold order (c, kh, kw) -> official (kw, kh, c)
            lead, channels = value.shape[:-1], value.shape[-1] // 4
            v = value.reshape(*lead, channels, 2, 2)
            value = v.permute(*range(len(lead)), -1, -2, -3).reshape(*lead, 4 * channels)
        out[new] = value
    out['head.weight'] = torch.zeros(10, 256)
    return out


@pytest.fixture
def log_lines():
    logger = MMLogger.get_instance('mmdvit-test-loading')
    records = []

    class Capture(logging.Handler):

        def emit(self, record):
            records.append(record.getMessage())

    handler = Capture()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_mmseg_layout_with_backbone_prefix_loads_and_reports(tmp_path, log_lines):
    src = DynamicSwinTransformer(sparse_stages=(), **{k: v for k, v in TINY_SWIN.items()
                                                      if k != 'pruning_locs'})
    state = randomize(src)
    path = tmp_path / 'seg.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in state.items()},
                'meta': {}}, path)
    model = DynamicSwinTransformer(**TINY_SWIN,
                                   init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                                 prefix='backbone.'))
    report = model.init_weights()
    assert report.layout == 'mmseg' and not report.missing and not report.unexpected
    assert report.new_modules and all('score_predictors' in k or 'fast_path' in k
                                      for k in report.new_modules)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())


def test_official_swin_layout_converts(tmp_path):
    src = DynamicSwinTransformer(sparse_stages=(), embed_dims=32, depths=(1, 1, 4, 1),
                                 num_heads=(1, 2, 4, 8)).eval()
    state = randomize(src)
    path = tmp_path / 'official.pth'
    torch.save({'model': official_swin_state(state)}, path)
    model = DynamicSwinTransformer(**TINY_SWIN, keep_ratios=(1.0, 1.0, 1.0), convert_weights=True,
                                   init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    report = model.init_weights()
    assert report.layout == 'official'
    assert not report.missing and not report.unexpected
    assert report.dropped == ['head.weight']
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), src(x)):
            torch.testing.assert_close(a, b)


def test_missing_and_unexpected_keys_are_logged_by_name(tmp_path, log_lines):
    src = DynamicConvNeXt(sparse_stages=(), **{k: v for k, v in TINY_CONVNEXT.items()
                                               if k != 'pruning_locs'})
    state = randomize(src)
    state.pop('stages.1.0.gamma')
    state['extra.weight'] = torch.zeros(3)
    path = tmp_path / 'cnx.pth'
    torch.save(state, path)
    model = DynamicConvNeXt(**TINY_CONVNEXT, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    report = model.init_weights()
    assert report.missing == ['stages.1.0.gamma']
    assert report.unexpected == ['extra.weight']
    assert any('missing' in line and 'stages.1.0.gamma' in line for line in log_lines)
    assert any('unexpected' in line and 'extra.weight' in line for line in log_lines)


def test_shape_mismatch_names_the_key(tmp_path):
    """Bias tables of another window size are resized (tests/test_upstream_parity.py); tables
    with another number of heads cannot be, and the error names them."""
    src = DynamicSwinTransformer(sparse_stages=(), embed_dims=32, depths=(1, 1, 4, 1),
                                 num_heads=(1, 2, 4, 4))
    path = tmp_path / 'heads4.pth'
    torch.save(src.state_dict(), path)
    model = DynamicSwinTransformer(**TINY_SWIN, init_cfg=dict(type='Pretrained',
                                                              checkpoint=str(path)))
    with pytest.raises(ValueError, match='relative_position_bias_table'):
        model.init_weights()


def test_missing_checkpoint_file_is_named(tmp_path):
    model = DynamicSwinTransformer(**TINY_SWIN, init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'nope.pth')))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        model.init_weights()


def test_wrong_prefix_is_named(tmp_path):
    path = tmp_path / 'plain.pth'
    torch.save(DynamicConvNeXt(**TINY_CONVNEXT).state_dict(), path)
    model = DynamicConvNeXt(**TINY_CONVNEXT, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                                           prefix='backbone.'))
    with pytest.raises(ValueError, match="prefix 'backbone.'"):
        model.init_weights()


def test_runner_style_checkpoint_with_numpy_objects_loads(tmp_path):
    import numpy as np
    src = DynamicConvNeXt(**TINY_CONVNEXT)
    state = randomize(src)
    path = tmp_path / 'runner.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in state.items()},
                'message_hub': {'loss': np.array([1.0, 2.0])}}, path)
    model = DynamicConvNeXt(**TINY_CONVNEXT, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    report = model.init_weights()
    assert not report.missing and not report.new_modules
    assert torch.equal(model.state_dict()['stages.2.1.fast_path.1.weight'],
                       state['stages.2.1.fast_path.1.weight'])
