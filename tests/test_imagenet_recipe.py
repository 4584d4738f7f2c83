"""Every ImageNet config trains with the authors' recipe: raoyongming/DynamicViT (commit 1322e62)
``main.py`` argument defaults, ``optim_factory.py`` parameter groups, ``engine.py`` schedule
application and the README's per-model training commands. The values are read from what the
configs build (the optimizer on a meta-device model, the schedulers stepped through a training
run, the hooks), never from config text; the two demo configs added for LV-ViT and DeiT-256
train end to end with the recipe in miniature."""
import copy
import json
import math
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

from mmdvit.datasets.demo_imagenet import make_imagenet_demo

ROOT = Path(__file__).resolve().parents[1]

# The authors' settings. main.py defaults: --lr_scale 0.01 (l.189), --warmup_epochs 20 (l.89),
# --min_lr 1e-6 (l.87), --model_ema True / --model_ema_decay 0.9999 / --model_ema_eval True
# (l.62-65), --clip_grad None (l.74), --opt adamw, --opt_eps 1e-8, --opt_betas None (l.68-72),
# --weight_decay 0.05 with --weight_decay_end None, i.e. constant (l.78-80, 522-525), --drop_path
# 0 (l.54). README commands (8 GPUs x --batch_size 128, x --update_freq 4 for ConvNeXt / Swin):
# DeiT-S l.127, DeiT-B l.133 (--drop_path 0.2), LV-ViT-S l.139, LV-ViT-M l.145 (all four: --lr 1e-3
# --warmup_epochs 5 --epochs 30), ConvNeXt-T / S / B l.155 / 169 / 183 and Swin-T / S / B
# l.197 / 211 / 225 (--lr 4e-3 --lr_scale 0.2 --epochs 120, --drop_path 0.2 / 0.2 / 0.5).
# main.py builds DeiT-S (l.340-343) and LV-ViT (l.312-335) without drop_path_rate: 0 whatever the
# flag. The authors have no DeiT-256 training command (main.py builds no 'deit-256'; infer.py
# l.83 defines it): its config takes the DeiT-S recipe.
VIT = dict(lr=1e-3, batch=1024, scale=0.01, warmup=5, epochs=30, frozen_cls_pos=True)
HIER = dict(lr=4e-3, batch=4096, scale=0.2, warmup=20, epochs=120, frozen_cls_pos=False)
AUTHORS = {
    'deit-s': dict(VIT, drop_path=0.0),
    'deit-b': dict(VIT, drop_path=0.2),
    'lvvit-s': dict(VIT, drop_path=0.0),
    'lvvit-m': dict(VIT, drop_path=0.0),
    'convnext-t': dict(HIER, drop_path=0.2),
    'convnext-s': dict(HIER, drop_path=0.2),
    'convnext-b': dict(HIER, drop_path=0.5),
    'swin-t': dict(HIER, drop_path=0.2),
    'swin-s': dict(HIER, drop_path=0.2),
    'swin-b': dict(HIER, drop_path=0.5),
}
MIN_LR, EMA_DECAY, WEIGHT_DECAY, FROZEN_EPOCHS = 1e-6, 0.9999, 0.05, 5  # fix_step 5: l.107, 110
# config: (authors' model, total batch of the config = GPUs x per-GPU batch, per-GPU batch)
CONFIGS = {
    'imagenet_dvit_swin.py': ('swin-t', 16 * 64, 64),
    'imagenet/dynamic-swin-small-r0.7_16xb64-120e_in1k.py': ('swin-s', 16 * 64, 64),
    'imagenet/dynamic-swin-base-r0.7_16xb64-120e_in1k.py': ('swin-b', 16 * 64, 64),
    'imagenet_dvit_convnext.py': ('convnext-t', 32 * 128, 128),
    'imagenet/dynamic-convnext-tiny-r0.9_32xb128-120e_in1k.py': ('convnext-t', 32 * 128, 128),
    'imagenet/dynamic-convnext-small-r0.7_32xb128-120e_in1k.py': ('convnext-s', 32 * 128, 128),
    'imagenet/dynamic-convnext-small-r0.9_32xb128-120e_in1k.py': ('convnext-s', 32 * 128, 128),
    'imagenet/dynamic-convnext-base-r0.7_32xb128-120e_in1k.py': ('convnext-b', 32 * 128, 128),
    'imagenet/dynamic-convnext-base-r0.9_32xb128-120e_in1k.py': ('convnext-b', 32 * 128, 128),
    'imagenet_dvit_deit.py': ('deit-s', 4 * 256, 256),
    'imagenet/dynamic-deit-base-r0.7_16xb64-30e_in1k.py': ('deit-b', 16 * 64, 64),
    'imagenet/dynamic-deit-256-r0.7_4xb256-30e_in1k.py': ('deit-s', 4 * 256, 256),
    'imagenet/dynamic-lvvit-small-r0.5_in1k.py': ('lvvit-s', 8 * 128, 128),
    'imagenet/dynamic-lvvit-small-r0.7_in1k.py': ('lvvit-s', 8 * 128, 128),
    'imagenet/dynamic-lvvit-medium-r0.7_in1k.py': ('lvvit-m', 8 * 128, 128),
}


