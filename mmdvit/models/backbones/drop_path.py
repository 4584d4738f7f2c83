"""Stochastic depth (per-sample residual dropping)."""
from torch import Tensor, nn


class DropPath(nn.Module):
    """Zero the whole residual branch of a sample with probability ``drop_prob`` in training,
    scaling the kept ones by ``1 / (1 - drop_prob)``.

    Args:
        drop_prob: probability of dropping a sample's branch.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, ...) -> same shape."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0], ) + (1, ) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'
