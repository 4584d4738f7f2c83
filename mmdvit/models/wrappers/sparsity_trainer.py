"""One model wrapper that adds sparsity training to any OpenMMLab segmentor, detector or
classifier: the keep-ratio loss and distillation from a frozen dense teacher."""
import copy
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
from mmengine.config import ConfigDict
from mmengine.logging import print_log
from mmengine.model import BaseModel
from torch import Tensor, nn

from ...registry import MODELS
from ..checkpoint import load_pretrained
from ..sparse import keep_ratio_loss
from .distill import feature_mse, logit_kl

# Where each framework keeps the module whose output is the per-class logits.
LOGIT_MODULES = ('decode_head', 'head')


def build_in_current_scope(cfg: dict) -> nn.Module:
    """Build a model config in the caller's default scope (mmseg / mmdet / mmpretrain)."""
    try:
        return MODELS.build(cfg)
    except KeyError as err:
        raise KeyError(f'{err}. The student / teacher of mmdvit.SparsityTrainer is built in the '
                       "config's default_scope: set default_scope = 'mmseg' / 'mmdet' / "
                       "'mmpretrain' (upstream base configs do) or prefix the type, e.g. "
                       "'mmseg.EncoderDecoder'.") from None


def dense_twin(cfg: dict, num_predictors: int) -> dict:
    """The student's config with every keep ratio set to 1.0: at inference (the teacher is
    always in eval mode) a dynamic backbone then computes exactly its dense counterpart."""
    cfg = copy.deepcopy(cfg)
    cfg['backbone']['keep_ratios'] = (1.0, ) * num_predictors
    return cfg


