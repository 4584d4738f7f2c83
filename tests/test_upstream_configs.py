"""The registered backbones build from configs that inherit the real upstream ones, by their
``mmdvit.`` type alone (no custom_imports), and train inside mmseg / mmdet models."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmdvit.models import keep_ratio_loss
from mmdvit.sparse import record_decisions
from helpers import readme_python_blocks

SWIN_SEG = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
CONVNEXT_SEG = 'mmseg::convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py'
SWIN_DET = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'


def load(tmp_path, base, body):
    path = tmp_path / 'cfg.py'
    path.write_text(f"_base_ = '{base}'\n{body}\n")
    return Config.fromfile(str(path))


def seg_inputs(batch=2, size=64):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(batch):
        sample = SegDataSample()
        sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size),
                                 pad_shape=(size, size), padding_size=[0, 0, 0, 0]))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, size, size)))
        samples.append(sample)
    return dict(inputs=[torch.rand(3, size, size) * 255 for _ in range(batch)],
                data_samples=samples)


TINY_SEG = """
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(type='mmdvit.{backbone}', init_cfg=None, {args}),
    decode_head=dict(in_channels={chans}, channels=16, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels={chans[2]}, channels=8, norm_cfg=norm_cfg))
"""


@pytest.mark.parametrize('base, backbone, args, chans', [
    (SWIN_SEG, 'DynamicSwinTransformer',
     'embed_dims=16, depths=(1, 1, 4, 1), num_heads=(1, 2, 4, 8), pruning_locs=(0, 1, 2)',
     [16, 32, 64, 128]),
    (CONVNEXT_SEG, 'DynamicConvNeXt',
     "arch=dict(_delete_=True, depths=[1, 1, 4, 1], channels=[16, 32, 64, 128]), "
     "pruning_locs=(0, 1, 2)",
     [16, 32, 64, 128]),
])
def test_segmentor_from_upstream_config_trains_and_predicts(tmp_path, base, backbone, args, chans):
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    cfg = load(tmp_path, base, TINY_SEG.format(backbone=backbone, args=args, chans=chans))
    assert cfg.model.backbone.type == f'mmdvit.{backbone}'
    model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == backbone
    model.train()
    data = model.data_preprocessor(seg_inputs(), training=True)
    with record_decisions() as decisions:
        losses = model.loss(data['inputs'], data['data_samples'])
    assert len(decisions) == 3 and all(d.keep_mask.requires_grad for d in decisions)
    total = sum(v for k, v in losses.items() if 'loss' in k) + keep_ratio_loss(decisions)
    total.backward()
    for predictor in model.backbone.score_predictors['2']:
        assert predictor.in_conv[1].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad(), record_decisions() as decisions:
        data = model.data_preprocessor(seg_inputs(), training=False)
        preds = model.predict(data['inputs'], data['data_samples'])
    assert preds[0].pred_sem_seg.data.shape == (1, 64, 64)
    assert [d.num_keep for d in decisions] == [
        int(4 * 4 * r) for r in (0.7, 0.5, 0.3)]


def test_published_swin_t_and_convnext_t_build_at_full_size(tmp_path):
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    cfg = load(tmp_path, SWIN_SEG, "model = dict(backbone=dict("
               "type='mmdvit.DynamicSwinTransformer', init_cfg=None))")
    swin = MODELS.build(cfg.model.backbone)
    assert swin.schedule[2].pruning_locs == (1, 2, 3)
    assert swin.keep_ratios == [0.7, 0.5, 0.3]
    # The upstream config's arguments carry over (drop_path_rate=0.3, patch_norm, ...).
    assert swin.stages[3].blocks[1].drop_path.drop_prob == pytest.approx(0.3)
    cfg = load(tmp_path, CONVNEXT_SEG, "model = dict(backbone=dict("
               "type='mmdvit.DynamicConvNeXt', init_cfg=None, keep_ratios=(0.9, 0.7, 0.5)))")
    convnext = MODELS.build(cfg.model.backbone)
    assert convnext.schedule[2].pruning_locs == (1, 2, 3)
    assert convnext.keep_ratios == [0.9, 0.7, 0.5]
    assert convnext.out_indices == (0, 1, 2, 3) and not convnext.gap_before_final_norm


def test_mask_rcnn_from_upstream_config_trains(tmp_path):
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    cfg = load(tmp_path, SWIN_DET, """
model = dict(
    backbone=dict(type='mmdvit.DynamicSwinTransformer', init_cfg=None, embed_dims=16,
                  depths=(1, 1, 4, 1), num_heads=(1, 2, 4, 8), pruning_locs=(0, 1, 2)),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=16),
                  bbox_head=dict(in_channels=16, fc_out_channels=16),
                  mask_roi_extractor=dict(out_channels=16),
                  mask_head=dict(in_channels=16, conv_out_channels=16)))
