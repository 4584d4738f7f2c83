from .dynamic_convnext import DynamicConvNeXt
from .dynamic_swin import DynamicSwinTransformer

__all__ = ['DynamicConvNeXt', 'DynamicSwinTransformer']
