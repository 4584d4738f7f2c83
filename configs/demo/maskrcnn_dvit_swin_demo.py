# configs/maskrcnn_dvit_swin.py on the demo COCO-format data
# (python tools/dataset_converters/make_demo_data.py), sized for a CPU: a tiny DynamicSwin
# (embed_dims 32, depths 1-1-3-1, window 4, predictors before the three stage-2 blocks), FPN and
# RoI heads 32-64 wide, images resized to at most 256x160, 6 epochs from random initialisation.
# Only data paths, widths and schedule differ from the canonical config.
_base_ = '../maskrcnn_dvit_swin.py'

data_root = 'data/demo/coco/'
widths = [32, 64, 128, 256]
head_width = 32

model = dict(
    student=dict(
        backbone=dict(embed_dims=widths[0], depths=(1, 1, 3, 1), num_heads=(1, 2, 4, 8),
                      window_size=4, drop_path_rate=0.1, pruning_locs=(0, 1, 2), init_cfg=None),
        neck=dict(in_channels=widths, out_channels=head_width),
        rpn_head=dict(in_channels=head_width, feat_channels=head_width),
        roi_head=dict(
            bbox_roi_extractor=dict(out_channels=head_width),
            bbox_head=dict(in_channels=head_width, fc_out_channels=64),
            mask_roi_extractor=dict(out_channels=head_width),
            mask_head=dict(in_channels=head_width, conv_out_channels=head_width))),
    teacher=None,
    feature_distill_weight=0.0)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(256, 160), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 160), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_epochs = 6
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[5], gamma=0.1)
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(logger=dict(interval=5))
