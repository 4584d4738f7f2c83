"""One model wrapper that adds sparsity training to any OpenMMLab segmentor, detector or
classifier: the keep-ratio loss and distillation from a frozen dense teacher."""
from contextlib import ExitStack, contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import ConfigDict
from mmengine.logging import print_log
from mmengine.model import BaseModel
from torch import Tensor, nn

from ...registry import MODELS
from ..checkpoint import NEW_MODULE_MARKERS, load_pretrained
from ..dense_twin import dense_twin_config
from ...sparse import (SparseModule, decision_label, keep_everything, keep_ratio_loss,
                       record_decisions)
from .distill import feature_mse, logit_kl
from .recorded_score import warn_if_teacher_weaker

# Where each framework keeps the module whose output is the per-class logits.
LOGIT_MODULES = ('decode_head', 'head')
# Fields of the wrapped model: set through ``model.student.<field>``, never on the wrapper.
STUDENT_FIELDS = ('backbone', 'neck', 'decode_head', 'auxiliary_head', 'rpn_head', 'roi_head',
                  'bbox_head', 'mask_head', 'head', 'train_cfg', 'test_cfg', 'pretrained')


def _leaf_keys(node: Any, path: str) -> List[str]:
    """Dotted keys of the leaves under ``node`` (``path`` itself for a leaf)."""
    if isinstance(node, dict) and node:
        return [k for key, value in node.items() for k in _leaf_keys(value, f'{path}.{key}')]
    return [path]


def check_wrapper_fields(wrapper_cfg: dict) -> None:
    """Refuse fields of the student set on a ``mmdvit.SparsityTrainer`` config (e.g. by
    ``--cfg-options model.backbone.keep_ratios=...``), with the key that works.

    Raises:
        TypeError: naming each misplaced key and its ``model.student.`` spelling.
    """
    misplaced = [key for field in STUDENT_FIELDS if field in wrapper_cfg
                 for key in _leaf_keys(wrapper_cfg[field], field)]
    if misplaced:
        moves = ', '.join(f'model.{key} -> model.student.{key}' for key in misplaced)
        raise TypeError(
            f'mmdvit.SparsityTrainer got fields of the model it trains ({moves}): the wrapper '
            'holds the upstream model under `student`, so use e.g. --cfg-options '
            f'model.student.{misplaced[0]}=... (docs/dense_tasks.md, "Overriding fields from '
            'the command line").')


def build_in_current_scope(cfg: dict) -> nn.Module:
    """Build a model config in the caller's default scope (mmseg / mmdet / mmpretrain)."""
    try:
        return MODELS.build(cfg)
    except KeyError as err:
        raise KeyError(f'{err}. The student / teacher of mmdvit.SparsityTrainer is built in the '
                       "config's default_scope: set default_scope = 'mmseg' / 'mmdet' / "
                       "'mmpretrain' (upstream base configs do) or prefix the type, e.g. "
                       "'mmseg.EncoderDecoder'.") from None


