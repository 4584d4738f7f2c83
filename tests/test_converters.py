"""Checkpoint converters: every supported layout converts to mmdvit's classifier / backbone keys
with nothing missing or unexpected, converting twice changes nothing, and the converted model
computes what the source model computes (authors' releases against independent reference
forwards; timm, mmpretrain, mmseg, mmdet against their own implementations)."""
import importlib.util
from pathlib import Path
from typing import Dict, Optional

import pytest
import torch
from authors_reference import (convnext_layout, convnext_logits, deit_layout, deit_logits,
                               random_checkpoint, read_layout, swin_layout, swin_logits)
from helpers import randomize
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from torch import Tensor, nn

from mmdvit.models import DynamicConvNeXt, DynamicSwinTransformer, DynamicViT
from mmdvit.models.checkpoint.classifier import convert_classifier_checkpoint
from mmdvit.sparse import record_decisions

ROOT = Path(__file__).resolve().parents[1]
# Official Swin / mmpretrain / timm do not shift a window-sized map (stage 4 at 224):
# mmdvit's Swin classifies at 224 like them with mmpretrain's ``pad_small_map=False``.
SWIN_CLS = dict(pad_small_map=False)


def converter_tool():
    spec = importlib.util.spec_from_file_location(
        'dynamicvit2mmdvit', ROOT / 'tools/model_converters/dynamicvit2mmdvit.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def classifier(family: str, backbone: dict, width: int) -> nn.Module:
    """An mmpretrain ImageClassifier as the classification configs build it; ``width`` is the
    backbone's output channels."""
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    head = dict(type='VisionTransformerClsHead' if family == 'vit' else 'LinearClsHead',
                num_classes=1000, in_channels=width)
    neck = dict(type='GlobalAveragePooling') if family == 'swin' else None
    return MODELS.build(ConfigDict(type='ImageClassifier', backbone=backbone, neck=neck,
                                   head=head)).eval()


def convert_file(tmp_path: Path, state: Dict[str, Tensor], wrap: Optional[str] = 'model'):
    """Save ``state`` as a source checkpoint, run the converter tool, return (result, dst)."""
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.pth'
    torch.save({wrap: state} if wrap else state, src)
    result = converter_tool().main([str(src), str(dst)])
    saved = torch.load(dst, weights_only=True)
    assert saved['state_dict'].keys() == result.state.keys()
    return result, dst


def assert_exact_keys(model: nn.Module, state: Dict[str, Tensor]) -> None:
    own = model.state_dict()
    assert sorted(set(own) - set(state)) == [] and sorted(set(state) - set(own)) == []
    assert all(own[k].shape == v.shape for k, v in state.items())


def assert_idempotent(state: Dict[str, Tensor]) -> None:
    again = convert_classifier_checkpoint(state)
    assert again.state.keys() == state.keys() and not again.unmapped
    assert all(torch.equal(again.state[k], v) for k, v in state.items())


# --------------------------------------------------------------------------- authors' layouts
@pytest.mark.parametrize('name, generated', [
    ('dynamicswin_t', swin_layout(96, (2, 2, 6, 2), (3, 6, 12, 24), (1, 2, 3))),
    ('dynamiccnn_t', convnext_layout((96, 192, 384, 768), (3, 3, 9, 3), (1, 2, 3))),
    ('dynamicvit_deit_s', deit_layout(384, 12, (3, 6, 9))),
])
def test_layout_generator_reproduces_the_released_layouts(name, generated):
    assert list(read_layout(name).items()) == list(generated.items())


# Keep ratios as the authors' code computes them (rho - 0.2 = 0.49999999999999994 keeps 97).
HIER = (0.7, 0.7 - 0.2, 0.7 - 0.4)
AUTHORS = {
    'dynamicswin_t': ('swin', dict(type='mmdvit.DynamicSwinTransformer', out_indices=(3, ),
                                   keep_ratios=HIER, **SWIN_CLS),
                      lambda sd, x: swin_logits(sd, x, (2, 2, 6, 2), (3, 6, 12, 24), HIER,
                                                (1, 2, 3))),
    'dynamiccnn_t': ('convnext', dict(type='mmdvit.DynamicConvNeXt', arch='tiny', keep_ratios=HIER),
                     lambda sd, x: convnext_logits(sd, x, (3, 3, 9, 3), HIER, (1, 2, 3))),
    'dynamicvit_deit_s': ('vit', dict(type='mmdvit.DynamicViT', arch='deit-small',
                                      keep_ratios=(0.7, 0.7**2, 0.7**3)),
                          lambda sd, x: deit_logits(sd, x, 6, (0.7, 0.7**2, 0.7**3), (3, 6, 9))),
}


@pytest.mark.parametrize('name', ['dynamicswin_t', 'dynamiccnn_t', 'dynamicvit_deit_s'])
def test_authors_release_converts_and_gives_their_logits(tmp_path, name):
    family, backbone, reference = AUTHORS[name]
    source = random_checkpoint(read_layout(name))
    result, dst = convert_file(tmp_path, source, wrap='model')
    assert (result.family, result.unmapped) == (family, [])
    assert len(result.recomputed) == (5 if family == 'swin' else 0)  # Swin attn_mask buffers
    model = classifier(family, dict(backbone, init_cfg=None), 384 if family == 'vit' else 768)
    assert_exact_keys(model, result.state)
    assert_idempotent(result.state)
    model.load_state_dict(result.state)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        with record_decisions() as decisions:
            logits = model(x, mode='tensor')
        expected = reference(source, x)
    assert logits.shape == (1, 1000)
    torch.testing.assert_close(logits, expected, rtol=0, atol=2e-4)
    # The kept counts are the published ones (all predictors ran).
    kept = [d.num_keep for d in decisions]
    assert kept == {'swin': [137, 97, 58], 'convnext': [137, 97, 58],
                    'vit': [137, 96, 67]}[family]


TINY_AUTHORS = {
    'swin': (swin_layout(32, (2, 2, 6, 2), (1, 2, 4, 8), (1, 2, 3)),
             lambda **kw: DynamicSwinTransformer(embed_dims=32, num_heads=(1, 2, 4, 8), **kw)),
    'convnext': (convnext_layout((16, 32, 64, 128), (1, 1, 9, 1), (1, 2, 3)),
                 lambda **kw: DynamicConvNeXt(arch=dict(depths=[1, 1, 9, 1],
                                                        channels=[16, 32, 64, 128]),
                                              pruning_locs=(1, 2, 3), out_indices=(0, 1, 2, 3),
                                              gap_before_final_norm=False, **kw)),
    'vit': (deit_layout(64, 12, (3, 6, 9)),
            lambda **kw: DynamicViT(arch=dict(embed_dims=64, num_layers=12, num_heads=2), **kw)),
}


@pytest.mark.parametrize('family', ['swin', 'convnext', 'vit'])
def test_converted_backbone_initialises_dense_task_backbones(tmp_path, family):
    """The backbone part of a converted authors' release loads through init_cfg
    (prefix='backbone.') into the backbone that mmseg / mmdet configs build: every tensor
    including the sparsity modules; only the output norms of stages 0-2 (which the classifier
    never had) are missing."""
    layout, build = TINY_AUTHORS[family]
    result, dst = convert_file(tmp_path, random_checkpoint(layout))
    model = build(init_cfg=dict(type='Pretrained', checkpoint=str(dst), prefix='backbone.'))
    report = model.init_weights()
    assert report.new_modules == [] and report.unexpected == []
    expected = [] if family == 'vit' else ['norm0', 'norm1', 'norm2']
    assert sorted({k.split('.')[0] for k in report.missing}) == expected
    for key, value in model.state_dict().items():
        if 'backbone.' + key in result.state:
            assert torch.equal(value, result.state['backbone.' + key]), key


@pytest.mark.parametrize('family, layout, backbone, width', [
    ('swin', swin_layout(96, (2, 2, 18, 2), (3, 6, 12, 24), (2, 4, 6)),
     dict(type='mmdvit.DynamicSwinTransformer', depths=(2, 2, 18, 2), out_indices=(3, )), 768),
    ('swin', swin_layout(128, (2, 2, 18, 2), (4, 8, 16, 32), (2, 4, 6)),
     dict(type='mmdvit.DynamicSwinTransformer', embed_dims=128, depths=(2, 2, 18, 2),
          num_heads=(4, 8, 16, 32), out_indices=(3, )), 1024),
    ('convnext', convnext_layout((96, 192, 384, 768), (3, 3, 27, 3), (3, 6, 9)),
     dict(type='mmdvit.DynamicConvNeXt', arch='small'), 768),
    ('convnext', convnext_layout((128, 256, 512, 1024), (3, 3, 27, 3), (3, 6, 9)),
     dict(type='mmdvit.DynamicConvNeXt', arch='base'), 1024),
    ('vit', deit_layout(768, 12, (3, 6, 9)), dict(type='mmdvit.DynamicViT', arch='deit-base'),
     768),
    ('vit', deit_layout(256, 12, (3, 6, 9)), dict(type='mmdvit.DynamicViT', arch='deit-256'),
     256),
], ids=['swin-s', 'swin-b', 'cnn-s', 'cnn-b', 'deit-b', 'deit-256'])
def test_authors_small_and_base_layouts_fit_the_zoo_models(family, layout, backbone, width):
    """Key sets and shapes only (meta tensors): the S / B releases follow the T / S pattern with
    the published predictor placements."""
    state = {k: torch.empty(s, device='meta') for k, s in layout.items()}
    result = convert_classifier_checkpoint(state)
    assert result.unmapped == [] and result.family == family
    with torch.device('meta'):
        model = classifier(family, dict(backbone, init_cfg=None), width)
    assert_exact_keys(model, result.state)


# --------------------------------------------------------------------------- official layouts
def official(layout: Dict[str, tuple]) -> Dict[str, tuple]:
    """The dense official release of the same model: the authors' layout without predictors
    and fast paths (Microsoft Swin, Meta ConvNeXt, Meta DeiT)."""
    return {k: s for k, s in layout.items()
            if 'score_predictor' not in k and 'fastmlp' not in k and 'fast_path' not in k}


def test_official_swin_dense_equals_reference(tmp_path):
    layout = official(swin_layout(32, (2, 2, 6, 2), (1, 2, 4, 8), (1, 2, 3)))
    source = random_checkpoint(layout)
    result, _ = convert_file(tmp_path, source, wrap='model')
    assert (result.layout, result.unmapped) == ('official', [])
    model = classifier('swin', dict(type='mmdvit.DynamicSwinTransformer', embed_dims=32,
                                    num_heads=(1, 2, 4, 8), out_indices=(3, ),
                                    keep_ratios=(1.0, 1.0, 1.0), **SWIN_CLS), 256)
    missing, unexpected = model.load_state_dict(result.state, strict=False)
    assert unexpected == [] and all('score_predictors' in k or 'fast_path' in k for k in missing)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x, mode='tensor'),
                                   swin_logits(source, x, (2, 2, 6, 2), (1, 2, 4, 8), None, ()),
                                   rtol=0, atol=1e-4)


