"""mmdvit.SparsityTrainer: losses against independent computations, state-dict layout, teacher;
the warning of a dynamic backbone trained without it, and student fields set on the wrapper."""
import logging
from contextlib import contextmanager
from typing import Iterator, List

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

from helpers import force_decisions, random_keep_sets

from mmdvit.sparse import record_decisions

RATIOS = (0.7, 0.5, 0.3)


def seg_student(**backbone):
    bb = dict(type='mmdvit.DynamicSwinTransformer', embed_dims=16, depths=(1, 1, 4, 1),
              num_heads=(1, 2, 4, 8), pruning_locs=(0, 1, 2), keep_ratios=RATIOS,
              drop_path_rate=0.0)
    bb.update(backbone)
    return ConfigDict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.7, 116.3, 103.5],
                               std=[58.4, 57.1, 57.4], bgr_to_rgb=True, pad_val=0, size=(64, 64),
                               seg_pad_val=255),
        backbone=bb,
        decode_head=dict(type='FCNHead', in_channels=128, in_index=3, channels=8, num_convs=1,
                         num_classes=5, dropout_ratio=0.0,
                         loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


def seg_batch(batch=2, size=64):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(batch):
        sample = SegDataSample()
        sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size),
                                 pad_shape=(size, size), padding_size=[0, 0, 0, 0]))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, size, size)))
        samples.append(sample)
    return dict(inputs=[torch.rand(3, size, size) * 255 for _ in range(batch)],
                data_samples=samples)


@pytest.fixture
def seg_scope():
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    return MODELS


def build_trainer(registry, tmp_path, **kwargs):
    teacher_model = registry.build(seg_student(keep_ratios=(1.0, 1.0, 1.0)))
    path = tmp_path / 'teacher.pth'
    torch.save({'state_dict': teacher_model.state_dict()}, path)
    cfg = dict(type='mmdvit.SparsityTrainer', student=seg_student(),
               teacher=dict(model=None, checkpoint=str(path)), ratio_loss_weight=10.0,
               feature_distill_weight=0.5, logit_distill_weight=0.25)
    cfg.update(kwargs)
    return registry.build(cfg), teacher_model.eval()


def instance_forwards(model: torch.nn.Module) -> List[str]:
    """The modules of ``model`` whose ``forward`` is replaced on the instance."""
    return [name for name, m in model.named_modules() if 'forward' in m.__dict__]


def instance_forwards_during_forward(module: torch.nn.Module,
                                     model: torch.nn.Module) -> List[List[str]]:
    """A list that receives :func:`instance_forwards` of ``model`` at every call of
    ``module`` (read from a forward pre-hook, while the model runs)."""
    seen: List[List[str]] = []
    module.register_forward_pre_hook(lambda *args: seen.append(instance_forwards(model)))
    return seen


def test_losses_equal_independent_computations(seg_scope, tmp_path):
    trainer, teacher = build_trainer(seg_scope, tmp_path)
    trainer.init_weights()
    masks = random_keep_sets(2, 16, RATIOS)
    force_decisions(trainer.backbone, 2, masks)
    trainer.train()
    data = trainer.data_preprocessor(seg_batch(), True)
    patched = instance_forwards_during_forward(trainer.backbone, trainer)
    losses = trainer(**data, mode='loss')
    # The outputs and decisions are collected without replacing any module's forward.
    assert patched == [[]] and not instance_forwards(trainer)
    assert not instance_forwards(trainer.teacher)
    assert {'loss_keep_ratio', 'loss_feat_distill', 'loss_logit_distill', 'kept.0', 'kept.1',
            'kept.2'} <= set(losses)
    # Keep-ratio loss from the forced masks by hand: kept fraction k_i / N per image.
    expected = sum((int(16 * r) / 16 - r)**2 for r in RATIOS) / 3
    assert losses['loss_keep_ratio'].item() == pytest.approx(10 * expected, rel=1e-5)
    assert losses['kept.1'].item() == pytest.approx(int(16 * 0.5) / 16)
    # Distillation: recompute both models' outputs independently.
    with torch.no_grad():
        student_feats = trainer.backbone(data['inputs'])
        teacher_feats = teacher.backbone(data['inputs'])
        mse = torch.stack([F.mse_loss(s, t) for s, t in zip(student_feats, teacher_feats)])
        s_logits = trainer.decode_head(student_feats).permute(0, 2, 3, 1).reshape(-1, 5)
        t_logits = teacher(data['inputs'], mode='tensor').permute(0, 2, 3, 1).reshape(-1, 5)
        p_t = t_logits.softmax(-1)
        kl = (p_t * (p_t.log() - s_logits.log_softmax(-1))).sum(-1).mean()
    assert losses['loss_feat_distill'].item() == pytest.approx(0.5 * mse.mean().item(), rel=1e-4)
    assert losses['loss_logit_distill'].item() == pytest.approx(0.25 * kl.item(), rel=1e-4)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert trainer.backbone.stages[2].blocks[1].fast_path[1].weight.grad.abs().sum() > 0