@MODELS.register_module()
class SparsityTrainer(BaseModel):
    """Sparsity training around a student model with a dynamic backbone.

    The student's children (``data_preprocessor``, ``backbone``, ``neck``, ``decode_head``,
    ``head``, ...) become this wrapper's children, so the state dict has exactly the student's
    keys (a checkpoint loads into the plain student config and back) and optimizer
    constructors see the usual ``backbone.*`` names. The teacher is held outside the module
    tree: frozen, always in eval mode, never saved, never in the optimizer; it is built (and
    its checkpoint read) when training starts, so evaluation needs no teacher.

    Every module of the student that decides counts: the backbone's predictors and those of a
    dynamic neck or head (``mmdvit.DynamicFPN``, ``mmdvit.DynamicUPerHead``, ...).
    ``mode='loss'`` returns the student's losses plus ``loss_keep_ratio`` over all their
    decisions (and ``loss_feat_distill`` / ``loss_logit_distill`` when enabled) and the logged,
    unsummed kept fractions: ``kept.<i>`` for backbone predictor i, ``kept.<module>.<i>`` for
    the others (e.g. ``kept.decode_head.0``); ``predict`` / ``tensor`` delegate to the
    student.

    Args:
        student: the model config (``EncoderDecoder``, ``MaskRCNN``, ``ImageClassifier``, ...)
            whose backbone is an mmdvit dynamic backbone.
        teacher: ``None`` (no distillation) or ``dict(model=<config or None>,
            checkpoint=<path or None>)``. ``model=None`` takes the student's dense twin
            (:func:`~mmdvit.models.dense_twin.dense_twin_config`: sparsification disabled,
            upstream necks / heads; exactly the upstream dense model). ``checkpoint`` is a
            full-model checkpoint of the teacher (keys ``backbone.*``, heads); ``None``
            initialises the teacher from its config's ``init_cfg`` (e.g. ImageNet backbone
            weights: then only feature distillation is meaningful).
        ratio_loss_weight: weight of the keep-ratio loss (published: 10.0 for Swin / ConvNeXt).
        feature_distill_weight: weight of the MSE between student and teacher backbone outputs
            (all ``out_indices``). A backbone may define
            ``feature_distill_loss(student_outs, teacher_outs, decisions)`` to replace the
            plain MSE (``decisions``: the backbone's, from the student's forward pass).
        feature_distill_from: the modules whose outputs feature distillation compares:
            ``('backbone',)``, or ``('backbone', 'neck')`` for a detector with a sparse neck
            (the mean of the two terms).
        logit_distill_weight: weight of KL(teacher || student) on the class logits of
            ``decode_head`` (segmentation) or ``head`` (classification). Detectors: keep 0.
        dense_path_weight: when > 0, each training step also runs the student with every
            position kept (:func:`~mmdvit.sparse.keep_everything`: its dense path, the same
            weights) and adds its task losses times this weight, logged as
            ``dense_path.<loss>``: the slow paths' weights then learn from every position, as
            the dense model's do, not only from the kept ones. Costs a second forward and
            backward pass per step; inference is unchanged. Default 0 (off).
        dense_path_distill_weight: with ``dense_path_weight > 0``, weight of KL(dense path ||
            student) on the class logits of ``decode_head`` / ``head``, the dense path's
            logits detached (in-place distillation: the dense path, trained alongside, is the
            teacher; it needs no teacher model). Default 0 (off).
        student_checkpoint: optional full-model checkpoint (e.g. the upstream dense
            segmentor / detector) loaded into the student when training starts, after its own
            initialisation: the dense model is the starting point, and the log names the new
            sparsity modules that keep their initialisation. A checkpoint that leaves other
            student parameters missing raises.
        data_preprocessor: used by the student when its own config has none (mmengine's
            Runner passes a config's top-level ``data_preprocessor`` here).
        unknown: refused; fields of the student (``backbone``, ``decode_head``, ``test_cfg``...)
            with the ``model.student.`` key that works (:func:`check_wrapper_fields`).

    The student's backbone gets ``trainer_role='student'``: its predictors are trained here,
    so it does not warn about training outside the wrapper.
    """

    def __init__(self,
                 student: dict,
                 teacher: Optional[dict] = None,
                 ratio_loss_weight: float = 10.0,
                 feature_distill_weight: float = 0.5,
                 logit_distill_weight: float = 0.0,
                 dense_path_weight: float = 0.0,
                 dense_path_distill_weight: float = 0.0,
                 feature_distill_from: Sequence[str] = ('backbone', ),
                 student_checkpoint: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 **unknown: Any) -> None:
        check_wrapper_fields(unknown)
        if unknown:
            raise TypeError(f'mmdvit.SparsityTrainer got unexpected arguments {sorted(unknown)}')
        super().__init__(init_cfg=init_cfg)
        if data_preprocessor is not None and 'data_preprocessor' not in student:
            student = dict(student, data_preprocessor=data_preprocessor)
        student_model = build_in_current_scope(student)
        self.__dict__['_student'] = student_model
        for name, module in student_model.named_children():
            setattr(self, name, module)
        backbone = getattr(student_model, 'backbone', None)
        if not isinstance(backbone, SparseModule):
            raise TypeError('the student of mmdvit.SparsityTrainer needs an mmdvit dynamic '
                            "backbone (type='mmdvit.DynamicSwinTransformer', ...)")
        student_model.backbone.trainer_role = 'student'
        distill = feature_distill_weight > 0 or logit_distill_weight > 0
        if distill and teacher is None:
            raise ValueError('distillation weights are set but teacher=None: give '
                             'teacher=dict(model=..., checkpoint=...) or set the weights to 0.')
        if dense_path_weight < 0 or dense_path_distill_weight < 0:
            raise ValueError(f'dense_path_weight={dense_path_weight} and '
                             f'dense_path_distill_weight={dense_path_distill_weight} must be >= 0 '
                             '(0: off).')
        if dense_path_distill_weight > 0 and dense_path_weight == 0:
            raise ValueError('dense_path_distill_weight > 0 distils from the dense path, which '
                             'needs dense_path_weight > 0 to be trained.')
        self.logit_module = None
        if logit_distill_weight > 0 or dense_path_distill_weight > 0:
            self.logit_module = next((n for n in LOGIT_MODULES if hasattr(student_model, n)),
                                     None)
            if self.logit_module is None:
                raise ValueError('logit_distill_weight > 0 and dense_path_distill_weight > 0 '
                                 'need a student with a decode_head (segmentation) or head '
                                 '(classification)')
        self.teacher_cfg = None
        if teacher is not None:
            teacher = dict(teacher)
            unknown = set(teacher) - {'model', 'checkpoint'}
            if unknown:
                raise ValueError(f'teacher has unknown keys {sorted(unknown)}; use model and '
                                 'checkpoint')
            model_cfg = teacher.get('model') or dense_twin_config(ConfigDict(student))
            self.teacher_cfg = dict(model=ConfigDict(model_cfg),
                                    checkpoint=teacher.get('checkpoint'))
        unknown = [n for n in feature_distill_from if not hasattr(student_model, n)]
        if unknown or not feature_distill_from:
            raise ValueError(f'feature_distill_from={tuple(feature_distill_from)}: the student '
                             f'has no {unknown or "module"}; use backbone and / or neck.')
        self.feature_distill_from = tuple(feature_distill_from)
        self.student_checkpoint = student_checkpoint
        self.ratio_loss_weight = ratio_loss_weight
        self.feature_distill_weight = feature_distill_weight
        self.logit_distill_weight = logit_distill_weight
        self.dense_path_weight = dense_path_weight
        self.dense_path_distill_weight = dense_path_distill_weight
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
        """Initialise the student (its backbone loads its pretrained weights), load
        ``student_checkpoint`` if given, and build the teacher; when distilling, warn if the
        teacher's recorded validation score is below the student checkpoint's
        (:func:`~.recorded_score.warn_if_teacher_weaker`)."""
        super().init_weights()
        if self.student_checkpoint is not None:
            report = load_pretrained(self.student, self.student_checkpoint,
                                     lambda s: (s, 'full model', []), prefix=None,
                                     new_module_markers=NEW_MODULE_MARKERS,
                                     role='student_checkpoint')
            if report.missing:
                raise ValueError(
                    f'student_checkpoint {self.student_checkpoint!r} lacks '
                    f'{len(report.missing)} parameters of the student besides the new sparsity '
                    f'modules, e.g. {report.missing[:5]}: give a checkpoint of the dense '
                    'counterpart of the student config.')
        self.build_teacher()
        if self.teacher_cfg is not None and (self.feature_distill_weight > 0
                                             or self.logit_distill_weight > 0):
            warn_if_teacher_weaker(self.teacher_cfg['checkpoint'], self.student_checkpoint)

    def build_teacher(self) -> Optional[nn.Module]:
        """Build the frozen teacher once, load its checkpoint, place it beside the student."""
        if self.teacher is not None or self.teacher_cfg is None:
            return self.teacher
        teacher = build_in_current_scope(self.teacher_cfg['model'])
        if hasattr(teacher.backbone, 'trainer_role'):
            teacher.backbone.trainer_role = 'teacher'  # its weight loads say so in the log
        checkpoint = self.teacher_cfg['checkpoint']
        if checkpoint is None:
            teacher.init_weights()
            print_log('SparsityTrainer: teacher has no checkpoint; initialised from its config '
                      '(heads are random: only feature distillation is meaningful)',
                      logger='current', level=30)
        else:
            report = load_pretrained(teacher, checkpoint, lambda s: (s, 'full model', []),
                                     prefix=None, new_module_markers=NEW_MODULE_MARKERS,
                                     role='teacher checkpoint')
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
        feature_modules = [getattr(self, n) for n in self.feature_distill_from]
        with (record_decisions() as decisions, capture_outputs(feature_modules) as feats,
              capture_output(logit_module, logits=True) as logits):
            losses = self.student.loss(inputs, data_samples)
        losses['loss_keep_ratio'] = self.ratio_loss_weight * keep_ratio_loss(decisions)
        for d in decisions:
            losses[f'kept.{decision_label(d)}'] = d.kept_fraction.mean()
        if self.dense_path_weight > 0:
            with keep_everything(), capture_output(logit_module, logits=True) as dense_logits:
                dense_path = self.student.loss(inputs, data_samples)
            for key, value in dense_path.items():
                if 'loss' in key:  # summed by mmengine; accuracies are only logged
                    value = ([self.dense_path_weight * v for v in value]
                             if isinstance(value, (list, tuple)) else
                             self.dense_path_weight * value)
                losses[f'dense_path.{key}'] = value
            if self.dense_path_distill_weight > 0:
                losses['loss_dense_path_distill'] = self.dense_path_distill_weight * logit_kl(
                    _first(logits[0]), _first(dense_logits[0]).detach())
        if self.teacher_cfg is None:
            return losses
        teacher = self.build_teacher()
        teacher_modules = [getattr(teacher, n) for n in self.feature_distill_from]
        with torch.no_grad(), capture_outputs(teacher_modules) as teacher_feats:
            if self.logit_distill_weight > 0:
                teacher_logits = teacher(inputs, mode='tensor')
            else:
                out = teacher.backbone(inputs)
                if 'neck' in self.feature_distill_from:
                    teacher.neck(out)
        if self.feature_distill_weight > 0:
            custom = getattr(self.backbone, 'feature_distill_loss', None)
            terms = []
            for name, student_out, teacher_out in zip(self.feature_distill_from, feats,
                                                      teacher_feats):
                if name == 'backbone' and callable(custom):
                    backbone_decisions = [d for d in decisions if d.source == 'backbone']
                    terms.append(custom(student_out[0], teacher_out[0], backbone_decisions))
                else:
                    terms.append(feature_mse(student_out[0], teacher_out[0]))
            losses['loss_feat_distill'] = self.feature_distill_weight * torch.stack(
                terms).mean()
        if self.logit_distill_weight > 0:
            losses['loss_logit_distill'] = self.logit_distill_weight * logit_kl(
                _first(logits[0]), _first(teacher_logits))
        return losses


