"""ImageNet classification: the configs build and give (B, 1000) logits, the published optimiser
settings reach the right parameters, the freeze hook, the demo data, and end-to-end training and
evaluation with tools/train.py and tools/test.py from converted pretrained weights."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from authors_reference import convnext_layout, random_checkpoint, read_layout, swin_layout
from mmengine.config import Config
from mmengine.registry import init_default_scope
from test_converters import converter_tool

from mmdvit.datasets.demo_imagenet import IMAGENET_DEMO_CLASSES, make_imagenet_demo
from mmdvit.sparse import record_decisions

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    'swin': ROOT / 'configs/imagenet_dvit_swin.py',
    'convnext': ROOT / 'configs/imagenet_dvit_convnext.py',
    'deit': ROOT / 'configs/imagenet_dvit_deit.py',
}
ZOO = sorted((ROOT / 'configs/imagenet').glob('*.py'))


def build_model(cfg: Config, device: str = 'cpu'):
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    from mmpretrain.registry import MODELS
    with torch.device(device):
        return MODELS.build(cfg.model)


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize('family', list(CONFIGS))
def test_config_gives_imagenet_logits_in_tensor_mode(family):
    cfg = Config.fromfile(CONFIGS[family])
    model = build_model(cfg).eval()  # no init_weights: the pretrained files are not needed
    assert type(model).__name__ == 'SparsityTrainer'
    assert model.teacher is None and model.teacher_cfg['checkpoint'] == cfg.pretrained
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad(), record_decisions() as decisions:
        logits = model(x, mode='tensor')
    assert logits.shape == (2, 1000)
    kept = [d.num_keep for d in decisions]
    assert kept == {'swin': [137, 97, 58], 'convnext': [137, 97, 58],
                    'deit': [137, 96, 67]}[family]


EXPECTED_ZOO = {
    'dynamic-swin-small-r0.7': ('DynamicSwinTransformer', (0.7, 0.5, 0.3), 10.0),
    'dynamic-swin-base-r0.7': ('DynamicSwinTransformer', (0.7, 0.5, 0.3), 10.0),
    'dynamic-convnext-tiny-r0.9': ('DynamicConvNeXt', (0.9, 0.7, 0.5), 10.0),
    'dynamic-convnext-small-r0.7': ('DynamicConvNeXt', (0.7, 0.5, 0.3), 10.0),
    'dynamic-convnext-small-r0.9': ('DynamicConvNeXt', (0.9, 0.7, 0.5), 10.0),
    'dynamic-convnext-base-r0.7': ('DynamicConvNeXt', (0.7, 0.5, 0.3), 10.0),
    'dynamic-convnext-base-r0.9': ('DynamicConvNeXt', (0.9, 0.7, 0.5), 10.0),
    'dynamic-deit-base-r0.7': ('DynamicViT', (0.7, 0.49, 0.343), 5.0),
    'dynamic-deit-256-r0.7': ('DynamicViT', (0.7, 0.49, 0.343), 2.0),
    'dynamic-lvvit-small-r0.5': ('DynamicLVViT', (0.5, 0.25, 0.125), 2.0),
    'dynamic-lvvit-small-r0.7': ('DynamicLVViT', (0.7, 0.49, 0.343), 2.0),
    'dynamic-lvvit-medium-r0.7': ('DynamicLVViT', (0.7, 0.49, 0.343), 2.0),
}
VIT_HEADS = {'DynamicViT': 'head.layers.head', 'DynamicLVViT': 'head.head'}


def test_zoo_is_complete():
    assert sorted(p.name.split('_')[0] for p in ZOO) == sorted(EXPECTED_ZOO)


@pytest.mark.parametrize('path', ZOO, ids=[p.stem for p in ZOO])
def test_zoo_config_builds_with_the_published_settings(path):
    cfg = Config.fromfile(path)
    backbone_type, ratios, ratio_weight = EXPECTED_ZOO[path.name.split('_')[0]]
    model = build_model(cfg, device='meta')
    assert type(model.backbone).__name__ == backbone_type
    assert model.backbone.keep_ratios == pytest.approx(list(ratios))
    assert model.ratio_loss_weight == ratio_weight
    assert (model.feature_distill_weight, model.logit_distill_weight) == (0.5, 0.5)
    head = model.get_submodule(VIT_HEADS.get(backbone_type, 'head.fc'))
    assert head.out_features == 1000
    assert head.in_features == model.backbone.state_dict()[
        'norm.weight' if backbone_type in VIT_HEADS else 'norm3.weight'].shape[0]
    epochs = 30 if backbone_type in VIT_HEADS else 120
    assert cfg.train_cfg.max_epochs == epochs
    # The authors' recipe (tests/test_imagenet_recipe.py checks it against their script): the
    # pretrained weights frozen for 5 epochs, EMA with decay 0.9999 per step.
    assert cfg.custom_hooks == [
        dict(type='mmdvit.FreezePretrainedHook', epochs=5),
        dict(type='EMAHook', momentum=1e-4, update_buffers=True, priority='ABOVE_NORMAL')]
    assert 'clip_grad' not in cfg.optim_wrapper


@pytest.mark.parametrize('family', list(CONFIGS))
def test_optimizer_gives_new_modules_the_full_rate(family):
    """AdamW, weight decay 0.05; predictors / fast paths at lr, pretrained weights at 0.2 lr
    (0.01 lr for DeiT), no norm, bias or other 1-D parameter with weight decay (new modules
    included), DeiT's cls_token / pos_embed at lr 0 (the authors do not train them)."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(ROOT / f'configs/demo/imagenet_dvit_{family}_demo.py')
    model = build_model(cfg)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    assert type(optimizer).__name__ == 'AdamW'
    scale = 0.01 if family == 'deit' else 0.2
    full = cfg.lr
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for group in optimizer.param_groups:
        for param in group['params']:
            name = names[id(param)]
            seen.add(name)
            new = 'score_predictors' in name or 'fast_path' in name
            if name.endswith(('cls_token', 'pos_embed')):
                assert (group['lr'], group['weight_decay']) == (0.0, 0.0), name
                continue
            assert group['lr'] == pytest.approx(full if new else full * scale), name
            assert group['weight_decay'] == (0.0 if param.ndim == 1 else 0.05), name
    assert seen == set(names.values())


