# DynamicViT LV-ViT-M (rho 0.7: keeps 0.7, 0.49, 0.343 of the patch tokens before blocks 5, 10, 15):
# dynamic-lvvit-small-r0.7_in1k.py with the LV-ViT-M backbone (embed 512, 20 blocks, 8 heads), its
# head widths and its dense teacher. Published: 83.82 top-1, 8.5 GFLOPs (docs/lvvit.md).
# Optimisation as the authors' script, and its remaining differences: those of
# dynamic-lvvit-small-r0.7_in1k.py.
#   checkpoints/lvvit-medium_in1k_mmdvit.pth   TokenLabeling's lvvit_m-56M-224-84.0.pth.tar,
#       converted with mmdvit.models.backbones.dynamic_lvvit.convert_lvvit_classifier_checkpoint
_base_ = './dynamic-lvvit-small-r0.7_in1k.py'

pretrained = 'checkpoints/lvvit-medium_in1k_mmdvit.pth'
init = dict(type='Pretrained', checkpoint=pretrained)

model = dict(
    student=dict(
        backbone=dict(arch='lvvit-m', init_cfg=dict(init, prefix='backbone.')),
        head=dict(in_channels=512, init_cfg=dict(init, prefix='head.'))),
    teacher=dict(checkpoint=pretrained))
