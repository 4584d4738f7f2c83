"""Framework adapters of the sparse core: mmcv layers that compute sparsely."""
from .sparse_conv_module import SparseConvModule

__all__ = ['SparseConvModule']
