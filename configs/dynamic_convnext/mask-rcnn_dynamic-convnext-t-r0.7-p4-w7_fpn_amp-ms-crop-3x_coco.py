# Mask R-CNN + DynamicConvNeXt-T (rho 0.7) + FPN on COCO, 3x with AMP: the canonical config.
_base_ = '../maskrcnn_dvit_convnext.py'