def test_official_convnext_dense_equals_reference(tmp_path):
    layout = official(convnext_layout((16, 32, 64, 128), (1, 1, 9, 1), (1, 2, 3)))
    source = random_checkpoint(layout)
    result, _ = convert_file(tmp_path, source, wrap='model')
    assert (result.layout, result.unmapped) == ('official', [])
    arch = dict(depths=[1, 1, 9, 1], channels=[16, 32, 64, 128])
    model = classifier('convnext', dict(type='mmdvit.DynamicConvNeXt', arch=arch,
                                        keep_ratios=(1.0, 1.0, 1.0), pruning_locs=(1, 2, 3)),
                       128)
    missing, unexpected = model.load_state_dict(result.state, strict=False)
    assert unexpected == [] and all('score_predictors' in k or 'fast_path' in k for k in missing)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x, mode='tensor'),
                                   convnext_logits(source, x, (1, 1, 9, 1), None, ()),
                                   rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- timm
TIMM = {
    'swin': ('swin_tiny_patch4_window7_224', dict(embed_dim=32, num_heads=(1, 2, 4, 8)),
             dict(type='mmdvit.DynamicSwinTransformer', embed_dims=32, num_heads=(1, 2, 4, 8),
                  out_indices=(3, ), keep_ratios=(1.0, 1.0, 1.0), **SWIN_CLS), 224, 256),
    'convnext': ('convnext_tiny', dict(dims=(16, 32, 64, 128), depths=(1, 1, 9, 1)),
                 dict(type='mmdvit.DynamicConvNeXt',
                      arch=dict(depths=[1, 1, 9, 1], channels=[16, 32, 64, 128]),
                      keep_ratios=(1.0, 1.0, 1.0), pruning_locs=(1, 2, 3)), 96, 128),
    'vit': ('deit_small_patch16_224', dict(embed_dim=64, num_heads=2),
            dict(type='mmdvit.DynamicViT', arch=dict(embed_dims=64, num_layers=12, num_heads=2),
                 keep_ratios=(1.0, 1.0, 1.0)), 224, 64),
}