def test_every_imagenet_config_is_listed():
    found = {'imagenet/' + p.name for p in (ROOT / 'configs/imagenet').glob('*.py')}
    found |= {p.name for p in (ROOT / 'configs').glob('imagenet_dvit_*.py')}
    assert found == set(CONFIGS)


def authors_group(name: str, param: nn.Parameter):
    """``optim_factory.get_parameter_groups`` (l.77-95) on one parameter: None for the parameters
    left out of the optimizer, else (new module?, weight decay)."""
    if 'cls_token' in name or 'pos_embed' in name:
        return None
    new = any(key in name for key in ('fast', 'predictor', 'mse', 'fastmlp'))
    no_decay = param.ndim == 1 or name.endswith('.bias')
    return new, 0.0 if no_decay else WEIGHT_DECAY


def authors_cosine(base, final, epochs, niter_per_ep, warmup_epochs):
    """``utils.cosine_scheduler`` (l.432-449, start_warmup_value 0): one value per iteration."""
    warmup_iters = warmup_epochs * niter_per_ep
    warmup = [base * i / (warmup_iters - 1) for i in range(warmup_iters)]
    iters = epochs * niter_per_ep - warmup_iters
    return warmup + [final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / iters))
                     for i in range(iters)]


@lru_cache(maxsize=None)
def load(path: str):
    cfg = Config.fromfile(str(ROOT / 'configs' / path))
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    return cfg, model


def build_wrapper(cfg, model):
    from mmengine.optim import build_optim_wrapper
    return build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))


@pytest.mark.parametrize('path', CONFIGS)
def test_optimizer_is_the_authors_adamw_and_parameter_groups(path):
    """AdamW (eps 1e-8, betas 0.9 / 0.999, weight decay 0.05), no gradient clipping; new modules
    (predictors, fast paths) at the authors' lr scaled to the config's batch, every other weight
    at lr_scale x that; weight decay on no 1-D parameter or bias; cls_token / pos_embed at lr 0
    where the authors leave them out of the optimizer (DeiT / LV-ViT)."""
    from mmengine.optim import OptimWrapper
    cfg, model = load(path)
    authors = AUTHORS[CONFIGS[path][0]]
    total, per_gpu = CONFIGS[path][1:]
    assert cfg.train_dataloader.batch_size == per_gpu
    full = authors['lr'] * total / authors['batch']  # == the authors' lr where batches agree
    wrapper = build_wrapper(cfg, model)
    assert type(wrapper) is OptimWrapper and not hasattr(wrapper, 'clip_func')  # no clip_grad
    optimizer = wrapper.optimizer
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.defaults['eps'] == 1e-8 and optimizer.defaults['betas'] == (0.9, 0.999)
    assert optimizer.defaults['weight_decay'] == WEIGHT_DECAY
    names = {id(p): n for n, p in model.named_parameters()}
    seen = []
    for group in optimizer.param_groups:
        for param in group['params']:
            name = names[id(param)]
            seen.append(name)
            expected = authors_group(name, param)
            if expected is None:
                assert authors['frozen_cls_pos'], name
                assert (group['lr'], group['weight_decay']) == (0.0, 0.0), name
                continue
            new, decay = expected
            lr = full if new else full * authors['scale']
            assert group['lr'] == pytest.approx(lr, rel=1e-12), name
            assert group['weight_decay'] == decay, name
    assert sorted(seen) == sorted(names.values())  # every parameter, once
    assert any('predictor' in n for n in seen)
    assert any(authors_group(n, p) is None for n, p in model.named_parameters()) == \
        authors['frozen_cls_pos']