# --------------------------------------------------------------------------- freeze hook
def test_freeze_hook_trains_only_new_modules_then_everything():
    from mmdvit.engine.hooks import FreezePretrainedHook
    cfg = Config.fromfile(ROOT / 'configs/demo/imagenet_dvit_convnext_demo.py')
    model = build_model(cfg)
    model.backbone.stages[0][0].depthwise_conv.weight.requires_grad = False  # frozen elsewhere
    hook = FreezePretrainedHook(epochs=1)
    runner = SimpleNamespace(model=model, epoch=0, iter=0)
    hook.before_train_iter(runner, 0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all('score_predictors' in n or 'fast_path' in n for n in trainable)
    assert any('fast_path' in n for n in trainable)
    runner.epoch, runner.iter = 1, 5
    hook.before_train_iter(runner, 0)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {'backbone.stages.0.0.depthwise_conv.weight'}
    with pytest.raises(ValueError, match='exactly one'):
        FreezePretrainedHook(epochs=1, iters=5)
    with pytest.raises(ValueError, match='every trainable parameter'):
        FreezePretrainedHook(iters=1, trainable=('nothing', )).before_train_iter(
            SimpleNamespace(model=model, epoch=0, iter=0), 0)


# --------------------------------------------------------------------------- demo data
def _digest(root: Path) -> str:
    files = sorted(p for p in root.rglob('*') if p.is_file())
    return hashlib.sha256(b''.join(p.relative_to(root).as_posix().encode() + p.read_bytes()
                                   for p in files)).hexdigest()


def test_demo_imagenet_is_deterministic_and_in_the_folder_layout(tmp_path):
    counts = make_imagenet_demo(str(tmp_path / 'a'), num_train=2, num_val=1, seed=3)
    make_imagenet_demo(str(tmp_path / 'b'), num_train=2, num_val=1, seed=3)
    assert counts == {'train': 10, 'val': 5}
    assert _digest(tmp_path / 'a') == _digest(tmp_path / 'b')
    init_default_scope('mmpretrain')
    from mmpretrain.datasets import ImageNet
    for split, num in counts.items():
        dataset = ImageNet(data_root=str(tmp_path / 'a'), split=split,
                           metainfo=dict(classes=IMAGENET_DEMO_CLASSES))
        assert len(dataset) == num
        assert sorted({dataset.get_data_info(i)['gt_label'] for i in range(num)}) == list(range(5))


# --------------------------------------------------------------------------- end to end
def run_tool(tool: str, *args: str) -> str:
    """Run tools/<tool>.py in a fresh interpreter; returns its output (fails on error)."""
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / f'{tool}.py'), *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_NUM_THREADS='2'))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def pretrained_source(family: str, path: Path) -> None:
    """A source checkpoint of the demo widths in a release layout: timm's ViT for DeiT, the
    authors' DynamicSwin / DynamicCNN layouts (with predictors and fast paths) otherwise."""
    if family == 'deit':
        import timm
        model = timm.models.VisionTransformer(img_size=64, patch_size=16, embed_dim=64, depth=4,
                                              num_heads=2, num_classes=5)
        torch.save(model.state_dict(), path)
        return
    layout = (swin_layout(32, (1, 1, 3, 1), (1, 2, 4, 8), (0, 1, 2), window=2, img=64)
              if family == 'swin' else convnext_layout((16, 32, 64, 128), (1, 1, 3, 1),
                                                       (0, 1, 2)))
    layout.update({'head.weight': (5, layout['head.weight'][1]), 'head.bias': (5, )})
    torch.save({'model': random_checkpoint(layout, window=2)}, path)


