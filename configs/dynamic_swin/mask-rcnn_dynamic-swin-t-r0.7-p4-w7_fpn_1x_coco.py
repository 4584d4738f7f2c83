# Mask R-CNN + DynamicSwin-T (rho 0.7) + FPN on COCO, 1x: the canonical config.
_base_ = '../maskrcnn_dvit_swin.py'
