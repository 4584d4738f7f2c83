"""Every config under configs/ parses and builds (dense-task models with tiny widths,
classifiers at full size), with no weights loaded; the dense-task zoo is what its file names
say; the canonical four dense-task configs build at full size and differ from their upstream
dense configs only by the sparsity modules (so upstream dense checkpoints load into the teacher
and the student)."""
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, DefaultScope

from mmdvit.sparse import record_decisions

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / 'configs').rglob('*.py'))
DENSE = [p for p in CONFIGS if 'upernet' in p.name or 'rcnn' in p.name]
FULL_SIZE = [p for p in DENSE if p.parent.name != 'demo']
CANONICAL = {
    'upernet_dvit_swin.py':
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    'upernet_dvit_convnext.py':
    'mmseg::convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py',
    'maskrcnn_dvit_swin.py': 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    'maskrcnn_dvit_convnext.py':
    'mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py',
}
# The whole-model configs change the same upstream models (sparse heads and necks too).
WHOLE = {name.replace('.py', '_whole.py'): base for name, base in CANONICAL.items()}
WHOLE['upernet_dvit_swin_whole_fine.py'] = CANONICAL['upernet_dvit_swin.py']  # another head
NEW_MODULES = ('score_predictor', 'fast_path')
TINY = [16, 32, 64, 128]
# Full-size architectures: (first width, depths) per size name.
SWIN_SIZES = {'tiny': (96, (2, 2, 6, 2)), 'small': (96, (2, 2, 18, 2)),
              'base': (128, (2, 2, 18, 2))}
CONVNEXT_SIZES = {'tiny': (96, (3, 3, 9, 3)), 'small': (96, (3, 3, 27, 3)),
                  'base': (128, (3, 3, 27, 3))}
PUBLISHED_LOCS = {6: (1, 2, 3), 18: (2, 4, 6), 9: (1, 2, 3), 27: (3, 6, 9)}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT / 'configs'))


def inheritance_depth(path: Path) -> int:
    """Hops from ``path`` to the first upstream (``pkg::``) config."""
    text = path.read_text()
    base = re.search(r"^_base_ = '([^']+)'", text, re.M).group(1)
    return 1 if '::' in base else 1 + inheritance_depth((path.parent / base).resolve())