""")
    model = MODELS.build(cfg.model)
    samples = []
    for _ in range(2):
        sample = DetDataSample()
        sample.set_metainfo(dict(img_shape=(96, 128), ori_shape=(96, 128), pad_shape=(96, 128),
                                 scale_factor=(1.0, 1.0), batch_input_shape=(96, 128)))
        inst = InstanceData()
        inst.bboxes = torch.tensor([[10.0, 10.0, 60.0, 50.0]])
        inst.labels = torch.tensor([3])
        mask = torch.zeros(1, 96, 128, dtype=torch.uint8)
        mask[:, 10:50, 10:60] = 1
        inst.masks = BitmapMasks(mask.numpy(), 96, 128)
        sample.gt_instances = inst
        samples.append(sample)
    data = model.data_preprocessor(
        dict(inputs=[torch.rand(3, 96, 128) * 255 for _ in range(2)], data_samples=samples), True)
    model.train()
    with record_decisions() as decisions:
        losses = model.loss(data['inputs'], data['data_samples'])
    assert {'loss_rpn_cls', 'loss_bbox', 'loss_mask'} <= set(losses)
    total = sum(v if torch.is_tensor(v) else sum(v) for k, v in losses.items() if 'loss' in k)
    (total + keep_ratio_loss(decisions)).backward()
    assert model.backbone.score_predictors['2'][0].in_conv[1].weight.grad.abs().sum() > 0


def test_classifier_builds_in_the_mmpretrain_scope():
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='mmdvit.DynamicConvNeXt', pruning_locs=(0, 1, 2),
                      arch=dict(depths=[1, 1, 4, 1], channels=[16, 32, 64, 128])),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=128,
                  loss=dict(type='CrossEntropyLoss'))))
    samples = [DataSample().set_gt_label(i) for i in range(2)]
    with record_decisions() as decisions:
        losses = model.loss(torch.randn(2, 3, 64, 64), samples)
    (losses['loss'] + keep_ratio_loss(decisions)).backward()
    assert model.backbone.score_predictors['2'][2].out_conv[0].weight.grad is not None


def test_layer_decay_constructor_gives_predictors_the_full_learning_rate():
    """mmseg's LearningRateDecayOptimizerConstructor: dense ConvNeXt parameters decay by
    stage; score predictors sit outside ``stages`` and get the head's (full) rate; fast paths
    share their block's rate."""
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    from mmseg.engine.optimizers import LearningRateDecayOptimizerConstructor
    model = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='mmdvit.DynamicConvNeXt', out_indices=(0, 1, 2, 3),
                      gap_before_final_norm=False, pruning_locs=(0, 1, 2),
                      arch=dict(depths=[1, 1, 4, 1], channels=[16, 32, 64, 128])),
        decode_head=dict(type='FCNHead', in_channels=128, in_index=3, channels=8,
                         num_convs=1, num_classes=3)))
    constructor = LearningRateDecayOptimizerConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1.0)),
        dict(decay_rate=0.5, decay_type='stage_wise', num_layers=6))
    optim = constructor(model)
    lr = {name: g['lr'] for g in optim.param_groups for name in g.get('param_names', [])}
    head_lr = lr['decode_head.conv_seg.weight']
    assert lr['backbone.score_predictors.2.0.in_conv.1.weight'] == head_lr == 1.0
    block_lr = lr['backbone.stages.2.1.pointwise_conv1.weight']
    assert lr['backbone.stages.2.1.fast_path.1.weight'] == block_lr
    assert lr['backbone.stages.0.0.pointwise_conv1.weight'] < block_lr < head_lr


def test_readme_examples_build_a_swap_for_inference_and_a_wrapper_for_training():
    """The README's first two config examples, as printed: the inference-only swap is the plain
    segmentor (whose predictors nothing trains), the training one the wrapper around it."""
    from mmseg.registry import MODELS
    swap, wrapped = readme_python_blocks(SWIN_SEG)[:2]
    init_default_scope('mmseg')
    plain = MODELS.build(Config.fromstring(swap, '.py').model)
    trainer = MODELS.build(Config.fromstring(wrapped, '.py').model)
    assert type(plain).__name__ == 'EncoderDecoder' and plain.backbone.trainer_role is None
    assert type(trainer).__name__ == 'SparsityTrainer'
    assert trainer.backbone.trainer_role == 'student'
    assert list(plain.state_dict()) == list(trainer.state_dict())
