"""The validation score a checkpoint's training recorded, and the warning of
:class:`~mmdvit.SparsityTrainer` when its teacher scored below the student's starting point.

A checkpoint's score is known when the training that wrote it validated at the checkpoint's
iteration (or epoch) and logged it where mmengine's ``LocalVisBackend`` writes scalars:
``<checkpoint folder>/<timestamp>/vis_data/scalars.json``, one JSON object per line, the
validation's with the metric (``mIoU``, ``coco/bbox_mAP``, ``accuracy/top1``) and ``step``.
The iteration comes from the file name mmengine gives (``iter_600.pth``, ``epoch_12.pth``,
``best_mIoU_iter_600.pth``). Only JSON is read: no checkpoint is unpickled for it.
"""
import json
import re
import warnings
from pathlib import Path
from typing import Optional, Tuple

# The metric compared, first found in both records: segmentation, detection, classification.
PRIMARY_METRICS = ('mIoU', 'coco/bbox_mAP', 'coco/segm_mAP', 'accuracy/top1')
STEP_PATTERN = re.compile(r'(?:iter|epoch)_(\d+)\.pth$')


def checkpoint_step(checkpoint: str) -> Optional[int]:
    """The iteration or epoch in an mmengine checkpoint's file name, ``None`` without one."""
    match = STEP_PATTERN.search(Path(checkpoint).name)
    return int(match.group(1)) if match else None


def recorded_scores(checkpoint: str) -> Tuple[dict, Optional[Path]]:
    """The validation metrics logged at a checkpoint's step by the training that wrote it.

    Looks through ``<checkpoint folder>/*/vis_data/scalars.json``, newest run first (the
    timestamped folder names sort by time), for a line with the checkpoint's ``step`` and any
    of :data:`PRIMARY_METRICS`.

    Returns:
        ``({metric: value}, the scalars.json file)``, or ``({}, None)`` when nothing is
        recorded (no step in the name, no log, no validation at that step, unreadable lines).
    """
    step = checkpoint_step(checkpoint)
    if step is None:
        return {}, None
    logs = sorted(Path(checkpoint).parent.glob('*/vis_data/scalars.json'), reverse=True)
    for log in logs:
        try:
            lines = log.read_text().splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            scores = {k: float(record[k]) for k in PRIMARY_METRICS
                      if isinstance(record, dict) and isinstance(record.get(k), (int, float))}
            if scores and record.get('step') == step:
                return scores, log
    return {}, None


def warn_if_teacher_weaker(teacher_checkpoint: Optional[str],
                           student_checkpoint: Optional[str]) -> Optional[str]:
    """Warn when the teacher's recorded validation score is below the student's starting one.

    Distilling from a teacher that the student soon passes holds the student back (measured on
    the fine-structure set, docs/whole_model.md). Silent when either checkpoint is missing or
    has no recorded score (:func:`recorded_scores`) for a common metric.

    Returns:
        The warning's message, or ``None`` when it did not warn.
    """
    if not teacher_checkpoint or not student_checkpoint:
        return None
    teacher, teacher_log = recorded_scores(teacher_checkpoint)
    student, student_log = recorded_scores(student_checkpoint)
    metric = next((m for m in PRIMARY_METRICS if m in teacher and m in student), None)
    if metric is None or teacher[metric] >= student[metric]:
        return None
    message = (
        f'SparsityTrainer: the teacher checkpoint {teacher_checkpoint!r} scored {metric} '
        f'{teacher[metric]:.2f} on validation ({teacher_log}), below the student\'s starting '
        f'checkpoint {student_checkpoint!r} ({metric} {student[metric]:.2f}, {student_log}). '
        'Distilling from a weaker teacher holds the student back: give a teacher at least as '
        'good (e.g. a dense model trained at least as long as the student in total), or set '
        'logit_distill_weight and feature_distill_weight to 0.')
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return message