@pytest.mark.parametrize('family', ['swin', 'convnext', 'vit'])
def test_timm_checkpoint_gives_timm_logits(tmp_path, family):
    import timm
    name, kwargs, backbone, size, width = TIMM[family]
    ref = timm.create_model(name, pretrained=False, **kwargs).eval()
    result, _ = convert_file(tmp_path, randomize(ref, std=0.05), wrap=None)
    assert (result.layout, result.unmapped) == ('timm', [])
    model = classifier(family, backbone, width)
    missing, unexpected = model.load_state_dict(result.state, strict=False)
    assert unexpected == []
    assert all('score_predictors' in k or 'fast_path' in k or k.endswith(
        'relative_position_index') for k in missing)
    assert_idempotent(result.state)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x, mode='tensor'), ref(x), rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- mmpretrain
MMPRETRAIN = {
    'swin': (dict(type='SwinTransformer', arch=dict(embed_dims=32, depths=(2, 2, 6, 2),
                                                    num_heads=(1, 2, 4, 8)), img_size=224),
             dict(type='mmdvit.DynamicSwinTransformer', embed_dims=32, num_heads=(1, 2, 4, 8),
                  out_indices=(3, ), keep_ratios=(1.0, 1.0, 1.0), **SWIN_CLS), 256, 256),
    'convnext': (dict(type='ConvNeXt', arch=dict(depths=[1, 1, 9, 1],
                                                 channels=[16, 32, 64, 128])),
                 dict(type='mmdvit.DynamicConvNeXt',
                      arch=dict(depths=[1, 1, 9, 1], channels=[16, 32, 64, 128]),
                      keep_ratios=(1.0, 1.0, 1.0), pruning_locs=(1, 2, 3)), 128, 128),
    'vit': (dict(type='VisionTransformer', arch=dict(embed_dims=64, num_layers=4, num_heads=2,
                                                     feedforward_channels=256),
                 img_size=224, patch_size=16, drop_rate=0.0),
            dict(type='mmdvit.DynamicViT', arch=dict(embed_dims=64, num_layers=4, num_heads=2),
                 pruning_locs=(1, 2, 3), keep_ratios=(1.0, 1.0, 1.0)), 224, 64),
}