@MODELS.register_module()
class SparsityTrainer(BaseModel):
    """Sparsity training around a student model with a dynamic backbone.

    The student's children (``data_preprocessor``, ``backbone``, ``neck``, ``decode_head``,
    ``head``, ...) become this wrapper's children, so the state dict has exactly the student's
    keys (a checkpoint loads into the plain student config and back) and optimizer
    constructors see the usual ``backbone.*`` names. The teacher is held outside the module
    tree: frozen, always in eval mode, never saved, never in the optimizer; it is built (and
    its checkpoint read) when training starts, so evaluation needs no teacher.

    ``mode='loss'`` returns the student's losses plus ``loss_keep_ratio`` (and
    ``loss_feat_distill`` / ``loss_logit_distill`` when enabled) and the logged, unsummed
    ``kept.<i>`` (kept fraction of predictor i); ``predict`` / ``tensor`` delegate to the
    student.

    Args:
        student: the model config (``EncoderDecoder``, ``MaskRCNN``, ``ImageClassifier``, ...)
            whose backbone is an mmdvit dynamic backbone.
        teacher: ``None`` (no distillation) or ``dict(model=<config or None>,
            checkpoint=<path or None>)``. ``model=None`` takes the student's config with all keep
            ratios at 1.0 (the dense model). ``checkpoint`` is a full-model checkpoint of the
            teacher (keys ``backbone.*``, heads); ``None`` initialises the teacher from its
            config's ``init_cfg`` (e.g. ImageNet backbone weights: then only feature
            distillation is meaningful).
        ratio_loss_weight: weight of the keep-ratio loss (published: 10.0 for Swin / ConvNeXt).
        feature_distill_weight: weight of the MSE between student and teacher backbone outputs
            (all ``out_indices``). A backbone may define
            ``feature_distill_loss(student_outs, teacher_outs)`` to replace the plain MSE.
        logit_distill_weight: weight of KL(teacher || student) on the class logits of
            ``decode_head`` (segmentation) or ``head`` (classification). Detectors: keep 0.
        data_preprocessor: used by the student when its own config has none (mmengine's
            Runner passes a config's top-level ``data_preprocessor`` here).
    """

    def __init__(self,
                 student: dict,
                 teacher: Optional[dict] = None,
                 ratio_loss_weight: float = 10.0,
                 feature_distill_weight: float = 0.5,
                 logit_distill_weight: float = 0.0,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if data_preprocessor is not None and 'data_preprocessor' not in student:
            student = dict(student, data_preprocessor=data_preprocessor)
        student_model = build_in_current_scope(student)
        self.__dict__['_student'] = student_model
        for name, module in student_model.named_children():
            setattr(self, name, module)
        if not hasattr(student_model, 'backbone') or not hasattr(student_model.backbone,
                                                                  'sparsity_decisions'):
            raise TypeError('the student of mmdvit.SparsityTrainer needs an mmdvit dynamic '
                            "backbone (type='mmdvit.DynamicSwinTransformer', ...)")
        distill = feature_distill_weight > 0 or logit_distill_weight > 0
        if distill and teacher is None:
            raise ValueError('distillation weights are set but teacher=None: give '
                             'teacher=dict(model=..., checkpoint=...) or set the weights to 0.')
        self.logit_module = None
        if logit_distill_weight > 0:
            self.logit_module = next((n for n in LOGIT_MODULES if hasattr(student_model, n)),
                                     None)
            if self.logit_module is None:
                raise ValueError('logit_distill_weight > 0 needs a student with a decode_head '
                                 '(segmentation) or head (classification)')
        self.teacher_cfg = None
        if teacher is not None:
            teacher = dict(teacher)
            unknown = set(teacher) - {'model', 'checkpoint'}
            if unknown:
                raise ValueError(f'teacher has unknown keys {sorted(unknown)}; use model and '
                                 'checkpoint')
            model_cfg = teacher.get('model') or dense_twin(
                student, len(student_model.backbone.keep_ratios))
            self.teacher_cfg = dict(model=ConfigDict(model_cfg),
                                    checkpoint=teacher.get('checkpoint'))
        self.ratio_loss_weight = ratio_loss_weight
        self.feature_distill_weight = feature_distill_weight
        self.logit_distill_weight = logit_distill_weight
        self.__dict__['_teacher'] = None

    @property
    def student(self) -> nn.Module:
        """The wrapped student model (shares every module with this wrapper)."""
        return self.__dict__['_student']

    @property
    def teacher(self) -> Optional[nn.Module]:
        """The frozen dense teacher, once built (see :meth:`build_teacher`)."""
        return self.__dict__['_teacher']

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            student = self.__dict__.get('_student')
            if student is None:
                raise
            return getattr(student, name)

    def init_weights(self) -> None:
        """Initialise the student (its backbone loads its pretrained weights) and build the
        teacher."""
        super().init_weights()
        self.build_teacher()

    def build_teacher(self) -> Optional[nn.Module]:
        """Build the frozen teacher once, load its checkpoint, place it beside the student."""
        if self.teacher is not None or self.teacher_cfg is None:
            return self.teacher
        teacher = build_in_current_scope(self.teacher_cfg['model'])
        checkpoint = self.teacher_cfg['checkpoint']
        if checkpoint is None:
            teacher.init_weights()
            print_log('SparsityTrainer: teacher has no checkpoint; initialised from its config '
                      '(heads are random: only feature distillation is meaningful)',
                      logger='current', level=30)
        else:
            report = load_pretrained(teacher, checkpoint, lambda s: (s, 'full model', []),
                                     prefix=None, role='teacher checkpoint')
            if report.missing:
                raise ValueError(f'teacher checkpoint {checkpoint!r} lacks {len(report.missing)} '
                                 f'keys of the teacher model, e.g. {report.missing[:5]}: it is '
                                 'not a checkpoint of teacher.model')
        teacher.eval()
        for param in teacher.parameters():
            param.requires_grad = False
        param = next(self.parameters(), None)
        if param is not None:
            teacher.to(param.device)
        self.__dict__['_teacher'] = teacher
        return teacher

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.teacher is not None:
            self.teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True) -> 'SparsityTrainer':
        super().train(mode)
        self.student.training = mode
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[List] = None,
                mode: str = 'tensor') -> Union[Dict[str, Tensor], List, Tensor, Tuple]:
        """``loss``: the student's losses plus the sparsity terms; other modes: the student."""
        if mode != 'loss':
            return self.student(inputs, data_samples, mode=mode)
        logit_module = getattr(self, self.logit_module) if self.logit_module else None
        with capture_output(self.backbone) as feats, capture_output(logit_module) as logits:
            losses = self.student.loss(inputs, data_samples)
        decisions = self.backbone.sparsity_decisions
        losses['loss_keep_ratio'] = self.ratio_loss_weight * keep_ratio_loss(decisions)
        for d in decisions:
            losses[f'kept.{d.index}'] = d.kept_fraction.mean()
        if self.teacher_cfg is None:
            return losses
        teacher = self.build_teacher()
        with torch.no_grad(), capture_output(teacher.backbone) as teacher_feats:
            if logit_module is not None:
                teacher_logits = teacher(inputs, mode='tensor')
            else:
                teacher.backbone(inputs)
        if self.feature_distill_weight > 0:
            custom = getattr(self.backbone, 'feature_distill_loss', None)
            loss_fn = custom if callable(custom) else feature_mse
            losses['loss_feat_distill'] = self.feature_distill_weight * loss_fn(
                feats[0], teacher_feats[0])
        if logit_module is not None:
            losses['loss_logit_distill'] = self.logit_distill_weight * logit_kl(
                _first(logits[0]), _first(teacher_logits))
        return losses


@contextmanager
def capture_output(module: Optional[nn.Module]) -> Iterator[List[Any]]:
    """Collect ``module``'s forward outputs while the context is open (nothing for ``None``).

    The forward is wrapped on the instance rather than hooked, because heads call
    ``self.forward(...)`` directly in their ``loss`` (mmseg's decode heads do), which bypasses
    forward hooks.
    """
    outputs: List[Any] = []
    if module is None:
        yield outputs
        return
    previous = module.__dict__.get('forward')
    original = module.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        outputs.append(out)
        return out

    module.forward = forward
    try:
        yield outputs
    finally:
        if previous is None:
            del module.forward
        else:
            module.forward = previous


def _first(logits: Union[Tensor, Tuple, List]) -> Tensor:
    """Heads may return a tuple / list of logits: distil the first (main) one."""
    return logits[0] if isinstance(logits, (tuple, list)) else logits
