"""Real images for the analysis tools, prepared exactly as a model's data preprocessor does at
inference (channel order, normalisation, padding)."""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

# Colour photographs that ship inside scikit-image (no download needed).
SAMPLE_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry',
                 'hubble_deep_field', 'retina', 'colorwheel')
# ImageNet statistics (RGB), used when the model has no data preprocessor (a bare backbone).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def sample_photos(num: int) -> List[np.ndarray]:
    """The first ``num`` of scikit-image's colour photographs, (H, W, 3) uint8 RGB each."""
    from skimage import data
    if not 1 <= num <= len(SAMPLE_PHOTOS):
        raise ValueError(f'num_images={num}: scikit-image ships {len(SAMPLE_PHOTOS)} colour '
                         f'photographs; use 1..{len(SAMPLE_PHOTOS)} or pass image files.')
    return [getattr(data, name)()[..., :3] for name in SAMPLE_PHOTOS[:num]]


def read_image(path: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    with Image.open(path) as img:
        return np.asarray(img.convert('RGB'))


def resize(image: np.ndarray, shape: Optional[Sequence[int]]) -> np.ndarray:
    """Resize (H, W, 3) uint8 to ``shape`` = (H', W') (bilinear); ``None`` keeps the size."""
    if shape is None or tuple(image.shape[:2]) == tuple(shape):
        return image
    height, width = shape
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _data_sample(model: nn.Module, shape: Tuple[int, int]) -> Any:
    """An empty data sample of the model's framework carrying the image meta."""
    meta = dict(img_shape=shape, ori_shape=shape, scale_factor=(1.0, 1.0))
    package = type(model).__module__.split('.')[0]
    if package == 'mmdet':
        from mmdet.structures import DetDataSample
        return DetDataSample(metainfo=meta)
    if package == 'mmseg':
        from mmseg.structures import SegDataSample
        return SegDataSample(metainfo=meta)
    if package == 'mmpretrain':
        from mmpretrain.structures import DataSample
        return DataSample(metainfo=meta)
    return None


def preprocess(model: nn.Module, images: Sequence[np.ndarray]) -> Dict[str, Any]:
    """Turn RGB uint8 images of one size into the model's inputs.

    Models with a data preprocessor (mmseg / mmdet / mmpretrain) get the images as their data
    pipeline would deliver them (BGR channel order, as loaded by OpenCV), so its channel
    conversion, normalisation and padding apply as at inference. A bare backbone gets RGB images
    normalised with the ImageNet statistics.

    Returns:
        ``dict(inputs=(B, 3, H', W') float tensor, data_samples=list or None)``; H', W' include
        the preprocessor's padding.
    """
    shapes = {tuple(img.shape[:2]) for img in images}
    if len(shapes) != 1:
        raise ValueError(f'images of one batch must share a size, got {sorted(shapes)}')
    shape = shapes.pop()
    preprocessor = getattr(model, 'data_preprocessor', None)
    device = next(model.parameters()).device
    if preprocessor is None or not hasattr(model, 'backbone'):
        rgb = torch.stack([torch.from_numpy(np.array(img)).permute(2, 0, 1)
                           for img in images]).float()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return dict(inputs=((rgb - mean) / std).to(device), data_samples=None)
    bgr = [torch.from_numpy(np.ascontiguousarray(img[..., ::-1])).permute(2, 0, 1)
           for img in images]
    samples = [_data_sample(model, shape) for _ in images]
    data = dict(inputs=bgr, data_samples=None if samples[0] is None else samples)
    with torch.no_grad():
        out = preprocessor(data, training=False)
    if isinstance(out['inputs'], (list, tuple)):
        out['inputs'] = torch.stack(list(out['inputs']))
    return out


def model_inputs(model: nn.Module, images: Sequence[np.ndarray],
                 shape: Optional[Sequence[int]]) -> Dict[str, Any]:
    """:func:`preprocess` after resizing every image to ``shape`` (``None``: keep sizes)."""
    return preprocess(model, [resize(img, shape) for img in images])
