"""At keep ratio 1.0 (and with sparsification disabled) the dynamic backbones equal the
upstream dense implementations loaded with the same weights."""
import pytest
import torch

from helpers import randomize
from mmdvit.models import DynamicConvNeXt, DynamicSwinTransformer
from mmdvit.models.checkpoint import convert_convnext_checkpoint, convert_swin_checkpoint
from mmdvit.sparse import record_decisions

SIZES = [(224, 224), (512, 512), (511, 511), (112, 137)]
SPARSITY = {'ratio_one': dict(keep_ratios=(1.0, 1.0, 1.0)), 'disabled': dict(sparse_stages=())}


@pytest.fixture(scope='module')
def mmseg_swin():
    from mmseg.models.backbones import SwinTransformer
    torch.manual_seed(0)
    model = SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                            window_size=7, drop_path_rate=0.0)
    return model, randomize(model)


@pytest.fixture(scope='module')
def mmpretrain_convnext():
    from mmpretrain.models.backbones import ConvNeXt
    torch.manual_seed(0)
    model = ConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False)
    return model, randomize(model)


def assert_same(outs, refs):
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs):
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('sparsity', SPARSITY)
def test_swin_equals_mmseg_swin(mmseg_swin, sparsity):
    ref, state = mmseg_swin
    ours = DynamicSwinTransformer(drop_path_rate=0.0, **SPARSITY[sparsity])
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert all('score_predictors' in k or 'fast_path' in k for k in missing)
    assert not unexpected
    ref.eval(), ours.eval()
    with torch.no_grad():
        for size in SIZES:
            x = torch.randn(1, 3, *size)
            assert_same(ours(x), ref(x))


@pytest.mark.parametrize('sparsity', SPARSITY)
def test_convnext_equals_mmpretrain_convnext(mmpretrain_convnext, sparsity):
    ref, state = mmpretrain_convnext
    ours = DynamicConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False,
                           **SPARSITY[sparsity])
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert all('score_predictors' in k or 'fast_path' in k for k in missing)
    assert not unexpected
    ref.eval(), ours.eval()
    with torch.no_grad():
        for size in SIZES:
            x = torch.randn(1, 3, *size)
            assert_same(ours(x), ref(x))


@pytest.mark.parametrize('name', ['swin', 'convnext'])
def test_training_mode_at_ratio_one_equals_the_upstream_backbone(mmseg_swin, mmpretrain_convnext,
                                                                 name):
    """In train mode (no dropout, no drop path) ratio 1.0 is still the upstream backbone: the
    predictors are skipped (no Gumbel draw) and every position takes the slow path."""
    ref, state = mmseg_swin if name == 'swin' else mmpretrain_convnext
    if name == 'swin':
        ours = DynamicSwinTransformer(drop_path_rate=0.0, **SPARSITY['ratio_one'])
    else:
        ours = DynamicConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3),
                               gap_before_final_norm=False, **SPARSITY['ratio_one'])
    ours.load_state_dict(state, strict=False)
    ref.train(), ours.train()
    try:
        with torch.no_grad():
            for size in (SIZES[0], SIZES[3]):
                x = torch.randn(2, 3, *size)
                with record_decisions() as decisions:
                    assert_same(ours(x), ref(x))
                assert len(decisions) == 3
                assert all(d.log_probs is None and bool(d.keep_mask.eq(1).all())
                           and d.num_keep == d.keep_mask.shape[1] for d in decisions)
    finally:
        ref.eval()  # the module-scoped reference stays in eval mode for the other tests


@pytest.mark.parametrize('size', [(224, 224), (448, 448)])
def test_swin_equals_timm_swin_tiny(size):
    """timm rolls before padding where mmseg pads before rolling, so the two agree only where
    every stage's map is a multiple of the window (224, 448); mmdvit follows mmseg."""
    import timm
    ref = timm.create_model('swin_tiny_patch4_window7_224', pretrained=False,
                            always_partition=True, strict_img_size=False).eval()
    state, layout, dropped = convert_swin_checkpoint(randomize(ref))
    assert layout == 'timm' and set(dropped) == {'head.fc.weight', 'head.fc.bias'}
    ours = DynamicSwinTransformer(keep_ratios=(1.0, 1.0, 1.0), out_indices=(3, )).eval()
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected
    assert all(k.endswith('relative_position_index') or 'score_predictors' in k
               or 'fast_path' in k for k in missing)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert_same(ours(x), (ref.forward_features(x).permute(0, 3, 1, 2), ))


@pytest.mark.parametrize('size', [(224, 224), (511, 511), (112, 137)])
def test_convnext_equals_timm_convnext_tiny(size):
    import timm
    ref = timm.create_model('convnext_tiny', pretrained=False).eval()
    state, layout, dropped = convert_convnext_checkpoint(randomize(ref))
    assert layout == 'timm' and set(dropped) == {'head.fc.weight', 'head.fc.bias'}
    ours = DynamicConvNeXt(arch='tiny', keep_ratios=(1.0, 1.0, 1.0), out_indices=(3, )).eval()
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected
    assert all('score_predictors' in k or 'fast_path' in k for k in missing)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert_same(ours(x), (ref.forward_head(ref.forward_features(x), pre_logits=True), ))


def test_swin_without_small_map_padding_equals_timm_default_at_224():
    """Official / timm classification semantics: stage 4 at 224 (7x7 = one window) unshifted."""
    import timm
    ref = timm.create_model('swin_tiny_patch4_window7_224', pretrained=False).eval()
    state, _, _ = convert_swin_checkpoint(randomize(ref))
    ours = DynamicSwinTransformer(keep_ratios=(1.0, 1.0, 1.0), out_indices=(3, ),
                                  pad_small_map=False).eval()
    ours.load_state_dict(state, strict=False)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_same(ours(x), (ref.forward_features(x).permute(0, 3, 1, 2), ))
        padded = DynamicSwinTransformer(keep_ratios=(1.0, 1.0, 1.0), out_indices=(3, )).eval()
        padded.load_state_dict(state, strict=False)
        assert (padded(x)[0] - ours(x)[0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match='pad_small_map=True'):
        ours(torch.randn(1, 3, 160, 160))


@pytest.mark.parametrize('shifted', [False, True])
def test_window_attention_equals_mmseg(shifted):
    """(Shifted) window attention equals mmseg's with the same weights, for two images of 2x3
    windows and the shifted-window mask mmseg builds itself."""
    from mmseg.models.backbones.swin import ShiftWindowMSA as MMSegShiftWindowMSA

    from mmdvit.models.backbones.swin_layers import ShiftWindowMSA
    torch.manual_seed(0)
    shift = 3 if shifted else 0
    ours = ShiftWindowMSA(64, 4, 7, shift).eval()
    ref = MMSegShiftWindowMSA(64, 4, 7, shift_size=shift).eval()
    torch.nn.init.normal_(ours.w_msa.relative_position_bias_table)
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all('relative_position_index' in k for k in missing)
    x = torch.randn(2, 14 * 21, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, (14, 21)), ref(x, (14, 21)), rtol=1e-5, atol=1e-5)