@contextmanager
def capture_outputs(modules: Sequence[nn.Module]) -> Iterator[List[List[Any]]]:
    """:func:`capture_output` for several modules: one list of outputs per module."""
    with ExitStack() as stack:
        yield [stack.enter_context(capture_output(m)) for m in modules]


@contextmanager
def capture_output(module: Optional[nn.Module], logits: bool = False) -> Iterator[List[Any]]:
    """Collect ``module``'s forward outputs while the context is open (nothing for ``None``),
    through a forward hook.

    ``logits``: ``module`` is a head whose output is the class logits. An mmseg decode head
    calls ``self.forward(...)`` in its ``loss``, which bypasses forward hooks: its logits are
    taken from the hook on ``conv_seg``, which makes them (``BaseDecodeHead.cls_seg``).
    """
    outputs: List[Any] = []
    if module is None:
        yield outputs
        return
    hooked = module
    if logits and isinstance(getattr(module, 'conv_seg', None), nn.Module):
        hooked = module.conv_seg
    handle = hooked.register_forward_hook(lambda _, args, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()


def _first(logits: Union[Tensor, Tuple, List]) -> Tensor:
    """Heads may return a tuple / list of logits: distil the first (main) one."""
    return logits[0] if isinstance(logits, (tuple, list)) else logits
