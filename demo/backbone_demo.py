"""Build DynamicSwin-T from the real mmseg UPerNet config, run it on a photograph and report
what it kept and what that saves.

    python demo/backbone_demo.py [--size 512] [--keep-ratios 0.7 0.5 0.3]
"""
import argparse

import numpy as np
import torch
from mmengine.config import Config

from mmdvit.analysis import count_macs
from mmdvit.sparse import record_decisions

CONFIG = """
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
model = dict(backbone=dict(type='mmdvit.DynamicSwinTransformer', init_cfg=None))
"""


def load_photo(size: int) -> torch.Tensor:
    """scikit-image's astronaut photograph as a normalised (1, 3, size, size) batch."""
    from skimage import data, transform
    image = transform.resize(data.astronaut(), (size, size), anti_aliasing=True)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    image = (image - mean) / std
    return torch.from_numpy(image.transpose(2, 0, 1)).float().unsqueeze(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--keep-ratios', type=float, nargs='+', default=None)
    args = parser.parse_args()

    from mmseg.registry import MODELS
    cfg = Config.fromstring(CONFIG, '.py')
    if args.keep_ratios:
        cfg.model.backbone.keep_ratios = tuple(args.keep_ratios)
    dynamic = MODELS.build(cfg.model.backbone).eval()
    dense = MODELS.build(dict(cfg.model.backbone, sparse_stages=())).eval()
    x = load_photo(args.size)
    with torch.no_grad(), record_decisions() as decisions:
        outs = dynamic(x)
    print(f'DynamicSwin-T from {cfg.model.backbone.type} (mmseg UPerNet config), input '
          f'{tuple(x.shape)}; outputs: ' + ', '.join(str(tuple(o.shape)) for o in outs))
    for d in decisions:
        print(f'  predictor {d.index} (stage {d.stage}, {d.hw_shape[0]}x{d.hw_shape[1]}): '
              f'kept {d.num_keep} positions = {d.kept_fraction.mean().item():.3f} '
              f'(target {d.keep_ratio:g})')
    macs_dense, macs_dynamic = count_macs(dense, x) / 1e9, count_macs(dynamic, x) / 1e9
    print(f'backbone GMACs at {args.size}x{args.size}: dense {macs_dense:.2f}, dynamic '
          f'{macs_dynamic:.2f} ({macs_dynamic / macs_dense:.1%} of dense; random weights, so the '
          f'kept positions are not yet meaningful)')


if __name__ == '__main__':
    main()
