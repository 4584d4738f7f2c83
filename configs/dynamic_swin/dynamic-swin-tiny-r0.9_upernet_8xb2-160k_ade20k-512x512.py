# UPerNet + DynamicSwin-T, rho 0.9 (keep ratios 0.9, 0.7, 0.5) on ADE20K.
_base_ = '../upernet_dvit_swin.py'

model = dict(student=dict(backbone=dict(keep_ratios=(0.9, 0.7, 0.5))))
