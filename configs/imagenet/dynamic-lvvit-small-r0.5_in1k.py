# DynamicViT LV-ViT-S, rho 0.5 (keeps 0.5, 0.25, 0.125 of the patch tokens before blocks 4, 8, 12):
# dynamic-lvvit-small-r0.7_in1k.py with the smaller keep ratios. Published: 81.97 top-1, 3.7 GFLOPs
# (docs/lvvit.md).
# Optimisation as the authors' script, and its remaining differences: those of
# dynamic-lvvit-small-r0.7_in1k.py.
#   checkpoints/lvvit-small_in1k_mmdvit.pth   (as in dynamic-lvvit-small-r0.7_in1k.py)
_base_ = './dynamic-lvvit-small-r0.7_in1k.py'

rho = 0.5

model = dict(student=dict(backbone=dict(keep_ratios=(rho, rho**2, rho**3))))
