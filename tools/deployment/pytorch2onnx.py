"""Export an mmdvit model to ONNX with its sparsification inside the graph, and check the file.

Examples::

    # DynamicSwin-T backbone (preset) at 224x224, random weights
    python tools/deployment/pytorch2onnx.py swin-t --out work_dirs/swin-t.onnx
    # the backbone of a trained UPerNet at 512x512, batch 2
    python tools/deployment/pytorch2onnx.py configs/upernet_dvit_swin.py \
        work_dirs/upernet/iter_160000.pth --shape 512 512 --batch 2 \
        --out work_dirs/upernet_backbone.onnx
    # the whole segmentor in its tensor mode (logits)
    python tools/deployment/pytorch2onnx.py configs/upernet_dvit_swin_whole.py CKPT --part model \
        --shape 512 512 --out work_dirs/upernet.onnx

The graph is fixed to the input shape and batch (every predictor keeps k = max(1, int(N * ratio))
positions per image, so all shapes are static); the decision is part of it and recomputed for
every input. Before the file is written, ONNX Runtime runs it on two batches of different
photographs and its outputs are compared with PyTorch's (max abs / rel difference printed;
exit status 1 and no file when off). See docs/deployment.md.
"""
import argparse
import os
from typing import List, Optional, Tuple

from mmengine.config import DictAction
from torch import nn

from mmdvit.analysis.models import (backbone_config, build_model, default_scope, load_config,
                                    model_config, set_keep_ratios)
from mmdvit.engine.cli import ToolError, add_debug_argument, add_trust_argument, run_tool
from mmdvit.models.checkpoint import extract_state_dict, load_checkpoint_file

EXPORTER_FLAGS = {'auto': None, 'dynamo': True, 'torchscript': False}
WRAPPER_PREFIXES = ('student.', )


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='model config (mmseg / mmdet / mmpretrain model, a '
                        'mmdvit.SparsityTrainer config, a bare mmdvit backbone) or a preset '
                        'name (swin-t, convnext-t, deit-s, swin-test, convnext-test, deit-test)')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint to export (default: random '
                        'weights, for trying the pipeline); read with weights_only=True')
    parser.add_argument('--checkpoint', dest='checkpoint_option', metavar='CHECKPOINT',
                        help='the same as the positional CHECKPOINT')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs='+', default=[224, 224],
                        help='input size H [W] the graph is fixed to (default 224 224)')
    parser.add_argument('--batch', type=int, default=1, help='batch size the graph is fixed to')
    parser.add_argument('--part', choices=['backbone', 'model'], default='backbone',
                        help="backbone (default) or the whole model in its 'tensor' mode")
    parser.add_argument('--opset', type=int, help='ONNX opset (default: 17 for the TorchScript '
                        "exporter, torch's default for dynamo)")
    parser.add_argument('--exporter', choices=sorted(EXPORTER_FLAGS), default='auto',
                        help='torch.onnx exporter; auto picks per backbone and falls back to '
                        'the other one')
    parser.add_argument('--keep-ratios', type=float, nargs='+',
                        help="override the backbone's keep ratios (1.0 everywhere: dense twin)")
    parser.add_argument('--rtol', type=float, default=1e-4,
                        help='tolerance on max|onnx - torch| / max|torch| (default 1e-4)')
    parser.add_argument('--force', action='store_true', help='replace an existing --out file')
    parser.add_argument('--allow-missing-keys', action='store_true',
                        help='export even if the checkpoint leaves model tensors missing (they '
                        'keep random values)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.student.backbone.keep_ratios='
                        '"(0.9,0.7,0.5)" (shipped configs), model.keep_ratios=... (presets)')
    add_trust_argument(parser, 'CHECKPOINT')
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.checkpoint and args.checkpoint_option:
        parser.error('give the checkpoint once (positional or --checkpoint)')
    args.checkpoint = args.checkpoint or args.checkpoint_option
    if len(args.shape) == 1:
        args.shape = args.shape * 2
    if len(args.shape) != 2 or min(args.shape) < 1:
        parser.error(f'--shape takes H [W] (positive), got {args.shape}')
    if args.batch < 1:
        parser.error(f'--batch must be positive, got {args.batch}')
    if not args.out.endswith('.onnx'):
        parser.error(f'--out {args.out!r}: give a file name ending in .onnx')
    return args


