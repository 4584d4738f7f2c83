"""``torch.compile`` of the part of a model that the test loop runs on fixed-size tensors.

``tools/test.py --compile MODE`` compiles, with ``dynamic=False``:

- segmentors (mmseg ``EncoderDecoder``): ``encode_decode``, the backbone, neck and decode head
  up to the logits at the input size (whole and sliding-window inference alike);
- detectors and classifiers (mmdet, mmpretrain): ``extract_feat`` (backbone and neck) and the
  ``forward`` of the dense head (``rpn_head``, a single-stage ``bbox_head``, a classifier's
  ``head``); proposals, NMS and the RoI heads, whose shapes depend on the data, stay eager.

``MODE`` is torch.compile's: ``default``, ``reduce-overhead`` (CUDA graphs on a GPU: the whole
compiled region replays as one launch; on CPU the same as ``default``) or ``max-autotune``.
Each new input shape compiles once (``dynamic=False``); the first test batch is run before the
loop starts (:class:`CompileHook`), so the compilation is not counted in the loop's timings.
"""
from typing import List, Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.runner.amp import autocast
from torch import nn

COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune')
# Calls before a compiled region runs at its final speed: CUDA graphs are recorded on the
# second call (the first one warms up).
WARMUP_CALLS = {'reduce-overhead': 2}
HEADS = ('rpn_head', 'bbox_head', 'head')
WRAPPERS = ('module', 'student')  # DDP / test-time augmentation, mmdvit.SparsityTrainer


def inference_model(model: nn.Module) -> nn.Module:
    """The model that predicts: ``model`` without its wrappers (``module`` of DDP and of the
    test-time augmentation models, ``student`` of ``mmdvit.SparsityTrainer``)."""
    while True:
        inner = next((getattr(model, w) for w in WRAPPERS
                      if isinstance(getattr(model, w, None), nn.Module)), None)
        if inner is None:
            return model
        model = inner


def compile_model(model: nn.Module, mode: str) -> List[str]:
    """Replace the fixed-shape methods of the predicting model (see the module docstring) with
    ``torch.compile(method, mode=mode, dynamic=False)``, in place.

    Returns:
        The names of the compiled methods, e.g. ``['encode_decode']`` or
        ``['extract_feat', 'rpn_head.forward']``.

    Raises:
        ValueError: for an unknown mode, or a model with none of those methods.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f'--compile {mode!r}: use one of {COMPILE_MODES}')
    core = inference_model(model)
    if hasattr(core, 'encode_decode'):
        targets = [(core, 'encode_decode', 'encode_decode')]
    else:
        targets = [(core, 'extract_feat', 'extract_feat')]
        targets += [(getattr(core, h), 'forward', f'{h}.forward') for h in HEADS
                    if isinstance(getattr(core, h, None), nn.Module)]
    targets = [t for t in targets if callable(getattr(t[0], t[1], None))]
    if not targets:
        raise ValueError(f'--compile: {type(core).__name__} has neither encode_decode nor '
                         'extract_feat; it is not an mmseg segmentor, mmdet detector or '
                         'mmpretrain classifier. Run without --compile.')
    for owner, attribute, _ in targets:
        method = getattr(owner, attribute)
        setattr(owner, attribute, torch.compile(method, mode=mode, dynamic=False))
    return [name for _, _, name in targets]


class CompileHook(Hook):
    """Compiles the runner's model (:func:`compile_model`) before the test loop and runs its
    first batch ``WARMUP_CALLS`` times (in eval mode, without gradients, under the loop's
    autocast setting, so the loop reuses what was compiled) before the loop's timer starts.

    Register it with the highest priority: it must run before the timer hook's
    ``before_test_epoch``.
    """

    priority = 'HIGHEST'

    def __init__(self, mode: str) -> None:
        if mode not in COMPILE_MODES:
            raise ValueError(f'--compile {mode!r}: use one of {COMPILE_MODES}')
        self.mode = mode
        self.compiled: Optional[Sequence[str]] = None

    def before_test_epoch(self, runner) -> None:
        self.compiled = compile_model(runner.model, self.mode)
        runner.logger.info(f'torch.compile (mode {self.mode}, dynamic=False) of '
                           f"{', '.join(self.compiled)}; compiling on the first test batch")
        runner.model.eval()
        batch = next(iter(runner.test_loop.dataloader))
        fp16 = getattr(runner.test_loop, 'fp16', False)
        with torch.no_grad(), autocast(enabled=fp16):
            for _ in range(WARMUP_CALLS.get(self.mode, 1)):
                runner.model.test_step(batch)
