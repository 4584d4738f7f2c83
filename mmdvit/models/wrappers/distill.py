"""Distillation terms between a sparse student and its dense teacher (docs/method.md, 'Losses
and the published recipe')."""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def logit_kl(student: Tensor, teacher: Tensor, class_dim: int = 1) -> Tensor:
    """KL(teacher || student) of the class distributions, averaged over every prediction.

    Args:
        student, teacher: logits of equal shape, (B, K) for classification or (B, K, H, W) for
            segmentation; ``class_dim`` is the class axis. Teacher maps of another size are
            resized bilinearly to the student's.

    Returns:
        Scalar: summed over classes, averaged over images (and pixels).
    """
    if teacher.shape[2:] != student.shape[2:]:
        teacher = F.interpolate(teacher, size=student.shape[2:], mode='bilinear',
                                align_corners=False)
    s = student.float().movedim(class_dim, -1).flatten(0, -2).log_softmax(-1)
    t = teacher.float().movedim(class_dim, -1).flatten(0, -2).log_softmax(-1)
    return F.kl_div(s, t, reduction='batchmean', log_target=True)


def feature_mse(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Mean over outputs of the mean squared error between matching feature maps.

    Args:
        student, teacher: one (B, C_i, H_i, W_i) (or (B, C_i)) tensor per backbone output.
    """
    if len(student) != len(teacher):
        raise ValueError(f'student gives {len(student)} backbone outputs, teacher '
                         f'{len(teacher)}: configure the same out_indices for both')
    terms = [F.mse_loss(s.float(), t.float()) for s, t in zip(student, teacher)]
    return torch.stack(terms).mean()