def build(args: argparse.Namespace) -> nn.Module:
    """The model (or its backbone) of the config, in eval mode, without weights."""
    cfg = load_config(args.config, args.cfg_options)
    model_cfg = model_config(cfg)
    if args.keep_ratios:
        model_cfg = set_keep_ratios(model_cfg, args.keep_ratios)
    if args.part == 'model':
        if 'backbone' not in model_cfg:
            raise ToolError(f'{args.config} is a bare backbone: --part model needs a model '
                            'config (segmentor / classifier); use --part backbone.')
        return build_model(model_cfg, default_scope(cfg))
    return build_model(backbone_config(model_cfg), default_scope(cfg))


def load_state(model: nn.Module, path: str, part: str, allow_missing: bool,
               trust: bool = False) -> Tuple[int, List[str]]:
    """Load ``path`` (safe reader; ``trust``: full unpickling) into ``model``: a whole-model,
    SparsityTrainer (``student.``) or backbone checkpoint. Returns (tensors loaded, missing
    model keys)."""
    state = extract_state_dict(load_checkpoint_file(path, 'checkpoint to export',
                                                    trust=trust or None))
    for prefix in WRAPPER_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.state_dict()
    if part == 'backbone' and not any(k in own for k in state):
        sub = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
        state = sub or state
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ToolError(f'checkpoint {path!r} shares no tensor with the {part} of the config '
                        f'(its keys look like {list(state)[:3]}): pass a checkpoint of this '
                        'config (or another --part).')
    model.load_state_dict(matched, strict=False)
    missing = sorted(set(own) - set(matched))
    if missing and not allow_missing:
        raise ToolError(f'checkpoint {path!r} leaves {len(missing)} tensors of the {part} '
                        f'missing or with another shape ({", ".join(missing[:5])}...): pass the '
                        'checkpoint of this config, or --allow-missing-keys to export them '
                        'with random values.')
    return len(matched), missing


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    from mmdvit.deploy import (OnnxExportError, export_and_verify, onnx_macs, onnx_op_counts,
                               spread_predictor_scores)
    if os.path.exists(args.out) and not args.force:
        raise ToolError(f'--out {args.out} exists: pass --force to replace it, or choose '
                        'another file.')
    model = build(args)
    if args.checkpoint:
        loaded, missing = load_state(model, args.checkpoint, args.part, args.allow_missing_keys,
                                     args.trust_checkpoint)
        print(f'loaded {loaded} tensors from {args.checkpoint}'
              + (f' ({len(missing)} missing, random)' if missing else ''))
    else:
        count = spread_predictor_scores(model)
        print('no --checkpoint: random weights (only for trying the pipeline); the '
              f'{count} score predictors are drawn so that their scores are far apart '
              '(see spread_predictor_scores)')
    try:
        result = export_and_verify(model, args.out, args.shape, args.batch, args.opset,
                                   EXPORTER_FLAGS[args.exporter], overwrite=args.force,
                                   rtol=args.rtol)
    except (OnnxExportError, FileExistsError) as err:
        raise ToolError(str(err)) from None
    for name, error in result.failures.items():
        print(f'the {name} exporter failed ({error}); used the {result.exporter} exporter')
    ops = onnx_op_counts(result.path)
    size = os.path.getsize(result.path) / 2**20
    print(f'wrote {result.path} ({size:.1f} MiB): {result.exporter} exporter, opset '
          f'{result.opset}, {sum(ops.values())} nodes ({ops.get("TopK", 0)} TopK), '
          f'{onnx_macs(result.path) / 1e9 / args.batch:.3f} GMACs per image')
    print('check: ' + result.check.summary())
    return result.to_dict()


if __name__ == '__main__':
    run_tool(main)
