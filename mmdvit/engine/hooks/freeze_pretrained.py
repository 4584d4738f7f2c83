"""Freeze the pretrained weights for the first epochs of sparsity training (docs/method.md)."""
from typing import List, Optional, Sequence

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch import nn

from ...models.checkpoint import NEW_MODULE_MARKERS
from ...registry import HOOKS

DataBatch = Optional[dict]


@HOOKS.register_module()
class FreezePretrainedHook(Hook):
    """Train only the modules new to the dynamic model (score predictors, fast paths) for the
    first ``epochs`` epochs (or ``iters`` iterations), then everything.

    The published classification recipe keeps the pretrained backbone (and head) fixed while
    the new modules settle. Frozen parameters get ``requires_grad=False``, so they receive no
    gradient, no weight decay and no optimizer state; gradients still flow *through* them to
    the predictors. Under DistributedDataParallel set ``find_unused_parameters = True`` in the
    config (the classification configs do), since the frozen parameters get no gradient.

    Args:
        epochs: number of epochs to keep frozen (epoch-based loops).
        iters: number of iterations to keep frozen (use instead of ``epochs``).
        trainable: substrings of the parameter names that stay trainable throughout (default:
            the new modules, :data:`~mmdvit.models.checkpoint.NEW_MODULE_MARKERS`).
    """

    priority = 'VERY_HIGH'

    def __init__(self, epochs: Optional[int] = None, iters: Optional[int] = None,
                 trainable: Sequence[str] = NEW_MODULE_MARKERS) -> None:
        if (epochs is None) == (iters is None):
            raise ValueError('FreezePretrainedHook: give exactly one of epochs and iters '
                             f'(got epochs={epochs}, iters={iters}).')
        if (epochs if epochs is not None else iters) < 0:
            raise ValueError('FreezePretrainedHook: the frozen period must be >= 0.')
        self.epochs, self.iters = epochs, iters
        self.trainable = tuple(trainable)
        self._frozen: List[nn.Parameter] = []

    def _set(self, runner, frozen: bool) -> None:
        """Freeze (or release what this hook froze): parameters frozen for other reasons, such
        as ``frozen_stages``, stay frozen."""
        if frozen == bool(self._frozen):
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if frozen:
            params = list(model.named_parameters())
            self._frozen = [p for name, p in params if p.requires_grad and not any(
                marker in name for marker in self.trainable)]
            if len(self._frozen) == sum(p.requires_grad for _, p in params):
                raise ValueError(f'FreezePretrainedHook would freeze every trainable parameter: '
                                 f'no parameter name contains any of {self.trainable}.')
        for param in self._frozen:
            param.requires_grad = not frozen
        print_log(f'FreezePretrainedHook: {len(self._frozen)} pretrained parameter tensors '
                  f'{"frozen" if frozen else "trainable again"} (epoch {runner.epoch}, '
                  f'iteration {runner.iter})', logger='current')
        if not frozen:
            self._frozen = []

    def before_train_iter(self, runner, batch_idx: int, data_batch: DataBatch = None) -> None:
        if self.epochs is not None:
            self._set(runner, runner.epoch < self.epochs)
        else:
            self._set(runner, runner.iter < self.iters)
