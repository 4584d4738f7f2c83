# configs/upernet_dvit_convnext.py on the demo ADE20K-layout data
# (python tools/dataset_converters/make_demo_data.py), sized for a CPU: a tiny DynamicConvNeXt
# (channels 32-256, depths 1-1-3-1, predictors before the three stage-2 blocks), 128x128 crops,
# 300 iterations of batch 4 from random initialisation. Only data paths, widths and schedule
# differ from the canonical config. (AMP needs a GPU: on CPU tools/train.py trains in float32.)
_base_ = '../upernet_dvit_convnext.py'

data_root = 'data/demo/ade20k'
crop_size = (128, 128)
widths = [32, 64, 128, 256]

model = dict(
    student=dict(
        data_preprocessor=dict(size=crop_size),
        backbone=dict(arch=dict(_delete_=True, depths=[1, 1, 3, 1], channels=widths),
                      drop_path_rate=0.1, pruning_locs=(0, 1, 2), init_cfg=None),
        decode_head=dict(in_channels=widths, channels=64),
        auxiliary_head=dict(in_channels=widths[2], channels=32),
        test_cfg=dict(crop_size=crop_size, stride=(85, 85))),
    teacher=None,
    feature_distill_weight=0.0)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=2,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 300
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=30, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters))
