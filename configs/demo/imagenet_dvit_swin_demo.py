# configs/imagenet_dvit_swin.py on the demo ImageNet-layout data
# (python tools/dataset_converters/make_imagenet_demo.py), sized for a CPU: a tiny DynamicSwin
# (embed_dims 32, depths 1-1-3-1, window 2, predictors before the three stage-2 blocks), 64x64
# inputs, 5 classes, 2 epochs of batch 8 with the pretrained weights frozen in the first. It
# starts from random weights and a random dense teacher (teacher.checkpoint=None), so every loss
# term runs but the distillation targets mean nothing: set `pretrained` (a converted checkpoint
# of the same widths) for a real run. Only data, widths and schedule (no warm-up, no EMA)
# differ from the canonical config.
_base_ = '../imagenet_dvit_swin.py'

data_root = 'data/demo/imagenet'
classes = ('ball', 'car', 'kite', 'person', 'tree')
img_size = 64
pretrained = None
init = dict(type='Pretrained', checkpoint=pretrained) if pretrained else None

model = dict(
    student=dict(
        backbone=dict(embed_dims=32, depths=(1, 1, 3, 1), num_heads=(1, 2, 4, 8), window_size=2,
                      drop_path_rate=0.1, pruning_locs=(0, 1, 2),
                      init_cfg=init and dict(init, prefix='backbone.')),
        head=dict(num_classes=len(classes), in_channels=256,
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
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True, T_max=max_epochs,
                        eta_min_ratio=1e-2, convert_to_iter_based=True)]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
custom_hooks = [dict(type='mmdvit.FreezePretrainedHook', epochs=1)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=max_epochs))
