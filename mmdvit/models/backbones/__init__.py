from .dynamic_convnext import DynamicConvNeXt
from .dynamic_lvvit import DynamicLVViT
from .dynamic_swin import DynamicSwinTransformer
from .dynamic_vit import DynamicViT

__all__ = ['DynamicConvNeXt', 'DynamicLVViT', 'DynamicSwinTransformer', 'DynamicViT']
