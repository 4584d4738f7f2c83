"""Convert a classifier checkpoint of any supported layout into an mmdvit classifier checkpoint.

    python tools/model_converters/dynamicvit2mmdvit.py SRC DST [--family {convnext,lvvit,swin,vit}]
                                                       [--config CONFIG] [--force]
                                                       [--trust-checkpoint]

SRC: the DynamicViT authors' releases (DynamicSwin-T/S/B, DynamicCNN-T/S/B, DynamicViT-DeiT-S/B
/ 256, DynamicViT-LVViT-S/M: ``{'model': state_dict}``), TokenLabeling's LV-ViT releases,
official Swin (Microsoft) / ConvNeXt (Meta) / DeiT ImageNet files, timm state dicts (Swin,
ConvNeXt, DeiT / ViT), and mmpretrain / mmseg / mmdet checkpoints.
DST: ``{'state_dict': ...}`` with mmpretrain ``ImageClassifier`` keys: ``backbone.*`` (mmdvit's
layout) and the linear classifier as ``head.fc.*`` (Swin / ConvNeXt) or ``head.layers.head.*``
(DeiT), or for LV-ViT ``head.head.*`` and ``head.aux_head.*`` (``LVViTClsHead``).
``tools/test.py configs/imagenet_dvit_*.py DST`` evaluates it, and its backbone part
initialises the dense-task configs with
``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.

The script prints the detected family and layout, and every source key it could not place,
one key per line. With ``--config`` it also builds that config's model and lists the keys of new
sparsity modules (score predictors, fast paths) the converted checkpoint does not hold (expected
for a dense source: the model initialises them), the other model keys it lacks, and the
converted keys the model does not have.

SRC is a local file, read safely (docs/checkpoints.md; ``--trust-checkpoint`` unpickles it
fully). DST must differ from SRC and must not exist (``--force`` replaces it); it is
written to a temporary file in DST's folder and renamed into place, so a failed write leaves
an existing DST as it was.
"""
import argparse
import os
from typing import List, Optional, Sequence

from mmdvit.engine.cli import add_debug_argument, add_trust_argument, run_tool
from mmdvit.models.checkpoint import (NEW_MODULE_MARKERS, diff_state_dicts, extract_state_dict,
                                      load_checkpoint_file, same_file, save_checkpoint_file)
from mmdvit.models.checkpoint.classifier import (CONVERTERS, ClassifierConversion,
                                                 convert_classifier_checkpoint)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='source checkpoint (any supported layout)')
    parser.add_argument('dst', help='where to write the mmdvit checkpoint')
    parser.add_argument('--family', choices=sorted([*CONVERTERS, 'lvvit']),
                        help='model family (default: detected from the keys)')
    parser.add_argument('--config', help='also check the result against this config\'s model')
    parser.add_argument('--force', action='store_true', help='replace DST if it exists')
    add_trust_argument(parser, 'SRC')
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if same_file(args.src, args.dst):
        parser.error(f'DST {args.dst!r} is SRC: converting in place would replace the source '
                     'checkpoint. Give another DST.')
    if os.path.exists(args.dst) and not args.force:
        parser.error(f'DST {args.dst!r} exists: pass --force to replace it, or give another DST.')
    return args


def key_lines(title: str, keys: Sequence[str]) -> List[str]:
    """``title (0): none``, or ``title (n):`` followed by one indented key per line."""
    if not keys:
        return [f'{title} (0): none']
    return [f'{title} ({len(keys)}):'] + [f'    {key}' for key in keys]


def check_against_config(state: dict, config: str) -> List[str]:
    """Build ``config``'s model (no weights loaded) and return lines naming the keys of new
    sparsity modules ``state`` does not hold (the model initialises them), the other model keys
    missing from ``state``, the ``state`` keys the model does not have and shape mismatches."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    diff = diff_state_dicts(MODELS.build(cfg.model).state_dict(), state)
    new = [k for k in diff.missing if any(marker in k for marker in NEW_MODULE_MARKERS)]
    missing = [k for k in diff.missing if k not in new]
    return (key_lines('new sparsity modules, initialised by the model', new)
            + key_lines('model keys missing from the checkpoint', missing)
            + key_lines('checkpoint keys the model lacks', diff.unexpected)
            + key_lines('shape mismatches', diff.misshaped))


def main(argv: Optional[List[str]] = None) -> ClassifierConversion:
    args = parse_args(argv)
    state = extract_state_dict(load_checkpoint_file(args.src, 'converter source',
                                                    trust=args.trust_checkpoint or None))
    result = convert_classifier_checkpoint(state, args.family)
    meta = dict(source=args.src, family=result.family, layout=result.layout)
    save_checkpoint_file({'state_dict': result.state, 'meta': meta}, args.dst)
    heads = [k for k in result.state if k.startswith('head.')]
    print(f'{args.src}: {result.family} ({result.layout} layout) -> {args.dst}: '
          f'{len(result.state)} tensors, classifier head: {heads or "none"}')
    recomputed = ('dropped buffers mmdvit recomputes per input size', result.recomputed)
    lines = ((key_lines(*recomputed) if result.recomputed else [])
             + key_lines('unmapped source keys', result.unmapped))
    if args.config:
        lines += check_against_config(result.state, args.config)
    print('\n'.join(lines))
    return result


if __name__ == '__main__':
    run_tool(main)
