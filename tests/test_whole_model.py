"""Whole-model sparsity through the tools: a UPerNet whose decode head is sparse
(mmdvit.DynamicUPerHead) starts from a dense checkpoint written by the upstream mmseg model,
trains with the keep-ratio loss over backbone and head decisions and logit distillation, and
evaluates; get_flops counts the head's savings."""
import json
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from test_dense_e2e import ROOT, metrics, run, scalars

from mmdvit.analysis.models import build_model, model_config, upstream_backbone_config
from mmdvit.datasets import make_ade20k_demo
from mmdvit.models.dense_twin import dense_twin_config

CONFIG = """
_base_ = '{root}/configs/demo/upernet_dvit_swin_whole_demo.py'
data_root = '{data}'
widths = [16, 32, 64, 128]
model = dict(
    student=dict(
        backbone=dict(embed_dims=widths[0]),
        decode_head=dict(in_channels=widths, channels=16),
        auxiliary_head=dict(in_channels=widths[2], channels=8)),
    teacher=dict(checkpoint='{dense}'),
    student_checkpoint='{dense}')
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(loader, batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
param_scheduler = []
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4))
randomness = dict(seed=0)
"""


def save_upstream_dense(config: Path, out: Path) -> None:
    """A checkpoint of the upstream dense segmentor (mmseg SwinTransformer + UPerHead, random
    weights), as the mmseg model zoo would give it."""
    cfg = Config.fromfile(str(config))
    dense_cfg = dense_twin_config(model_config(cfg))
    dense_cfg.backbone = upstream_backbone_config(dense_cfg.backbone)
    model = build_model(dense_cfg, cfg.default_scope)
    assert type(model.decode_head).__name__ == 'UPerHead'
    torch.save({'state_dict': model.state_dict()}, out)


