# UPerNet + DynamicConvNeXt-T, rho 0.7 (keep ratios 0.7, 0.5, 0.3) on ADE20K: the canonical
# config.
_base_ = '../upernet_dvit_convnext.py'
