"""mmdvit: dynamic spatial sparsification for OpenMMLab backbones."""
__version__ = '0.1.0'