def strip_pretrained(node) -> None:
    """Set every ``init_cfg=dict(type='Pretrained', ...)`` inside ``node`` to None."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'init_cfg' and isinstance(value, dict) and value.get('type') == 'Pretrained':
                node[key] = None
            else:
                strip_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            strip_pretrained(value)


def make_tiny(model) -> None:
    """Shrink a student config in place: 4 stages of 16-128 channels, stage 3 of depth 3 with a
    predictor before every block (other sparse stages: one before their block), heads 16 wide;
    no pretrained weights."""
    backbone = model.backbone
    if 'Swin' in backbone.type:
        backbone.update(embed_dims=TINY[0], depths=(1, 1, 3, 1), num_heads=(1, 2, 4, 8))
    else:
        backbone.arch = dict(depths=[1, 1, 3, 1], channels=TINY)
    stages = backbone.get('sparse_stages', (2, ))
    locs = [(0, 1, 2) if stage == 2 else (0, ) for stage in stages]
    backbone.update(pruning_locs=locs[0] if len(locs) == 1 else locs, init_cfg=None)
    if 'decode_head' in model:
        model.decode_head.update(in_channels=TINY, channels=16)
        model.auxiliary_head.update(in_channels=TINY[2], channels=8)
        return
    model.neck.update(in_channels=TINY, out_channels=16)
    model.rpn_head.update(in_channels=16, feat_channels=16)
    roi = model.roi_head
    roi.bbox_roi_extractor.out_channels = roi.mask_roi_extractor.out_channels = 16
    for head in roi.bbox_head if isinstance(roi.bbox_head, list) else [roi.bbox_head]:
        head.update(in_channels=16, fc_out_channels=16)
        if 'conv_out_channels' in head:
            head.conv_out_channels = 16
    roi.mask_head.update(in_channels=16, conv_out_channels=16)


def det_samples(size: int):
    from mmdet.structures import DetDataSample
    meta = dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size),
                batch_input_shape=(size, size), scale_factor=(1.0, 1.0))
    return [DetDataSample(metainfo=meta)]


def upstream_config(tmp_path: Path, base: str) -> Config:
    path = tmp_path / 'upstream.py'
    path.write_text(f"_base_ = '{base}'\n")
    return Config.fromfile(str(path))


def test_the_zoo_is_complete_and_shallow():
    names = {rel(p) for p in CONFIGS}
    assert set(CANONICAL) <= names
    for backbone in ('swin', 'convnext'):
        for size in ('tiny', 'small', 'base'):
            for rho in ('0.7', '0.9'):
                assert any(re.fullmatch(rf'dynamic_{backbone}/dynamic-{backbone}-{size}-r{rho}'
                                        r'_upernet_8xb2-(amp-)?160k_ade20k-512x512\.py', n)
                           for n in names), (backbone, size, rho)
    for pattern in (r'mask-rcnn_dynamic-swin-t-r0\.7-\S+_1x_coco',
                    r'mask-rcnn_dynamic-swin-t-r0\.7-\S+-3x_coco',
                    r'mask-rcnn_dynamic-convnext-t-r0\.7-\S+-3x_coco',
                    r'cascade-mask-rcnn_dynamic-swin-t-r0\.7-\S+-3x_coco',
                    r'cascade-mask-rcnn_dynamic-convnext-t-r0\.7-\S+-3x_coco'):
        assert any(re.search(pattern, n) for n in names), pattern
    assert {p.name for p in DENSE if p.parent.name == 'demo'} == {
        'upernet_dvit_swin_demo.py', 'upernet_swin_dense_demo.py', 'upernet_dvit_convnext_demo.py',
        'maskrcnn_dvit_swin_demo.py', 'maskrcnn_dvit_convnext_demo.py',
        'upernet_dvit_swin_whole_demo.py', 'upernet_dvit_convnext_whole_demo.py',
        'maskrcnn_dvit_swin_whole_demo.py', 'maskrcnn_dvit_convnext_whole_demo.py',
        'upernet_dvit_swin_whole_fine_demo.py'}
    for path in CONFIGS:
        assert inheritance_depth(path) <= 3, rel(path)


def check_dense_teacher_demo(cfg: Config) -> None:
    """The demo's dense teacher: the demo student as a plain segmentor with a dense backbone
    whose parameters are exactly the dynamic demo model's minus the sparsity modules."""
    assert cfg.model.type == 'EncoderDecoder'
    dynamic = Config.fromfile(str(ROOT / 'configs/demo/upernet_dvit_swin_demo.py'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        dense = revert_sync_batchnorm(MODELS.build(cfg.model)).eval()
        student = MODELS.build(dynamic.model.student)
    assert {k for k in student.state_dict() if not any(m in k for m in NEW_MODULES)} == set(
        dense.state_dict())
    with torch.no_grad(), record_decisions() as decisions:
        assert dense(torch.randn(1, 3, 64, 64), mode='tensor').shape == (1, 150, 16, 16)
    assert decisions == []


@pytest.mark.parametrize('path', CONFIGS, ids=rel)
def test_config_builds_and_runs(path):
    """Segmentors and detectors: tiny widths, built with their dense teacher and run on a 64x64
    input. Classifiers: built at full size on the meta device (construction only; their own
    tests run them)."""
    cfg = Config.fromfile(str(path))
    if path.name == 'upernet_swin_dense_demo.py':
        check_dense_teacher_demo(cfg)
        return
    assert cfg.model.type == 'mmdvit.SparsityTrainer'
    student = cfg.model.student
    assert student.backbone.type.startswith('mmdvit.Dynamic')
    strip_pretrained(cfg.model)
    if cfg.model.teacher is not None:
        assert cfg.model.teacher.model is None  # the dense twin of the student
        cfg.model.teacher.checkpoint = None
    if path not in DENSE:
        with DefaultScope.overwrite_default_scope(cfg.default_scope), torch.device('meta'):
            model = MODELS.build(cfg.model)
        assert model.backbone.keep_ratios and 'head' in dict(model.named_children())
        return
    make_tiny(student)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = revert_sync_batchnorm(MODELS.build(cfg.model))
        teacher = model.build_teacher()
        model.eval()
        with torch.no_grad(), record_decisions() as decisions:
            if 'decode_head' in student:
                out = model(torch.randn(1, 3, 64, 64), mode='tensor')
                assert out.shape == (1, 150, 16, 16)
            else:
                out = model(torch.randn(1, 3, 64, 64), det_samples(64), mode='tensor')
                assert isinstance(out, tuple) and len(out) > 0
    backbone_decisions = [d for d in decisions if d.source == 'backbone']
    assert len(backbone_decisions) == len(model.backbone.keep_ratios)
    if teacher is not None:
        # The dense twin: sparsification disabled, no predictors.
        assert teacher.backbone.keep_ratios == [] and len(teacher.backbone.score_predictors) == 0
        assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize('path', FULL_SIZE, ids=rel)
def test_full_size_architecture_matches_the_file_name(path):
    """Built on the meta device (no memory, no init): widths, depths, predictor locations,
    keep ratios, head input widths and weight file names agree with the config's name."""
    cfg = Config.fromfile(str(path))
    name = path.name
    student = cfg.model.student
    student.backbone.init_cfg = None
    size = next(s for s in ('tiny', 'small', 'base') if f'-{s}-' in name or f'-{s[0]}-' in name
                or (path.parent == ROOT / 'configs' and s == 'tiny'))
    rho = float(re.search(r'-r(0\.\d)', name).group(1)) if '-r0.' in name else 0.7
    with DefaultScope.overwrite_default_scope(cfg.default_scope), torch.device('meta'):
        model = MODELS.build(student)
    backbone = model.backbone
    channels = [getattr(backbone, f'norm{i}').weight.shape[0] for i in backbone.out_indices]
    is_swin = 'Swin' in student.backbone.type
    width, depths = (SWIN_SIZES if is_swin else CONVNEXT_SIZES)[size]
    assert channels == [width * 2**i for i in range(4)]
    assert [len(s.blocks if is_swin else s) for s in backbone.stages] == list(depths)
    if name in WHOLE:  # every stage sparse; Swin prunes attention windows
        stage3 = (0, 2, 4) if is_swin else (0, 3, 6)
        assert {s: sched.pruning_locs for s, sched in backbone.schedule.items()} == {
            0: (0, ), 1: (0, ), 2: stage3, 3: (0, )}
        assert backbone.keep_ratios == pytest.approx(
            [0.6, 0.6, 0.6, 0.5, 0.4, 0.5] if is_swin else [0.5, 0.5, 0.6, 0.5, 0.4, 0.5])
        assert not is_swin or backbone.granularity == 'window'
    else:
        assert backbone.schedule[2].pruning_locs == PUBLISHED_LOCS[depths[2]]
        assert backbone.keep_ratios == pytest.approx([rho, rho - 0.2, rho - 0.4])
        assert not is_swin or backbone.granularity == 'token'
    if 'decode_head' in student:
        assert list(student.decode_head.in_channels) == channels
        assert student.auxiliary_head.in_channels == channels[2]
    else:
        assert list(student.neck.in_channels) == channels
    pretrained = cfg.model.student.backbone.init_cfg
    assert pretrained is None  # cleared above; the file name is checked on the parsed config
    teacher = cfg.model.teacher.checkpoint
    if name in WHOLE:  # the whole model starts from the dense teacher's checkpoint
        assert cfg.model.student_checkpoint == teacher
        weights = Config.fromfile(str(path.parent / re.sub(r'_whole.*\.py', '.py', name))
                                  ).model.student.backbone.init_cfg.checkpoint
    else:
        weights = Config.fromfile(str(path)).model.student.backbone.init_cfg.checkpoint
    assert weights.startswith('checkpoints/') and size in weights
    assert teacher.startswith('checkpoints/') and f'-{size[0]}_' in teacher
    schedule = re.search(r'(\dx)_coco', name)
    if schedule:
        assert teacher.endswith(f'coco-{schedule.group(1)}.pth')
        assert ('cascade' in name) == ('cascade' in teacher)


@pytest.mark.parametrize('name', sorted(CANONICAL) + sorted(WHOLE))
def test_canonical_config_builds_at_full_size_and_fits_upstream_checkpoints(tmp_path, name):
    """The student has the upstream dense model's state dict plus the sparsity modules only, the
    dense teacher exactly the upstream one; an upstream dense checkpoint loaded into the teacher
    reproduces the upstream backbone's outputs."""
    cfg = Config.fromfile(str(ROOT / 'configs' / name))
    cfg.model.student.backbone.init_cfg = None
    cfg.model.teacher.checkpoint = None
    cfg.model.student_checkpoint = None
    upstream = upstream_config(tmp_path, {**CANONICAL, **WHOLE}[name])
    upstream.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        dense = MODELS.build(upstream.model).eval()
        teacher = model.build_teacher()
    dense_state = dense.state_dict()
    dense_shapes = {k: v.shape for k, v in dense_state.items()}
    student = model.state_dict()
    ours = {k: v.shape for k, v in student.items() if not any(m in k for m in NEW_MODULES)}
    assert ours == dense_shapes
    assert any(k.startswith('backbone.score_predictors.2.2.') for k in student)
    # The teacher is the dense twin: exactly the upstream model's tensors, which load strictly.
    assert {k: v.shape for k, v in teacher.state_dict().items()} == dense_shapes
    teacher.load_state_dict(dense_state)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for ours, ref in zip(teacher.backbone(x), dense.backbone(x)):
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    if name not in WHOLE:
        return
    # Whole models: at keep ratio 1.0 (the teacher) the sparse head / neck computes upstream's.
    with torch.no_grad():
        if 'decode_head' in cfg.model.student:
            torch.testing.assert_close(teacher(x, mode='tensor'), dense(x, mode='tensor'),
                                       rtol=1e-4, atol=1e-4)
        else:
            feats, ref_feats = teacher.extract_feat(x), dense.extract_feat(x)
            for ours, ref in zip(feats, ref_feats):
                torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
            for ours, ref in zip(teacher.rpn_head(feats), dense.rpn_head(ref_feats)):
                torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