@pytest.mark.parametrize('path', CONFIGS)
def test_schedule_is_the_authors_warmup_and_cosine_per_iteration(path):
    """Every parameter group's rate at every iteration (3 per epoch) equals the authors'
    lr_schedule_values[it] x its lr_scale (engine.py l.44): linear warm-up from 0 over the
    warm-up epochs, then cosine to min_lr 1e-6 (pretrained weights: 1e-6 x lr_scale). The
    only gap: mmengine's warm-up starts at 1e-6 x the rate instead of 0."""
    from mmengine.registry import PARAM_SCHEDULERS
    cfg, model = load(path)
    authors = AUTHORS[CONFIGS[path][0]]
    full = authors['lr'] * CONFIGS[path][1] / authors['batch']
    assert cfg.train_cfg.max_epochs == authors['epochs']
    wrapper = build_wrapper(cfg, model)
    mults = [group['lr'] / full for group in wrapper.optimizer.param_groups]
    niter = 3
    schedulers = [PARAM_SCHEDULERS.build(copy.deepcopy(s), default_args=dict(
        optimizer=wrapper, epoch_length=niter)) for s in cfg.param_scheduler]
    assert {round(m, 12) for m in mults} <= {0.0, authors['scale'], 1.0}
    expected = authors_cosine(full, MIN_LR, authors['epochs'], niter, authors['warmup'])
    for it, value in enumerate(expected):
        for mult, group in zip(mults, wrapper.optimizer.param_groups):
            tolerance = 1.01e-6 * full * mult + 1e-7 * value * mult
            assert abs(group['lr'] - value * mult) <= tolerance, (it, mult, group['lr'], value)
        for scheduler in schedulers:
            scheduler.step()
    assert expected[authors['warmup'] * niter] == pytest.approx(full)  # peak after warm-up


@pytest.mark.parametrize('path', CONFIGS)
def test_hooks_drop_path_and_epochs(path):
    """EMA of the whole state dict with the authors' decay 0.9999 per step (mmengine's momentum is
    1 - decay), the pretrained weights frozen for the authors' 5 epochs, the authors' drop path
    (the rate of the deepest block: both schedules are linear over depth)."""
    from mmcv.cnn.bricks import DropPath
    from mmengine.hooks import EMAHook
    from mmengine.registry import HOOKS
    cfg, model = load(path)
    authors = AUTHORS[CONFIGS[path][0]]
    hooks = [copy.deepcopy(h) for h in cfg.custom_hooks]
    # Runner.register_hook takes `priority` off before building a hook.
    assert [h.pop('priority', None) for h in hooks] == [None, 'ABOVE_NORMAL']
    hooks = [HOOKS.build(h) for h in hooks]
    assert [type(h).__name__ for h in hooks] == ['FreezePretrainedHook', 'EMAHook']
    freeze, ema = hooks
    assert (freeze.epochs, freeze.iters) == (FROZEN_EPOCHS, None)
    assert isinstance(ema, EMAHook) and ema.begin_iter == 0 and not ema.enabled_by_epoch
    assert ema.ema_cfg == dict(type='ExponentialMovingAverage', momentum=pytest.approx(
        1 - EMA_DECAY, rel=1e-9), update_buffers=True)
    rates = [m.drop_prob for m in model.backbone.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(authors['drop_path'])
    assert cfg.train_cfg.max_epochs == authors['epochs']


def test_mmengine_ema_is_timms_model_ema_and_is_what_validation_sees():
    """The authors' timm ModelEma: ema = decay * ema + (1 - decay) * x over the whole state dict
    (BatchNorm statistics too: LV-ViT's stem) after each step. mmengine's ExponentialMovingAverage
    with the configs' momentum and update_buffers gives the same numbers (its first update copies
    the weights); EMAHook puts the averaged weights in the model for validation and test and
    restores the live ones afterwards."""
    from mmengine.registry import HOOKS
    from timm.utils import ModelEma
    cfg, _ = load('imagenet/dynamic-lvvit-small-r0.7_in1k.py')
    hook = copy.deepcopy(cfg.custom_hooks[1])
    hook.pop('priority')
    hook = HOOKS.build(hook)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 6, 6))
    runner = SimpleNamespace(model=model, iter=0, epoch=0)
    hook.before_run(runner)
    timm_ema = None
    for step in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(2, 3, 6, 6))  # moves the BatchNorm statistics
        hook.after_train_iter(runner, step)
        if timm_ema is None:  # both averages start from the weights after the first step
            timm_ema = ModelEma(model, decay=EMA_DECAY)
        else:
            timm_ema.update(model)
        runner.iter += 1
    ours = {k: v.clone() for k, v in hook.ema_model.module.state_dict().items()}
    for key, value in timm_ema.ema.state_dict().items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(ours[key], value, rtol=1e-6, atol=1e-7)
    live = copy.deepcopy(model.state_dict())
    assert not torch.equal(live['1.running_mean'], ours['1.running_mean'])
    for before, after in (('before_val_epoch', 'after_val_epoch'),
                          ('before_test_epoch', 'after_test_epoch')):
        getattr(hook, before)(runner)
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                assert torch.equal(value, ours[key]), key
        getattr(hook, after)(runner)
        for key, value in model.state_dict().items():
            assert torch.equal(value, live[key]), key