@pytest.mark.parametrize('family', ['swin', 'convnext', 'vit'])
def test_mmpretrain_classifier_checkpoint_gives_its_logits(tmp_path, family):
    source_backbone, backbone, size, width = MMPRETRAIN[family]
    ref = classifier(family, source_backbone, width)
    randomize(ref, std=0.05)
    result, _ = convert_file(tmp_path, ref.state_dict(), wrap='state_dict')
    assert result.unmapped == []
    model = classifier(family, backbone, width)
    missing, unexpected = model.load_state_dict(result.state, strict=False)
    assert unexpected == [] and all('score_predictors' in k or 'fast_path' in k for k in missing)
    assert_idempotent(result.state)
    for side in (size, size + 64):  # another size: position embeddings are interpolated
        x = torch.randn(1, 3, side, side)
        with torch.no_grad():
            torch.testing.assert_close(model(x, mode='tensor'), ref(x, mode='tensor'), rtol=0,
                                       atol=1e-4)


def test_vit_checkpoint_of_another_resolution_is_resized_like_mmpretrain(tmp_path):
    """A 224 checkpoint loaded into a 384 model: pos_embed resized as mmpretrain does."""
    from mmpretrain.models.utils import resize_pos_embed
    source = random_checkpoint(deit_layout(64, 2, ()))
    path = tmp_path / 'deit.pth'
    torch.save({'model': source}, path)
    model = DynamicViT(arch=dict(embed_dims=64, num_layers=2, num_heads=2), img_size=384,
                       pruning_locs=(), keep_ratios=(),
                       init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    report = model.init_weights()
    assert report.missing == [] and report.unexpected == []
    expected = resize_pos_embed(source['pos_embed'], (14, 14), (24, 24), 'bicubic', 1)
    torch.testing.assert_close(model.pos_embed.data, expected)


# --------------------------------------------------------------------------- mmseg / mmdet
@pytest.mark.parametrize('scope', ['mmseg', 'mmdet'])
def test_segmentor_and_detector_checkpoints_initialise_the_backbone(tmp_path, scope):
    """A whole mmseg / mmdet model checkpoint: the backbone loads (init_cfg, prefix
    'backbone.') and computes what their Swin computes; decode heads / necks are reported as
    unmapped by the converter."""
    if scope == 'mmseg':
        from mmseg.models.backbones import SwinTransformer
    else:
        from mmdet.models.backbones import SwinTransformer
    args = dict(embed_dims=32, num_heads=(1, 2, 4, 8), depths=(2, 2, 2, 2))
    ref = SwinTransformer(**args)
    ref.eval()  # (their train() returns None)
    state = {f'backbone.{k}': v for k, v in randomize(ref, std=0.05).items()}
    state['decode_head.conv_seg.weight' if scope == 'mmseg' else 'neck.lateral_convs.0.conv.'
          'weight'] = torch.randn(4, 4, 1, 1)
    result, dst = convert_file(tmp_path, state, wrap='state_dict')
    assert result.layout == 'mmseg' and len(result.unmapped) == 1
    ours = DynamicSwinTransformer(**args, sparse_stages=(),
                                  init_cfg=dict(type='Pretrained', checkpoint=str(dst),
                                                prefix='backbone.'))
    report = ours.init_weights()
    assert report.missing == [] and report.unexpected == []
    ours.eval()
    x = torch.randn(1, 3, 112, 137)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_converter_rejects_what_it_cannot_map(tmp_path):
    with pytest.raises(ValueError, match='model family'):
        convert_classifier_checkpoint({'fc.weight': torch.zeros(2, 2)})
    with pytest.raises(ValueError, match='distilled DeiT'):
        convert_classifier_checkpoint({'cls_token': torch.zeros(1, 1, 4),
                                       'dist_token': torch.zeros(1, 1, 4),
                                       'blocks.0.norm1.weight': torch.zeros(4)})


def test_converter_reports_new_sparsity_modules_apart_from_missing_keys(tmp_path, capsys):
    # A dense Microsoft Swin-T holds no predictors or fast paths: they are new, not missing.
    source = random_checkpoint(official(swin_layout(96, (2, 2, 6, 2), (3, 6, 12, 24),
                                                    (1, 2, 3))))
    src, dst = tmp_path / 'swin_tiny_patch4_window7_224.pth', tmp_path / 'dst.pth'
    torch.save({'model': source}, src)
    converter_tool().main([str(src), str(dst), '--config',
                           str(ROOT / 'configs/imagenet_dvit_swin.py')])
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith('new sparsity modules, initialised by the model ('))
    count = int(lines[start].split('(')[-1].split(')')[0])
    new = lines[start + 1:start + 1 + count]
    assert count > 0 and all(line.startswith('    backbone.') for line in new)
    assert all('score_predictors' in line or 'fast_path' in line for line in new)
    assert 'model keys missing from the checkpoint (0): none' in lines
    assert 'unmapped source keys (0): none' in lines
