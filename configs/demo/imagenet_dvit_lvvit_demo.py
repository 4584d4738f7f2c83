# configs/imagenet/dynamic-lvvit-small-r0.7_in1k.py on the demo ImageNet-layout data
# (python tools/dataset_converters/make_imagenet_demo.py), sized for a CPU: a 4-block
# mmdvit.DynamicLVViT (embed_dims 64, 2 heads, MLP ratio 3, residual scale 2.0, a 16-channel
# four-convolution stem, predictors before blocks 1, 2, 3) with mmdvit.LVViTClsHead (class-token
# and token-labelling heads), 64x64 inputs (16 patch tokens), 5 classes, 2 epochs of batch 8. The
# authors' recipe of the canonical config in miniature: pretrained weights frozen in the first
# epoch, a 1-epoch linear warm-up then cosine to min_lr, cls_token / pos_embed at lr 0, EMA
# (momentum 0.1 instead of 1e-4, so that the average moves within 10 iterations) evaluated. It
# starts from random weights and a random dense teacher (teacher.checkpoint=None), so every loss
# term runs but the distillation targets mean nothing: set `pretrained` (a converted checkpoint of
# the same widths) for a real run. Only data, widths, schedule length and EMA momentum differ
# from the canonical config.
_base_ = '../imagenet/dynamic-lvvit-small-r0.7_in1k.py'

data_root = 'data/demo/imagenet'
classes = ('ball', 'car', 'kite', 'person', 'tree')
img_size = 64
pretrained = None
init = dict(type='Pretrained', checkpoint=pretrained) if pretrained else None

model = dict(
    student=dict(
        backbone=dict(
            arch=dict(_delete_=True, embed_dims=64, num_layers=4, num_heads=2, mlp_ratio=3.0,
                      skip_lam=2.0),
            img_size=img_size,
            stem_channels=16,
            pruning_locs=(1, 2, 3),
            init_cfg=init and dict(init, prefix='backbone.')),
        head=dict(num_classes=len(classes), in_channels=64,
                  init_cfg=init and dict(init, prefix='head.'))),
    teacher=dict(checkpoint=pretrained))
data_preprocessor = dict(num_classes=len(classes))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size * 8 // 7, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_epochs = 2
warmup_epochs = 1
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=warmup_epochs, end=max_epochs,
         T_max=max_epochs - warmup_epochs, eta_min_ratio=_base_.min_lr / _base_.lr,
         convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
custom_hooks = [
    dict(type='mmdvit.FreezePretrainedHook', epochs=1),
    dict(type='EMAHook', momentum=0.1, update_buffers=True, priority='ABOVE_NORMAL'),
]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=max_epochs))