@pytest.mark.parametrize('demo', ['imagenet_dvit_deit_demo.py', 'imagenet_dvit_lvvit_demo.py'])
def test_cls_token_and_pos_embed_never_change_under_adamw(demo):
    """lr 0 (and decay 0) in torch's AdamW leaves cls_token / pos_embed bit-identical through
    real steps with gradients, as the authors' exclusion from the optimizer does; the other
    weights move."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(str(ROOT / 'configs/demo' / demo))
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    model = MODELS.build(cfg.model)
    model.init_weights()
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        optimizer.step()
    for name, param in model.named_parameters():
        frozen = name in ('backbone.cls_token', 'backbone.pos_embed')
        assert torch.equal(param, before[name]) == frozen, name


# --------------------------------------------------------------------------- demos, end to end
def run_train(config: Path, work: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools/train.py'), str(config), '--work-dir', str(work)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1')))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize('demo', ['imagenet_dvit_deit256_demo.py', 'imagenet_dvit_lvvit_demo.py'])
def test_demo_trains_with_the_recipe_in_miniature(tmp_path, demo):
    """DynamicViT DeiT-256 (real widths) and a tiny DynamicLVViT + LVViTClsHead train 2 epochs of 5
    iterations from a checkpoint (the student's own initial weights, also the teacher's): the
    pretrained weights frozen in epoch 1, the base rate warming up linearly from ~0 then
    following the authors' cosine, every loss term finite, EMA weights evaluated and saved in
    `state_dict` (the live ones in `ema_state_dict`), cls_token / pos_embed unchanged in both."""
    data = tmp_path / 'imagenet'
    make_imagenet_demo(str(data))
    cfg = Config.fromfile(str(ROOT / 'configs/demo' / demo))
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    student = MODELS.build(cfg.model)
    student.init_weights()
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    pretrained = tmp_path / 'pretrained.pth'
    torch.save({'state_dict': initial}, pretrained)
    init = dict(_delete_=True, type='Pretrained', checkpoint=str(pretrained))
    config = tmp_path / demo
    config.write_text('\n'.join([
        f"_base_ = '{ROOT / 'configs/demo' / demo}'",
        f'model = dict(student=dict(backbone=dict(init_cfg={dict(init, prefix="backbone.")!r}),',
        f'                          head=dict(init_cfg={dict(init, prefix="head.")!r})),',
        f'             teacher=dict(checkpoint={str(pretrained)!r}))',
        f"train_dataloader = dict(dataset=dict(data_root={str(data)!r}))",
        f"val_dataloader = dict(dataset=dict(data_root={str(data)!r}))",
        f"test_dataloader = dict(dataset=dict(data_root={str(data)!r}))",
    ]))
    work = tmp_path / 'work'
    log = run_train(config, work)
    assert 'pretrained parameter tensors frozen (epoch 0' in log
    assert 'trainable again (epoch 1' in log
    assert 'teacher has no checkpoint' not in log
    records = [json.loads(line) for line in
               next(work.glob('*/vis_data/scalars.json')).read_text().splitlines()]
    train = [r for r in records if 'loss_keep_ratio' in r]
    assert len(train) == 10
    for record in train:
        for key in ('loss', 'loss_keep_ratio', 'loss_feat_distill', 'loss_logit_distill'):
            assert math.isfinite(record[key]), key
    # base_lr: the pretrained weights' rate (0.01 x the new modules'), logged at each iteration
    base = cfg.lr * 0.01
    expected = authors_cosine(base, MIN_LR * 0.01, 2, 5, 1)
    assert [r['base_lr'] for r in train] == pytest.approx(expected, rel=1e-6, abs=2e-6 * base)
    assert any('accuracy/top1' in r for r in records)  # validation ran (on the EMA weights)

    checkpoint = torch.load(work / 'epoch_2.pth', map_location='cpu', weights_only=False)
    ema, live = checkpoint['state_dict'], checkpoint['ema_state_dict']
    live = {k[len('module.'):]: v for k, v in live.items() if k.startswith('module.')}
    assert set(ema) == set(live) == set(initial)
    for key in ('backbone.cls_token', 'backbone.pos_embed'):
        assert torch.equal(ema[key], initial[key]) and torch.equal(live[key], initial[key]), key
    moved = [k for k in initial if 'score_predictors' in k and k.endswith('weight')]
    assert moved and all(not torch.equal(live[k], initial[k]) for k in moved)
    assert all(not torch.equal(ema[k], live[k]) for k in moved)  # the average lags the weights
