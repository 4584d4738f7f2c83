"""Test helpers: forcing a backbone's decisions, randomising weights, crafting hostile
checkpoints (pickles that call what they like, a local HTTP server), and the README's config
examples."""
import http.server
import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from mmdvit.sparse import SparseConvGate, SparsityDecision, record_decisions


class FixedScores(nn.Module):
    """Stands in for a ScorePredictor: returns log-probabilities that keep exactly ``keep``.

    The margin (100 nats) is far beyond any Gumbel noise, so the training-time hard mask equals
    ``keep``; at inference top-k picks the same set when ``keep`` has k ones per image.
    """

    def __init__(self, keep: Tensor) -> None:
        super().__init__()
        self.register_buffer('keep', keep.bool())

    def forward(self, x: Tensor, policy=None) -> Tensor:
        logits = torch.full((*self.keep.shape, 2), -50.0, device=x.device)
        logits[..., 0] = torch.where(self.keep, 50.0, -50.0)
        logits[..., 1] = -logits[..., 0]
        return logits.log_softmax(-1).to(x.dtype)


def random_keep_sets(batch: int, num: int, ratios: List[float], seed: int = 0) -> List[Tensor]:
    """One (B, N) bool mask per ratio with exactly int(N * ratio) ones per image, drawn
    independently so the kept set changes between predictors."""
    gen = torch.Generator().manual_seed(seed)
    masks = []
    for ratio in ratios:
        k = int(num * ratio)
        mask = torch.zeros(batch, num, dtype=torch.bool)
        for b in range(batch):
            mask[b, torch.randperm(num, generator=gen)[:k]] = True
        masks.append(mask)
    return masks


def force_decisions(backbone: nn.Module, stage: int, masks: List[Tensor]) -> None:
    """Replace the predictors of ``stage`` with :class:`FixedScores`."""
    predictors = backbone.score_predictors[str(stage)]
    for i, mask in enumerate(masks):
        predictors[i] = FixedScores(mask)


def randomize(module: nn.Module, std: float = 0.05, seed: int = 0) -> Dict[str, Tensor]:
    """Fill every floating parameter with N(0, std) (LayerNorm weights around 1) so equality
    tests exercise non-trivial weights; returns the state dict."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=gen) * std
            is_norm_weight = name.endswith('weight') and param.ndim == 1
            param.copy_(noise + 1.0 if is_norm_weight else noise)
    return module.state_dict()


class FixedTileScores(nn.Module):
    """Stands in for a BlockScorePredictor: scores the tiles of any (B, C, H, W) input so that
    exactly ``keep`` (B, num_tiles) is kept (the margin beats any Gumbel noise)."""

    def __init__(self, keep: Tensor) -> None:
        super().__init__()
        self.register_buffer('keep', keep.bool())

    def forward(self, x: Tensor) -> Tensor:
        logits = torch.where(self.keep, 50.0, -50.0).to(x.device)
        return torch.stack([logits, -logits], dim=-1).log_softmax(-1)


def gate_decision(gate: SparseConvGate, x: Tensor) -> SparsityDecision:
    """The decision ``gate`` makes on x (B, C, H, W) in its forward pass (run with a zero
    3x3 kernel)."""
    weight = torch.zeros(gate.fast_path.out_channels, x.shape[1], 3, 3, dtype=x.dtype)
    with record_decisions() as decisions:
        gate(x, weight, None)
    (decision, ) = decisions
    return decision


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def config_payload(marker: Path) -> str:
    """Python source that creates ``marker`` when evaluated as a config (``meta['config']``)."""
    return f"_x = __import__('os').system('touch {marker}')\n"


class Reduce:
    """Pickles as ``func(*args)`` (then ``BUILD`` with ``state`` if given): whatever call a
    hostile file may write."""

    def __init__(self, func: Any, args: tuple, state: Optional[Any] = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args,
                                                                   self.state)

    def __call__(self, *args):
        """Never called: callable so that another ``Reduce`` can call what this one builds."""
        raise TypeError('a Reduce is only pickled')


@contextmanager
def serve_folder(folder: Path) -> Iterator[Tuple[str, List[str]]]:
    """Serve ``folder`` over HTTP on 127.0.0.1 from a thread; yields the base URL and the list
    of paths requested so far. Shut down on exit."""
    requests: List[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_port}', requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def readme_python_blocks(containing: str) -> List[str]:
    """The README's ```python blocks that contain ``containing``, in the README's order."""
    readme = (Path(__file__).resolve().parents[1] / 'README.md').read_text()
    return [block for block in re.findall(r'```python\n(.*?)```', readme, re.S)
            if containing in block]
