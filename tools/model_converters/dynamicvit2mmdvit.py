"""Convert a classifier checkpoint of any supported layout into an mmdvit classifier checkpoint.

    python tools/model_converters/dynamicvit2mmdvit.py SRC DST [--family {swin,convnext,vit}]
                                                       [--config CONFIG]

SRC: the DynamicViT authors' releases (DynamicSwin-T/S/B, DynamicCNN-T/S/B, DynamicViT-DeiT-S/B:
``{'model': state_dict}``), official Swin (Microsoft) / ConvNeXt (Meta) / DeiT ImageNet files,
timm state dicts (Swin, ConvNeXt, DeiT / ViT), and mmpretrain / mmseg / mmdet checkpoints.
DST: ``{'state_dict': ...}`` with mmpretrain ``ImageClassifier`` keys: ``backbone.*`` (mmdvit's
layout) and the linear classifier as ``head.fc.*`` (Swin / ConvNeXt) or ``head.layers.head.*``
(DeiT). ``tools/test.py configs/imagenet_dvit_*.py DST`` evaluates it, and its backbone part
initialises the dense-task configs with
``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.

The script prints the detected family and layout, and every source key it could not place.
With ``--config`` it also builds that config's model and lists the model keys the converted
checkpoint lacks and the converted keys the model does not have.
"""
import argparse
import sys
from typing import List, Optional

import torch

from mmdvit.models.checkpoint import extract_state_dict, load_checkpoint_file
from mmdvit.models.checkpoint.classifier import (CONVERTERS, ClassifierConversion,
                                                 convert_classifier_checkpoint)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='source checkpoint (any supported layout)')
    parser.add_argument('dst', help='where to write the mmdvit checkpoint')
    parser.add_argument('--family', choices=sorted(CONVERTERS),
                        help='model family (default: detected from the keys)')
    parser.add_argument('--config', help='also check the result against this config\'s model')
    return parser.parse_args(argv)


def check_against_config(state: dict, config: str) -> List[str]:
    """Build ``config``'s model (no weights loaded) and return lines naming the model keys
    missing from ``state`` and the ``state`` keys the model does not have."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    own = MODELS.build(cfg.model).state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}' for k in state
              if k in own and state[k].shape != own[k].shape]
    return [f'model keys missing from the checkpoint ({len(missing)}): {missing}',
            f'checkpoint keys the model lacks ({len(unexpected)}): {unexpected}',
            f'shape mismatches ({len(shapes)}): {shapes}']


def main(argv: Optional[List[str]] = None) -> ClassifierConversion:
    args = parse_args(argv)
    state = extract_state_dict(load_checkpoint_file(args.src))
    result = convert_classifier_checkpoint(state, args.family)
    meta = dict(source=args.src, family=result.family, layout=result.layout)
    torch.save({'state_dict': result.state, 'meta': meta}, args.dst)
    heads = [k for k in result.state if k.startswith('head.')]
    print(f'{args.src}: {result.family} ({result.layout} layout) -> {args.dst}: '
          f'{len(result.state)} tensors, classifier head: {heads or "none"}')
    if result.recomputed:
        print(f'dropped {len(result.recomputed)} buffers mmdvit recomputes per input size: '
              f'{result.recomputed}')
    print(f'unmapped source keys ({len(result.unmapped)}): {result.unmapped}')
    if args.config:
        for line in check_against_config(result.state, args.config):
            print(line)
    return result


if __name__ == '__main__':
    main(sys.argv[1:])