def test_keep_ratio_loss_is_zero_when_every_ratio_is_one(seg_scope):
    """A student at ratio 1.0 everywhere skips its predictors in training: the keep-ratio loss
    is 0 (not an error) and every position is kept."""
    trainer = seg_scope.build(dict(type='mmdvit.SparsityTrainer',
                                   student=seg_student(keep_ratios=(1.0, 1.0, 1.0)),
                                   teacher=None, feature_distill_weight=0.0))
    trainer.init_weights()
    trainer.train()
    losses = trainer(**trainer.data_preprocessor(seg_batch(), True), mode='loss')
    assert losses['loss_keep_ratio'].item() == 0.0
    assert [losses[f'kept.{i}'].item() for i in range(3)] == [1.0] * 3


def test_dense_path_losses_are_the_dense_models_and_leave_the_sparse_ones_unchanged(
        seg_scope, tmp_path):
    """``dense_path_weight``: the student's task losses once more with every position kept,
    which equal (times the weight) the losses of the dense model with the same weights, an
    mmseg Swin; the sparse pass's losses and decisions are the same as without it."""
    dense_path, _ = build_trainer(seg_scope, tmp_path, teacher=None, feature_distill_weight=0,
                                  logit_distill_weight=0, dense_path_weight=0.5)
    plain, _ = build_trainer(seg_scope, tmp_path, teacher=None, feature_distill_weight=0,
                             logit_distill_weight=0)
    plain.load_state_dict(dense_path.state_dict())
    for trainer in (dense_path, plain):
        trainer.train()
    data = plain.data_preprocessor(seg_batch(), True)
    torch.manual_seed(0)
    with record_decisions() as decisions:
        losses = dense_path(**data, mode='loss')
    torch.manual_seed(0)
    reference = plain(**data, mode='loss')
    # The sparse pass, then the dense path: decisions that keep everything, without scores.
    assert [d.keep_ratio for d in decisions] == [*RATIOS, 1.0, 1.0, 1.0]
    assert all(d.log_probs is None and bool(d.keep_mask.eq(1).all()) for d in decisions[3:])
    for key, value in reference.items():
        torch.testing.assert_close(losses[key], value)
    assert set(losses) - set(reference) == {'dense_path.decode.loss_ce',
                                            'dense_path.decode.acc_seg'}
    upstream = seg_scope.build(dict(seg_student(), backbone=dict(
        type='SwinTransformer', embed_dims=16, depths=(1, 1, 4, 1), num_heads=(1, 2, 4, 8),
        drop_path_rate=0.0)))
    upstream.load_state_dict(dense_path.state_dict(), strict=False)
    upstream.train()
    expected = upstream.loss(data['inputs'], data['data_samples'])
    assert losses['dense_path.decode.loss_ce'].item() == pytest.approx(
        0.5 * expected['decode.loss_ce'].item(), rel=1e-5)
    assert losses['dense_path.decode.acc_seg'].item() == pytest.approx(
        expected['decode.acc_seg'].item(), rel=1e-5)
    with pytest.raises(ValueError, match='dense_path_weight=-1 and .* must be >= 0'):
        build_trainer(seg_scope, tmp_path, teacher=None, feature_distill_weight=0,
                      logit_distill_weight=0, dense_path_weight=-1)
    with pytest.raises(ValueError, match='needs dense_path_weight > 0'):
        build_trainer(seg_scope, tmp_path, teacher=None, feature_distill_weight=0,
                      logit_distill_weight=0, dense_path_distill_weight=0.5)