@pytest.mark.slow
@pytest.mark.parametrize('family', ['swin', 'convnext', 'deit'])
def test_demo_trains_with_every_loss_term_and_evaluates(tmp_path, family):
    """Convert a release-layout checkpoint, train 2 short epochs from it (pretrained weights
    frozen in the first) against the dense teacher built from it; evaluate top-1 with
    tools/test.py (DeiT; the ConvNeXt ImageNet config is evaluated below)."""
    data = tmp_path / 'imagenet'
    make_imagenet_demo(str(data))
    source, pretrained = tmp_path / 'source.pth', tmp_path / 'pretrained.pth'
    pretrained_source(family, source)
    converter_tool().main([str(source), str(pretrained)])
    config = tmp_path / f'{family}.py'
    init = dict(_delete_=True, type='Pretrained', checkpoint=str(pretrained))
    config.write_text('\n'.join([
        f"_base_ = '{ROOT / f'configs/demo/imagenet_dvit_{family}_demo.py'}'",
        f'model = dict(student=dict(backbone=dict(init_cfg={dict(init, prefix="backbone.")!r}),',
        f'                          head=dict(init_cfg={dict(init, prefix="head.")!r})),',
        f'             teacher=dict(checkpoint={str(pretrained)!r}))',
        f"train_dataloader = dict(dataset=dict(data_root={str(data)!r}))",
        f"val_dataloader = dict(dataset=dict(data_root={str(data)!r}))",
        f"test_dataloader = dict(dataset=dict(data_root={str(data)!r}))",
    ]))
    work = tmp_path / 'work'
    log = run_tool('train', str(config), '--work-dir', str(work))
    assert 'pretrained parameter tensors frozen (epoch 0' in log
    assert 'trainable again (epoch 1' in log
    assert 'teacher has no checkpoint' not in log
    scalars = next(work.glob('*/vis_data/scalars.json')).read_text().splitlines()
    train = [json.loads(line) for line in scalars if '"loss_keep_ratio"' in line]
    assert len(train) == 10  # 2 epochs of 5 iterations, logged every iteration
    for record in train:
        for key in ('loss', 'loss_keep_ratio', 'loss_feat_distill', 'loss_logit_distill',
                    'kept.0', 'kept.1', 'kept.2'):
            assert torch.isfinite(torch.tensor(record[key])), key
        assert record['loss_feat_distill'] > 0
    if family != 'deit':  # evaluation through tools/test.py once is enough for the budget
        return
    metrics = run_tool('test', str(config), str(work / 'epoch_2.pth'),
                       '--work-dir', str(tmp_path / 'test'))
    line = next(ln for ln in metrics.splitlines() if ln.startswith('metrics: '))
    top1 = json.loads(line[len('metrics: '):])['accuracy/top1']
    assert 0.0 <= top1 <= 100.0


@pytest.mark.slow
def test_converted_authors_release_evaluates_with_the_imagenet_config(tmp_path):
    """The issue's user path: the authors' DynamicCNN-T file -> dynamicvit2mmdvit.py ->
    tools/test.py configs/imagenet_dvit_convnext.py (real size, 1000 classes)."""
    data = tmp_path / 'imagenet'
    make_imagenet_demo(str(data), num_train=0, num_val=2)
    images = sorted((data / 'val').rglob('*.JPEG'))
    (data / 'meta').mkdir()
    (data / 'meta' / 'val.txt').write_text(''.join(
        f'{p.relative_to(data / "val").as_posix()} {i * 97}\n' for i, p in enumerate(images)))
    source, converted = tmp_path / 'dynamiccnn_t.pth', tmp_path / 'dynamiccnn_t_mmdvit.pth'
    torch.save({'model': random_checkpoint(read_layout('dynamiccnn_t'))}, source)
    converter_tool().main([str(source), str(converted)])
    metrics = run_tool('test', str(CONFIGS['convnext']), str(converted), '--work-dir',
                       str(tmp_path / 'test'), '--cfg-options',
                       f'test_dataloader.dataset.data_root={data}',
                       'test_dataloader.batch_size=5', 'test_dataloader.num_workers=0',
                       'test_dataloader.persistent_workers=False')
    line = next(ln for ln in metrics.splitlines() if ln.startswith('metrics: '))
    result = json.loads(line[len('metrics: '):])
    assert set(result) == {'accuracy/top1', 'accuracy/top5'}
    assert 0.0 <= result['accuracy/top1'] <= result['accuracy/top5'] <= 100.0
