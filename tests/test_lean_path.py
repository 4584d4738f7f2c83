"""The lean sparse path (mmdvit/sparse/gather.py): one gather and in-place writes per
sparse block or convolution, index maps built once per shape. Each result is compared with a
reference written here without the module under test (pad / roll / partition or per-tile
masks of whole dense computations), on the CPU eager path and with the accelerator path
forced, at batch 1-3 and odd sizes."""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from helpers import random_keep_sets, randomize
from test_swin_windows import reference_shifted_keep

from mmdvit.models.backbones.swin_layers import DynamicSwinBlock
from mmdvit.sparse import decide, sparse_conv2d
from mmdvit.sparse.accelerator import accelerator_path
from mmdvit.sparse.gather import shifted_overlap, window_sources

PATHS = {'cpu-eager': contextlib.nullcontext, 'accelerator': accelerator_path}


def reference_windows(x, hw, ws, shift):
    """(B, H*W, C) -> (B, nW, ws*ws, C) windows of the padded map rolled by -shift, and the
    (nW, ws*ws) validity of each window position; written independently of gather.py."""
    batch, _, channels = x.shape
    rows, cols = -(-hw[0] // ws), -(-hw[1] // ws)
    grid = x.view(batch, *hw, channels)
    grid = F.pad(grid, (0, 0, 0, cols * ws - hw[1], 0, rows * ws - hw[0]))
    real = F.pad(torch.ones(*hw), (0, cols * ws - hw[1], 0, rows * ws - hw[0]))
    grid = torch.roll(grid, (-shift, -shift), (1, 2))
    real = torch.roll(real, (-shift, -shift), (0, 1))
    windows = grid.view(batch, rows, ws, cols, ws, channels).transpose(2, 3)
    real = real.view(rows, ws, cols, ws).transpose(1, 2)
    return (windows.reshape(batch, rows * cols, ws * ws, channels),
            real.reshape(rows * cols, ws * ws))


def reference_merge(windows, hw, ws, shift):
    """Inverse of :func:`reference_windows`: (B, nW, ws*ws, C) -> (B, H*W, C)."""
    batch, channels = windows.shape[0], windows.shape[-1]
    rows, cols = -(-hw[0] // ws), -(-hw[1] // ws)
    grid = windows.view(batch, rows, cols, ws, ws, channels).transpose(2, 3)
    grid = torch.roll(grid.reshape(batch, rows * ws, cols * ws, channels), (shift, shift), (1, 2))
    return grid[:, :hw[0], :hw[1]].reshape(batch, hw[0] * hw[1], channels)


def reference_window_block(block, x, hw, kept):
    """Every window through the whole block (attention with padding zeroed, then FFN) where
    ``kept`` (B, nW) is set, ``x + fast_path(x)`` elsewhere."""
    attn = block.attn
    ws, shift = attn.window_size, attn.effective_shift(hw)
    windows, real = reference_windows(x, hw, ws, shift)
    batch, num, tokens, channels = windows.shape
    h = block.norm1(windows) * real.unsqueeze(-1)
    mask = attn.attention_mask((-(-hw[0] // ws) * ws, -(-hw[1] // ws) * ws), shift, x)
    y = windows + attn.w_msa(h.view(-1, tokens, channels), mask).view_as(windows)
    slow = y + block.ffn(block.norm2(y))
    fast = windows + block.fast_path(windows)
    out = torch.where(kept.view(batch, num, 1, 1), slow, fast)
    return reference_merge(out, hw, ws, shift)


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('batch, hw, shift', [(1, (10, 13), True), (2, (9, 9), False),
                                              (3, (7, 11), True), (1, (8, 12), True),
                                              (2, (8, 8), False)])
def test_window_block_equals_the_per_window_reference(path, batch, hw, shift):
    """The lean window block (one gather of every window, kept first; in-place writes of both
    paths, padding to a spare row) equals the reference at the kept windows of the decision
    carried to the shifted grid, with and without padding."""
    torch.manual_seed(batch)
    ws = 4
    block = DynamicSwinBlock(16, 2, 32, window_size=ws, shift=shift, sparse=True)
    randomize(block, seed=3)
    block.eval()
    grid = (-(-hw[0] // ws), -(-hw[1] // ws))
    num = grid[0] * grid[1]
    log_probs = torch.randn(batch, num, 2).log_softmax(-1)
    decision = decide(log_probs, 0.5, False, 0, 0, grid, window_size=ws)
    k = decision.num_keep
    assert 0 < k < num
    kept = (reference_shifted_keep(decision.keep_mask, log_probs, grid, ws, ws // 2, k, hw)
            if shift else decision.keep_mask.bool())
    x = torch.randn(batch, hw[0] * hw[1], 16)
    with torch.no_grad(), PATHS[path]():
        out = block(x, hw, decision)
        expected = reference_window_block(block, x, hw, kept)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_window_index_maps_are_built_once_per_shape():
    """The shape-only maps come from a cache: the same tensors for the same arguments."""
    first = window_sources(2, (10, 13), 4, 2, torch.device('cpu'))
    assert window_sources(2, (10, 13), 4, 2, torch.device('cpu'))[0] is first[0]
    assert window_sources(3, (10, 13), 4, 2, torch.device('cpu'))[0] is not first[0]
    overlap, overlap32, size = shifted_overlap((3, 4), 4, 2, (10, 13), torch.device('cpu'))
    assert shifted_overlap((3, 4), 4, 2, (10, 13), torch.device('cpu'))[0] is overlap
    # Every real position lies in exactly one regular and one shifted window.
    assert overlap.sum() == 10 * 13 and torch.equal(overlap32.double(), overlap)
    assert torch.equal(size, overlap.sum(1).clamp_min(1))


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('batch, size, block, dilation, fast_kind', [
    (1, (13, 17), 4, 1, '1x1'), (2, (16, 16), 8, 1, 'dw3x3'), (3, (9, 22), 5, 2, '1x1'),
    (3, (11, 7), 3, 1, 'dw3x3'), (2, (13, 10), 4, 1, 'lowrank'), (2, (9, 14), 3, 2, 'lowrank')])
def test_sparse_conv_equals_per_tile_reference(path, batch, size, block, dilation, fast_kind):
    """Kept tiles (gathered with halo) are the dense kxk convolution, pruned tiles the fast
    path on the whole map, both written into one output in place."""
    torch.manual_seed(batch)
    x = torch.randn(batch, 6, *size)
    weight, bias = torch.randn(5, 6, 3, 3), torch.randn(5)
    fast_w, fast_b = torch.randn(5, 6, 1, 1), torch.randn(5)
    fast_dw = torch.randn(6, 1, 3, 3) if fast_kind == 'dw3x3' else None
    low_rank = None
    if fast_kind == 'lowrank':
        low_rank = (torch.randn(2, 6, 3, 3), torch.randn(5, 2, 1, 1))  # rank 2
    grid = (-(-size[0] // block), -(-size[1] // block))
    keep = random_keep_sets(batch, grid[0] * grid[1], [0.4], seed=batch)[0]
    logits = torch.where(keep, 50.0, -50.0)
    decision = decide(torch.stack([logits, -logits], -1).log_softmax(-1),
                      keep[0].float().mean().item(), False, 0, 0, grid)
    with PATHS[path]():
        out = sparse_conv2d(x, weight, bias, fast_w, fast_b, decision, block, dilation, fast_dw,
                            low_rank)
    dense = F.conv2d(x, weight, bias, padding=dilation, dilation=dilation)
    fast_in = x if fast_dw is None else F.conv2d(x, fast_dw, padding=1, groups=6)
    fast = F.conv2d(fast_in, fast_w, fast_b)
    if low_rank is not None:
        fast = fast + F.conv2d(F.conv2d(x, low_rank[0], padding=dilation, dilation=dilation),
                               low_rank[1])
    tile_mask = keep.view(batch, 1, *grid).repeat_interleave(block, 2).repeat_interleave(block, 3)
    expected = torch.where(tile_mask[..., :size[0], :size[1]], dense, fast)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_maps_first_built_in_inference_mode_serve_training():
    """A window block in training mode reuses the maps an inference-mode forward built (no
    'inference tensors cannot be saved for backward')."""
    torch.manual_seed(0)
    block = DynamicSwinBlock(8, 2, 16, window_size=4, shift=True, sparse=True)
    hw, grid = (9, 10), (3, 3)
    x = torch.randn(1, 90, 8)
    with torch.inference_mode():
        decision = decide(torch.randn(1, 9, 2).log_softmax(-1), 0.5, False, 0, 0, grid,
                          window_size=4)
        block.eval()(x, hw, decision)
    block.train()
    log_probs = torch.randn(1, 9, 2, requires_grad=True)
    decision = decide(log_probs.log_softmax(-1), 0.5, True, 0, 0, grid, window_size=4)
    block(x, hw, decision).sum().backward()
    assert log_probs.grad is not None and log_probs.grad.abs().sum() > 0


def test_sparse_blocks_keep_the_shifted_window_mask_per_shape():
    """The cached attention mask (sparse blocks) equals the one built per call (dense blocks,
    as mmseg's Swin) and is built once per shape; a token-decision block's output is the same
    with either."""
    torch.manual_seed(0)
    block = DynamicSwinBlock(8, 2, 16, window_size=4, shift=True, sparse=True).eval()
    x = torch.randn(1, 90, 8)
    attn = block.attn
    cached = attn.attention_mask((12, 12), 2, x, cached=True)
    assert torch.equal(cached, attn.attention_mask((12, 12), 2, x))
    assert attn.attention_mask((12, 12), 2, x, cached=True) is cached
    assert attn.attention_mask((12, 12), 2, x) is not attn.attention_mask((12, 12), 2, x)
    h = block.norm1(x)
    assert torch.equal(attn(h, (9, 10), cached=True), attn(h, (9, 10)))