def test_dense_path_distillation_is_the_kl_from_the_dense_paths_logits(seg_scope, tmp_path):
    """``dense_path_distill_weight``: KL(dense path || student) on the decode head's logits,
    recomputed here from the student run twice (sparse with the same Gumbel draws, and as an
    mmseg Swin with the same weights); its gradient flows through the student's logits only."""
    trainer, _ = build_trainer(seg_scope, tmp_path, teacher=None, feature_distill_weight=0,
                               logit_distill_weight=0, dense_path_weight=1.0,
                               dense_path_distill_weight=0.5)
    trainer.train()
    data = trainer.data_preprocessor(seg_batch(), True)
    torch.manual_seed(0)
    losses = trainer(**data, mode='loss')
    assert 'loss_logit_distill' not in losses
    upstream = seg_scope.build(dict(seg_student(), backbone=dict(
        type='SwinTransformer', embed_dims=16, depths=(1, 1, 4, 1), num_heads=(1, 2, 4, 8),
        drop_path_rate=0.0)))
    upstream.load_state_dict(trainer.state_dict(), strict=False)
    upstream.train()
    torch.manual_seed(0)
    with torch.no_grad():
        sparse = trainer.student(data['inputs'], mode='tensor')  # the same Gumbel draws
        dense = upstream(data['inputs'], mode='tensor')
    s = sparse.permute(0, 2, 3, 1).reshape(-1, 5).log_softmax(-1)
    t = dense.permute(0, 2, 3, 1).reshape(-1, 5).log_softmax(-1)
    kl = (t.exp() * (t - s)).sum(-1).mean()
    assert losses['loss_dense_path_distill'].item() == pytest.approx(0.5 * kl.item(), rel=1e-4)
    trainer.zero_grad()
    losses['loss_dense_path_distill'].backward()
    grad = trainer.decode_head.conv_seg.weight.grad.clone()
    trainer.zero_grad()
    torch.manual_seed(0)
    s = trainer.student(data['inputs'], mode='tensor').permute(0, 2, 3, 1).reshape(-1, 5)
    (0.5 * (t.exp() * (t - s.log_softmax(-1))).sum(-1).mean()).backward()
    # Only through the student's logits: a gradient through the dense path would differ.
    torch.testing.assert_close(grad, trainer.decode_head.conv_seg.weight.grad)


def test_gradients_reach_predictors_and_teacher_stays_frozen(seg_scope, tmp_path):
    trainer, _ = build_trainer(seg_scope, tmp_path)
    trainer.init_weights()
    trainer.train()
    assert not trainer.teacher.training
    data = trainer.data_preprocessor(seg_batch(), True)
    losses = trainer(**data, mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert trainer.backbone.score_predictors['2'][0].in_conv[1].weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in trainer.teacher.parameters())
    teacher_ids = {id(p) for p in trainer.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in trainer.parameters()}


