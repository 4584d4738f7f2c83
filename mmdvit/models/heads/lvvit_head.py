"""LV-ViT's classifier: class-token head plus the token-labelling auxiliary head, fused at
inference as the TokenLabeling and DynamicViT-LVViT evaluations do (docs/lvvit.md)."""
from typing import List, Optional, Tuple

from mmpretrain.models.heads import ClsHead
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from ...registry import MODELS
from ..checkpoint import extract_state_dict, load_checkpoint_file
from ...sparse import trunc_normal_init


@MODELS.register_module()
class LVViTClsHead(ClsHead):
    """Linear ``head`` on the class token and linear ``aux_head`` on every patch token.

    - :meth:`forward`: ``(cls_logits (B, K), aux_logits (B, n, K))``; in mmpretrain's
      ``'tensor'`` mode, and so for :class:`~mmdvit.SparsityTrainer`'s logit distillation, the
      first element is the class-token logits (the DynamicViT authors distil those).
    - :meth:`loss`: the classification loss on the class-token logits only (the authors'
      DynamicViT-LVViT training, ``pred = x_cls``).
    - :meth:`predict`: ``cls_logits + aux_weight * max over the n tokens of aux_logits``, the
      released models' evaluation (``x_cls + 0.5 * x_aux.max(1)[0]``). At inference the n tokens
      are those the backbone kept, so pruned tokens take no part in the maximum.

    Args:
        num_classes: K.
        in_channels: C of the backbone tokens.
        aux_weight: weight of the auxiliary maximum at inference (0.5 in the releases).
        loss, topk, cal_acc: as mmpretrain's ``ClsHead``.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH[, prefix='head.'])`` reads
            ``head.{weight,bias}`` and ``aux_head.{weight,bias}`` under ``prefix``: a release
            (TokenLabeling, DynamicViT-LVViT) with no prefix, an mmdvit classifier checkpoint
            with ``prefix='head.'``. ``None``: truncated normal (std 0.02), zero biases.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 aux_weight: float = 0.5,
                 loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 topk: Tuple[int, ...] = (1, ),
                 cal_acc: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(loss=loss, topk=topk, cal_acc=cal_acc, init_cfg=init_cfg)
        if num_classes <= 0:
            raise ValueError(f'num_classes={num_classes} must be a positive number of classes.')
        self.aux_weight = aux_weight
        self.head = nn.Linear(in_channels, num_classes)
        self.aux_head = nn.Linear(in_channels, num_classes)

    def init_weights(self) -> None:
        """Truncated-normal initialisation, or the classifiers of a checkpoint (``init_cfg``)."""
        trunc_normal_init(self)
        cfg = self.init_cfg
        if not (isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'):
            return
        path, prefix = cfg['checkpoint'], cfg.get('prefix')
        state = extract_state_dict(load_checkpoint_file(path, 'head init_cfg checkpoint'),
                                   prefix)
        missing = [k for k in self.state_dict() if k not in state]
        if missing:
            raise ValueError(
                f'head init_cfg checkpoint {path!r} (prefix={prefix!r}) lacks {missing}: '
                'LVViTClsHead loads head.* and aux_head.* of an LV-ViT release (no prefix) or '
                "of an mmdvit LV-ViT classifier (prefix='head.'); a DeiT checkpoint has no "
                'aux_head.')
        self.load_state_dict({k: state[k] for k in self.state_dict()})
        self._is_init = True

    def pre_logits(self, feats: Tuple[Tensor, ...]) -> Tensor:
        """feats[-1]: (B, 1 + n, C) class token and patch tokens (backbone ``out_type='raw'``)."""
        tokens = feats[-1]
        if tokens.ndim != 3:
            raise ValueError(f'LVViTClsHead got features of shape {tuple(tokens.shape)}; it '
                             'needs the class token and the patch tokens (B, 1 + n, C): build '
                             "mmdvit.DynamicLVViT with out_type='raw'.")
        return tokens

    def forward(self, feats: Tuple[Tensor, ...]) -> Tuple[Tensor, Tensor]:
        """feats[-1]: (B, 1 + n, C) -> (class-token logits (B, K), token logits (B, n, K))."""
        tokens = self.pre_logits(feats)
        return self.head(tokens[:, 0]), self.aux_head(tokens[:, 1:])

    def fused_logits(self, feats: Tuple[Tensor, ...]) -> Tensor:
        """The released models' prediction: ``cls + aux_weight * max_tokens(aux)``, (B, K)."""
        cls_logits, aux_logits = self(feats)
        return cls_logits + self.aux_weight * aux_logits.max(dim=1).values

    def loss(self, feats: Tuple[Tensor, ...], data_samples: List[DataSample],
             **kwargs) -> dict:
        """Classification loss of the class-token logits."""
        cls_logits, _ = self(feats)
        return self._get_loss(cls_logits, data_samples, **kwargs)

    def predict(self, feats: Tuple[Tensor, ...],
                data_samples: Optional[List[Optional[DataSample]]] = None) -> List[DataSample]:
        """Predictions from :meth:`fused_logits`."""
        return self._get_predictions(self.fused_logits(feats), data_samples)