@pytest.fixture(scope='module')
def whole(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('whole')
    make_ade20k_demo(str(tmp / 'ade20k'), num_train=4, num_val=3, seed=0, size_range=(128, 160))
    config = tmp / 'whole.py'
    config.write_text(CONFIG.format(root=ROOT, data=tmp / 'ade20k', dense=tmp / 'dense.pth'))
    save_upstream_dense(config, tmp / 'dense.pth')
    return tmp, config


@pytest.mark.slow
def test_whole_model_trains_from_the_dense_checkpoint_and_evaluates(whole):
    tmp, config = whole
    work_dir = tmp / 'work'
    proc = run(['tools/train.py', str(config), '--work-dir', str(work_dir)])
    log = proc.stdout + proc.stderr
    # the student loaded every dense tensor; only the sparsity modules are new
    assert 'tensors of new sparsity modules keep their initialisation' in log
    assert 'missing keys' not in log
    train = [r for r in scalars(work_dir) if 'loss_keep_ratio' in r]
    assert len(train) == 4
    head_keys = {f'kept.decode_head.{i}' for i in range(3)}
    assert head_keys | {'kept.0', 'kept.1', 'kept.2', 'loss_logit_distill'} <= set(train[0])
    result = metrics(run(['tools/test.py', str(config), str(work_dir / 'iter_4.pth'),
                          '--work-dir', str(tmp / 'test')]))
    assert 0 <= result['mIoU'] <= 100


@pytest.mark.slow
def test_get_flops_counts_the_sparse_head(whole):
    tmp, config = whole
    out = tmp / 'flops.json'
    run(['tools/analysis_tools/get_flops.py', str(config), '--shape', '128', '128', '--out',
         str(out)])
    result = json.loads(out.read_text())
    heads = result['neck_and_heads']
    assert heads['dynamic'] < 0.75 * heads['dense']
    assert result['model']['dynamic'] == pytest.approx(
        result['backbone']['dynamic'] + heads['dynamic'], abs=1e-3)
    names = [k['name'] for k in result['kept']]
    assert names == ['0', '1', '2', '3', '4', 'decode_head.0', 'decode_head.1', 'decode_head.2']
    # Backbone: windows of 4 in stages 0-2 (8x8, 4x4, 2x2 windows at 128x128).
    assert [(k['unit'], k['positions']) for k in result['kept'][:5]] == [
        ('windows', 64), ('windows', 16), ('windows', 4), ('windows', 4), ('windows', 4)]
    assert [k['kept'] for k in result['kept'][5:]] == [int(64 * r) for r in (0.4, 0.4, 0.35)]


def test_visualiser_draws_the_heads_kept_tiles(whole):
    from mmdvit.analysis.visualize import caption, kept_maps
    _, config = whole
    cfg = Config.fromfile(str(config))
    model = build_model(model_config(cfg), cfg.default_scope)
    image = (torch.rand(100, 140, 3) * 255).to(torch.uint8).numpy()
    maps = kept_maps(model, image)
    assert [info['name'] for info, _ in maps][5:] == [f'decode_head.{i}' for i in range(3)]
    info, kept = maps[5]
    assert kept.shape == (100, 140) and 0 < kept.mean() < 1
    assert info['kept'] == int(info['positions'] * 0.4)
    assert caption(info).startswith('decode_head #0 (level 0): ')


DEMO_DET = """
_base_ = '{root}/configs/demo/{name}'
data_root = '{data}/'
widths = [16, 32, 64, 128]
model = dict(student=dict({backbone}, neck=dict(in_channels=widths),
                          test_cfg=dict(rcnn=dict(score_thr=0.0, max_per_img=20))))
loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
train_dataloader = dict(loader, dataset=dict(data_root=data_root))
val_dataloader = dict(loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=2)
default_hooks = dict(logger=dict(interval=1))
randomness = dict(seed=0)
"""
DEMO_SEG = """
_base_ = '{root}/configs/demo/{name}'
data_root = '{data}'
widths = [16, 32, 64, 128]
model = dict(student=dict({backbone}, decode_head=dict(in_channels=widths, channels=16),
                          auxiliary_head=dict(in_channels=widths[2], channels=8)))
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(loader, batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
param_scheduler = []
train_cfg = dict(max_iters=2, val_interval=100)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
randomness = dict(seed=0)
"""
BACKBONES = {'swin': 'backbone=dict(embed_dims=widths[0])',
             'convnext': 'backbone=dict(arch=dict(depths=[1, 1, 3, 1], channels=widths))'}


@pytest.mark.slow
@pytest.mark.parametrize('name', ['upernet_dvit_convnext_whole_demo.py',
                                  'maskrcnn_dvit_swin_whole_demo.py',
                                  'maskrcnn_dvit_convnext_whole_demo.py'])
def test_whole_model_demo_configs_train_and_evaluate(tmp_path, name):
    """The other whole-model demo configs (the Swin UPerNet one runs above) through the tools:
    their head / neck decisions are trained (kept.<module>.<i> logged) and the checkpoint
    evaluates."""
    is_det = name.startswith('maskrcnn')
    if is_det:
        from mmdvit.datasets import make_coco_demo
        make_coco_demo(str(tmp_path / 'data'), num_train=4, num_val=2, seed=0)
    else:
        make_ade20k_demo(str(tmp_path / 'data'), num_train=4, num_val=2, seed=0,
                         size_range=(128, 160))
    backbone = BACKBONES['swin' if 'swin' in name else 'convnext']
    config = tmp_path / name
    config.write_text((DEMO_DET if is_det else DEMO_SEG).format(
        root=ROOT, name=name, data=tmp_path / 'data', backbone=backbone))
    work_dir = tmp_path / 'work'
    proc = run(['tools/train.py', str(config), '--work-dir', str(work_dir)])
    if 'convnext' in name:  # layer-wise lr decay: its per-parameter lines go to DEBUG only
        assert 'set param' not in proc.stdout + proc.stderr
    train = [r for r in scalars(work_dir) if 'loss_keep_ratio' in r]
    sources = ('neck', 'rpn_head') if is_det else ('decode_head', )
    per_source = 2 if is_det else 3  # P2 and P3 / fpn_convs.0, fpn_convs.1, fpn_bottleneck
    expected = {f'kept.{s}.{i}' for s in sources for i in range(per_source)}
    assert train and expected <= set(train[0])
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    result = metrics(run(['tools/test.py', str(config), checkpoint, '--work-dir',
                          str(tmp_path / 'test')]))
    assert result and all(v >= -1 for v in result.values())


def test_mmdet_mask_rcnn_checkpoint_loads_into_the_whole_model_with_only_new_modules(tmp_path):
    """student_checkpoint: a checkpoint written by mmdet's own Mask R-CNN (random weights)
    fills every student tensor except the predictors and fast paths of the backbone, FPN and
    RPN head, and the fast paths start from the loaded kernels."""
    from mmengine.registry import MODELS, DefaultScope
    from test_configs import make_tiny
    cfg = Config.fromfile(str(ROOT / 'configs/maskrcnn_dvit_swin_whole.py'))
    make_tiny(cfg.model.student)
    dense_cfg = dense_twin_config(model_config(cfg))
    dense_cfg.backbone = upstream_backbone_config(dense_cfg.backbone)
    dense = build_model(dense_cfg, 'mmdet')
    assert type(dense.neck).__name__ == 'FPN' and type(dense.rpn_head).__name__ == 'RPNHead'
    torch.save({'state_dict': dense.state_dict()}, tmp_path / 'dense.pth')
    cfg.model.update(student_checkpoint=str(tmp_path / 'dense.pth'), teacher=None,
                     feature_distill_weight=0.0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    state = model.state_dict()
    new = {k for k in state if k not in dense.state_dict()}
    assert new and all('score_predictor' in k or 'fast_path' in k for k in new)
    for k, v in dense.state_dict().items():
        assert torch.equal(state[k], v), k
    kernel = state['rpn_head.rpn_conv.weight'].sum((2, 3), keepdim=True)
    assert torch.equal(state['rpn_head.rpn_gates.0.fast_path.weight'], kernel)