def test_state_dict_is_the_students_and_predicts_identically(seg_scope, tmp_path):
    trainer, _ = build_trainer(seg_scope, tmp_path)
    trainer.init_weights()
    plain = seg_scope.build(seg_student())
    assert list(trainer.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(trainer.state_dict(), strict=True)
    trainer.eval(), plain.eval()
    data = trainer.data_preprocessor(seg_batch(), False)
    with torch.no_grad():
        a = trainer(**data, mode='predict')
        b = plain(**data, mode='predict')
        assert torch.equal(trainer(data['inputs'], mode='tensor'),
                           plain(data['inputs'], mode='tensor'))
    for x, y in zip(a, b):
        assert torch.equal(x.pred_sem_seg.data, y.pred_sem_seg.data)
    # And back: the plain student's checkpoint loads into the wrapper.
    trainer.load_state_dict(plain.state_dict(), strict=True)


def test_teacher_defaults_to_the_dense_twin_and_checks_its_checkpoint(seg_scope, tmp_path):
    trainer = seg_scope.build(dict(type='mmdvit.SparsityTrainer', student=seg_student(),
                                   teacher=dict(checkpoint=None)))
    # The dense twin: no predictors, no fast paths, upstream head.
    assert trainer.teacher_cfg['model']['backbone']['sparse_stages'] == ()
    trainer.init_weights()
    assert not hasattr(trainer.teacher.backbone, 'score_predictors') or \
        len(trainer.teacher.backbone.score_predictors) == 0
    student_keys = set(trainer.state_dict())
    dense_keys = set(trainer.teacher.state_dict())
    assert dense_keys < student_keys
    assert all('score_predictors' in k or 'fast_path' in k or 'gate' in k
               for k in student_keys - dense_keys)
    missing = seg_scope.build(dict(type='mmdvit.SparsityTrainer', student=seg_student(),
                                   teacher=dict(checkpoint=str(tmp_path / 'absent.pth'))))
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        missing.init_weights()
    wrong = tmp_path / 'wrong.pth'
    torch.save({'state_dict': {'backbone.patch_embed.projection.weight': torch.zeros(16, 3, 4, 4)}},
               wrong)
    bad = seg_scope.build(dict(type='mmdvit.SparsityTrainer', student=seg_student(),
                               teacher=dict(checkpoint=str(wrong))))
    with pytest.raises(ValueError, match='not a checkpoint of teacher.model'):
        bad.init_weights()


def test_bad_configurations_raise(seg_scope):
    with pytest.raises(ValueError, match='teacher=None'):
        seg_scope.build(dict(type='mmdvit.SparsityTrainer', student=seg_student()))
    dense = seg_student()
    dense.backbone = dict(type='ResNetV1c', depth=18)
    dense.decode_head.in_channels = 512
    with pytest.raises(TypeError, match='mmdvit dynamic backbone'):
        seg_scope.build(dict(type='mmdvit.SparsityTrainer', student=dense, teacher=None,
                             feature_distill_weight=0.0))


@contextmanager
def captured_log() -> Iterator[List[logging.LogRecord]]:
    """The records mmengine's current logger handles while the context is open."""
    logger = MMLogger.get_current_instance()
    records: List[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


UNTRAINED = 'is training outside mmdvit.SparsityTrainer'


def test_backbone_trained_without_the_wrapper_warns_once_naming_the_fix(seg_scope):
    plain = seg_scope.build(seg_student())
    data = plain.data_preprocessor(seg_batch(), True)
    with captured_log() as records:
        plain.eval()
        plain(data['inputs'], mode='tensor')
        assert not records  # inference is what a swapped backbone is for
        plain.train()
        for _ in range(2):
            plain(**data, mode='loss')
    warnings = [r for r in records if UNTRAINED in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    message = warnings[0].getMessage()
    assert message.startswith('DynamicSwinTransformer is training outside')
    assert "model = dict(type='mmdvit.SparsityTrainer', student=<this model config>," in message
    # A dense backbone has no predictors to train: no warning.
    dense = seg_scope.build(seg_student(sparse_stages=(), pruning_locs=None))
    dense.train()
    with captured_log() as records:
        dense(**dense.data_preprocessor(seg_batch(), True), mode='loss')
    assert not [r for r in records if UNTRAINED in r.getMessage()]


def test_the_wrappers_student_does_not_warn_and_loads_name_student_and_teacher(
        seg_scope, tmp_path):
    teacher_model = seg_scope.build(seg_student(keep_ratios=(1.0, 1.0, 1.0)))
    backbone = tmp_path / 'backbone.pth'
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in teacher_model.backbone.state_dict().items()}},
               backbone)
    pretrained = dict(type='Pretrained', checkpoint=str(backbone))
    trainer = seg_scope.build(dict(type='mmdvit.SparsityTrainer',
                                   student=seg_student(init_cfg=pretrained),
                                   teacher=dict(model=None, checkpoint=None)))
    assert trainer.backbone.trainer_role == 'student'
    with captured_log() as records:
        trainer.init_weights()
        trainer.train()
        trainer(**trainer.data_preprocessor(seg_batch(), True), mode='loss')
    messages = [r.getMessage() for r in records]
    assert trainer.teacher.backbone.trainer_role == 'teacher'
    assert not [m for m in messages if UNTRAINED in m]
    assert any(m.startswith('student backbone init_cfg checkpoint: DynamicSwinTransformer '
                            'loaded') for m in messages), messages
    assert any(m.startswith('teacher backbone init_cfg checkpoint: DynamicSwinTransformer '
                            'loaded') for m in messages), messages


@pytest.mark.parametrize('field, value, key', [
    ('backbone', dict(keep_ratios=(0.9, 0.7, 0.5)), 'backbone.keep_ratios'),
    ('test_cfg', dict(mode='slide'), 'test_cfg.mode'),
    ('decode_head', dict(num_classes=5, loss_decode=dict(loss_weight=2.0)),
     'decode_head.num_classes'),
])
def test_student_fields_on_the_wrapper_fail_naming_the_key_that_works(seg_scope, field, value,
                                                                      key):
    cfg = dict(type='mmdvit.SparsityTrainer', student=seg_student(), teacher=None,
               feature_distill_weight=0.0)
    # What --cfg-options model.backbone.keep_ratios=... gives on a wrapper config.
    with pytest.raises(TypeError, match=rf'model\.{key} -> model\.student\.{key}.*'
                       rf'--cfg-options model\.student\.{key}=\.\.\.'):
        seg_scope.build(dict(cfg, **{field: value}))
    with pytest.raises(TypeError, match=r"unexpected arguments \['ratio_loss'\]"):
        seg_scope.build(dict(cfg, ratio_loss=1.0))


def test_classifier_student_gets_logit_distillation():
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    student = dict(
        type='ImageClassifier',
        backbone=dict(type='mmdvit.DynamicConvNeXt', pruning_locs=(0, 1, 2),
                      arch=dict(depths=[1, 1, 4, 1], channels=[16, 32, 64, 128])),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=128,
                  loss=dict(type='CrossEntropyLoss')))
    trainer = MODELS.build(dict(type='mmdvit.SparsityTrainer', student=student,
                                teacher=dict(checkpoint=None), logit_distill_weight=0.5))
    trainer.init_weights()
    losses = trainer(torch.randn(2, 3, 64, 64), [DataSample().set_gt_label(i) for i in range(2)],
                     mode='loss')
    assert {'loss', 'loss_keep_ratio', 'loss_feat_distill', 'loss_logit_distill'} <= set(losses)
    assert losses['loss_logit_distill'] > 0
    trainer.eval()
    assert trainer(torch.randn(3, 3, 64, 64), mode='tensor').shape == (3, 5)


def test_captured_decode_head_logits_are_its_forward_output(seg_scope):
    """mmseg decode heads call ``self.forward`` in ``loss`` (no forward hook fires): the
    logits come from the hook on ``conv_seg``, and equal ``decode_head.forward(feats)``."""
    from mmdvit.models.wrappers.sparsity_trainer import capture_output
    model = seg_scope.build(seg_student()).train()
    data = model.data_preprocessor(seg_batch(), True)
    feats = model.extract_feat(data['inputs'])
    with capture_output(model.decode_head, logits=True) as logits:
        model.decode_head.loss(feats, data['data_samples'], model.train_cfg)
    assert len(logits) == 1
    torch.testing.assert_close(logits[0], model.decode_head.forward(feats), rtol=0, atol=0)
    assert not model.decode_head.conv_seg._forward_hooks  # removed on exit


def test_vit_token_distillation_uses_the_last_recorded_decision_of_the_student():
    """A DynamicViT classifier student (``distill_tokens``): the token, logit and keep-ratio
    terms equal references computed by hand from an independent forward's recorded decisions
    and outputs (forced masks: the same decisions in both forwards)."""
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    ratios = (0.7, 0.49, 0.343)
    student = dict(
        type='ImageClassifier',
        backbone=dict(type='mmdvit.DynamicViT', arch=dict(embed_dims=32, num_layers=4,
                                                          num_heads=2),
                      img_size=64, pruning_locs=(1, 2, 3), keep_ratios=ratios,
                      distill_tokens=True),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=32,
                  loss=dict(type='CrossEntropyLoss')))
    trainer = MODELS.build(dict(type='mmdvit.SparsityTrainer', student=student,
                                teacher=dict(checkpoint=None), feature_distill_weight=0.5,
                                logit_distill_weight=0.25))
    trainer.init_weights()
    force_decisions(trainer.backbone, 0, random_keep_sets(2, 16, ratios))
    trainer.train()
    x = torch.randn(2, 3, 64, 64)
    losses = trainer(x, [DataSample().set_gt_label(i) for i in range(2)], mode='loss')
    assert not instance_forwards(trainer)
    with torch.no_grad(), record_decisions() as decisions:
        student_out = trainer.backbone(x)
        logits = trainer.head(student_out)
    teacher_out = trainer.teacher.backbone(x)
    teacher_logits = trainer.teacher(x, mode='tensor')
    assert len(decisions) == 3
    kept = decisions[-1].keep_mask.bool()
    assert 0 < kept.sum() < kept.numel()
    tokens = (student_out[0] - teacher_out[0])[kept].pow(2).mean()
    p_t = teacher_logits.softmax(-1)
    kl = (p_t * (p_t.log() - logits.log_softmax(-1))).sum(-1).mean()
    ratio = sum(((d.keep_mask.mean(1) - r)**2).mean() for d, r in zip(decisions, ratios)) / 3
    assert losses['loss_feat_distill'].item() == pytest.approx(0.5 * tokens.item(), rel=1e-4)
    assert losses['loss_logit_distill'].item() == pytest.approx(0.25 * kl.item(), rel=1e-4)
    assert losses['loss_keep_ratio'].item() == pytest.approx(10 * ratio.item(), rel=1e-5)
