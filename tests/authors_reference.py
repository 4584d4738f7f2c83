"""The authors' released ImageNet classifiers, independently of mmdvit's code: their key layouts
(the released T/S files under ``checkpoint_layouts/`` and a generator for the other sizes),
random checkpoints in those layouts, and functional reference forwards that read the authors' key
names directly and follow their inference semantics (docs/method.md):

- DynamicSwin: official Microsoft Swin (patch merging concatenates x[0::2, 0::2], x[1::2, 0::2],
  x[0::2, 1::2], x[1::2, 1::2]; no shift and a window shrunk to the map when the map is not
  larger than the window), predictors ``layers.2.score_predictor.i`` before stage-3 blocks,
  each choosing the top ``int(N * ratio)`` positions afresh (plain global mean); kept positions
  take ``mlp(norm2(x))``, the others ``fastmlp.fc1`` (LayerNorm, Linear).
- DynamicCNN: official Meta ConvNeXt, predictors ``score_predictor.i`` (1x1 convolutions,
  channels-first LayerNorm eps 1e-6), fast path ``fast_path`` times ``fast_path_gamma``.
- DynamicViT: timm DeiT, predictors ``score_predictor.i`` before blocks, nested: the top
  ``int(196 * ratio)`` of the tokens still kept are gathered (class token always kept).
"""
import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

LAYOUT_DIR = Path(__file__).parent / 'checkpoint_layouts'
Layout = Dict[str, Tuple[int, ...]]
StateDict = Dict[str, Tensor]


def read_layout(name: str) -> Layout:
    """Key -> shape of a released layout file (``dynamicswin_t`` ...)."""
    layout = {}
    for line in (LAYOUT_DIR / f'{name}.txt').read_text().splitlines():
        if line and not line.startswith('#'):
            key, shape = line.split('\t')
            layout[key] = tuple(int(s) for s in shape.strip('()').split(',') if s.strip())
    return layout


# ----------------------------------------------------------------------------- layouts
def _predictor(prefix: str, dims: int, conv: bool) -> Layout:
    k = (1, 1) if conv else ()
    out = {f'{prefix}in_conv.0.weight': (dims, ), f'{prefix}in_conv.0.bias': (dims, ),
           f'{prefix}in_conv.1.weight': (dims, dims) + k, f'{prefix}in_conv.1.bias': (dims, )}
    for i, (o, c) in zip((0, 2, 4), ((dims // 2, dims), (dims // 4, dims // 2), (2, dims // 4))):
        out[f'{prefix}out_conv.{i}.weight'] = (o, c) + k
        out[f'{prefix}out_conv.{i}.bias'] = (o, )
    return out


def swin_layout(embed: int, depths: Sequence[int], heads: Sequence[int],
                locs: Sequence[int], window: int = 7, img: int = 224) -> Layout:
    """Keys of the authors' DynamicSwin release (sparse stage 2)."""
    out: Layout = {'patch_embed.proj.weight': (embed, 3, 4, 4), 'patch_embed.proj.bias': (embed, ),
                   'patch_embed.norm.weight': (embed, ), 'patch_embed.norm.bias': (embed, )}
    for i, depth in enumerate(depths):
        dims, res = embed * 2**i, img // 4 // 2**i
        for j in range(depth):
            pre = f'layers.{i}.blocks.{j}.'
            if j % 2 and res > window:
                out[pre + 'attn_mask'] = ((res // window)**2, window * window, window * window)
            out[pre + 'norm1.weight'], out[pre + 'norm1.bias'] = (dims, ), (dims, )
            out[pre + 'attn.relative_position_bias_table'] = ((2 * window - 1)**2, heads[i])
            out[pre + 'attn.relative_position_index'] = (window * window, window * window)
            out[pre + 'attn.qkv.weight'] = (3 * dims, dims)
            out[pre + 'attn.qkv.bias'] = (3 * dims, )
            out[pre + 'attn.proj.weight'], out[pre + 'attn.proj.bias'] = (dims, dims), (dims, )
            out[pre + 'norm2.weight'], out[pre + 'norm2.bias'] = (dims, ), (dims, )
            out[pre + 'mlp.fc1.weight'], out[pre + 'mlp.fc1.bias'] = (4 * dims, dims), (4 * dims, )
            out[pre + 'mlp.fc2.weight'], out[pre + 'mlp.fc2.bias'] = (dims, 4 * dims), (dims, )
            if i == 2 and j >= locs[0]:
                out[pre + 'fastmlp.fc1.0.weight'] = out[pre + 'fastmlp.fc1.0.bias'] = (dims, )
                out[pre + 'fastmlp.fc1.1.weight'] = (dims, dims)
                out[pre + 'fastmlp.fc1.1.bias'] = (dims, )
        if i < len(depths) - 1:
            out[f'layers.{i}.downsample.reduction.weight'] = (2 * dims, 4 * dims)
            out[f'layers.{i}.downsample.norm.weight'] = (4 * dims, )
            out[f'layers.{i}.downsample.norm.bias'] = (4 * dims, )
        if i == 2:
            for p in range(len(locs)):
                out.update(_predictor(f'layers.2.score_predictor.{p}.', dims, conv=False))
    final = embed * 2**(len(depths) - 1)
    out.update({'norm.weight': (final, ), 'norm.bias': (final, ), 'head.weight': (1000, final),
                'head.bias': (1000, )})
    return out


def convnext_layout(dims: Sequence[int], depths: Sequence[int], locs: Sequence[int]) -> Layout:
    """Keys of the authors' DynamicCNN release (sparse stage 2)."""
    out: Layout = {'downsample_layers.0.0.weight': (dims[0], 3, 4, 4),
                   'downsample_layers.0.0.bias': (dims[0], ),
                   'downsample_layers.0.1.weight': (dims[0], ),
                   'downsample_layers.0.1.bias': (dims[0], )}
    for i in range(1, len(dims)):
        out[f'downsample_layers.{i}.0.weight'] = out[f'downsample_layers.{i}.0.bias'] = (
            dims[i - 1], )
        out[f'downsample_layers.{i}.1.weight'] = (dims[i], dims[i - 1], 2, 2)
        out[f'downsample_layers.{i}.1.bias'] = (dims[i], )
    for i, depth in enumerate(depths):
        c = dims[i]
        for j in range(depth):
            pre = f'stages.{i}.{j}.'
            out[pre + 'gamma'] = (c, )
            if i == 2 and j >= locs[0]:
                out[pre + 'fast_path_gamma'] = (c, )
            out[pre + 'dwconv.weight'], out[pre + 'dwconv.bias'] = (c, 1, 7, 7), (c, )
            out[pre + 'norm.weight'], out[pre + 'norm.bias'] = (c, ), (c, )
            out[pre + 'pwconv1.weight'], out[pre + 'pwconv1.bias'] = (4 * c, c), (4 * c, )
            out[pre + 'pwconv2.weight'], out[pre + 'pwconv2.bias'] = (c, 4 * c), (c, )
            if i == 2 and j >= locs[0]:
                out[pre + 'fast_path.0.weight'] = out[pre + 'fast_path.0.bias'] = (c, )
                out[pre + 'fast_path.1.weight'], out[pre + 'fast_path.1.bias'] = (c, c), (c, )
    out.update({'norm.weight': (dims[-1], ), 'norm.bias': (dims[-1], ),
                'head.weight': (1000, dims[-1]), 'head.bias': (1000, )})
    for p in range(len(locs)):
        out.update(_predictor(f'score_predictor.{p}.', dims[2], conv=True))
    return out


def deit_layout(embed: int, depth: int, locs: Sequence[int], img: int = 224) -> Layout:
    """Keys of the authors' DynamicViT (DeiT) release."""
    out: Layout = {'cls_token': (1, 1, embed), 'pos_embed': (1, (img // 16)**2 + 1, embed),
                   'patch_embed.proj.weight': (embed, 3, 16, 16),
                   'patch_embed.proj.bias': (embed, )}
    for j in range(depth):
        pre = f'blocks.{j}.'
        out[pre + 'norm1.weight'], out[pre + 'norm1.bias'] = (embed, ), (embed, )
        out[pre + 'attn.qkv.weight'], out[pre + 'attn.qkv.bias'] = (3 * embed, embed), (3 * embed, )
        out[pre + 'attn.proj.weight'], out[pre + 'attn.proj.bias'] = (embed, embed), (embed, )
        out[pre + 'norm2.weight'], out[pre + 'norm2.bias'] = (embed, ), (embed, )
        out[pre + 'mlp.fc1.weight'], out[pre + 'mlp.fc1.bias'] = (4 * embed, embed), (4 * embed, )
        out[pre + 'mlp.fc2.weight'], out[pre + 'mlp.fc2.bias'] = (embed, 4 * embed), (embed, )
    out.update({'norm.weight': (embed, ), 'norm.bias': (embed, ), 'head.weight': (1000, embed),
                'head.bias': (1000, )})
    for p in range(len(locs)):
        out.update(_predictor(f'score_predictor.{p}.', embed, conv=False))
    return out


# ----------------------------------------------------------------------------- checkpoints
def relative_position_index(window: int) -> Tensor:
    """(ws*ws, ws*ws) index into the (2ws-1)^2 bias table (official Swin)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                        indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(res: int, window: int, shift: int) -> Tensor:
    """(num_windows, ws*ws, ws*ws) official SW-MSA mask (0 / -100) of a res x res map."""
    region = torch.zeros(res, res)
    bounds = (0, res - window, res - shift, res)
    for a in range(3):
        for b in range(3):
            region[bounds[a]:bounds[a + 1], bounds[b]:bounds[b + 1]] = 3 * a + b
    windows = region.view(res // window, window, res // window, window).permute(0, 2, 1, 3)
    windows = windows.reshape(-1, window * window)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


def random_checkpoint(layout: Layout, seed: int = 0, window: int = 7) -> StateDict:
    """Random weights with the layout's exact keys and shapes; Swin's index / mask buffers hold
    their true values. Weights ~ N(0, 0.5 / fan_in), LayerNorm weights ~ 1, layer scales ~ 0.1
    and the predictors' last layers wide, so keep scores are well separated."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith('relative_position_index'):
            state[key] = relative_position_index(int(math.isqrt(shape[0])))
        elif key.endswith('attn_mask'):
            state[key] = shifted_window_mask(int(math.isqrt(shape[0])) * window, window,
                                             window // 2)
        elif key.endswith('gamma'):
            state[key] = 0.1 + 0.05 * torch.randn(shape, generator=gen)
        elif len(shape) == 1 and key.endswith('weight'):  # every 1-D weight is a LayerNorm's
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1 or key in ('cls_token', 'pos_embed'):
            state[key] = 0.05 * torch.randn(shape, generator=gen)
        else:
            fan_in = math.prod(shape[1:])
            std = (4.0 if 'out_conv.4' in key else 0.7) / math.sqrt(fan_in)
            state[key] = std * torch.randn(shape, generator=gen)
    return state


# ----------------------------------------------------------------------------- forwards
def _ln(x: Tensor, sd: StateDict, prefix: str, eps: float) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[prefix + 'weight'], sd[prefix + 'bias'], eps)


def _ln_channels_first(x: Tensor, sd: StateDict, prefix: str, eps: float = 1e-6) -> Tensor:
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    x = (x - mean) / torch.sqrt(var + eps)
    return x * sd[prefix + 'weight'][:, None, None] + sd[prefix + 'bias'][:, None, None]


def _linear(x: Tensor, sd: StateDict, prefix: str) -> Tensor:
    return F.linear(x, sd[prefix + 'weight'], sd.get(prefix + 'bias'))


def _token_keep_scores(sd: StateDict, prefix: str, x: Tensor) -> Tensor:
    """Keep log-probability (B, N) of a Linear predictor; global half = plain mean."""
    h = F.gelu(_linear(_ln(x, sd, prefix + 'in_conv.0.', 1e-5), sd, prefix + 'in_conv.1.'))
    half = h.shape[-1] // 2
    h = torch.cat([h[..., :half], h[..., half:].mean(1, keepdim=True).expand_as(h[..., half:])],
                  dim=-1)
    h = F.gelu(_linear(h, sd, prefix + 'out_conv.0.'))
    h = F.gelu(_linear(h, sd, prefix + 'out_conv.2.'))
    return _linear(h, sd, prefix + 'out_conv.4.').log_softmax(-1)[..., 0]


def _top_mask(scores: Tensor, ratio: float) -> Tensor:
    """(B, N) 0/1 mask of the top int(N * ratio) scores (the authors' argsort)."""
    k = int(scores.shape[1] * ratio)
    order = torch.argsort(scores, dim=1, descending=True)
    return torch.zeros_like(scores).scatter(1, order[:, :k], 1.0)


def _window_attention(sd: StateDict, pre: str, x: Tensor, res: Tuple[int, int], heads: int,
                      window: int, shifted: bool) -> Tensor:
    batch, _, dims = x.shape
    height, width = res
    shift = window // 2 if shifted else 0
    if min(height, width) <= window:
        shift, window = 0, min(height, width)
    h = _ln(x, sd, pre + 'norm1.', 1e-5).view(batch, height, width, dims)
    if shift:
        h = torch.roll(h, (-shift, -shift), (1, 2))
    nh, nw = height // window, width // window
    win = h.view(batch, nh, window, nw, window, dims).permute(0, 1, 3, 2, 4, 5)
    win = win.reshape(-1, window * window, dims)
    n = window * window
    q, k, v = _linear(win, sd, pre + 'attn.qkv.').view(-1, n, 3, heads,
                                                       dims // heads).permute(2, 0, 3, 1, 4)
    attn = (q * (dims // heads)**-0.5) @ k.transpose(-2, -1)
    table = sd[pre + 'attn.relative_position_bias_table']
    index = sd[pre + 'attn.relative_position_index']
    attn = attn + table[index.view(-1)].view(n, n, heads).permute(2, 0, 1)
    if shift:
        mask = sd[pre + 'attn_mask']
        attn = (attn.view(batch, -1, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    out = _linear((attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, dims), sd,
                  pre + 'attn.proj.')
    out = out.view(batch, nh, nw, window, window, dims).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(batch, height, width, dims)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    return x + out.reshape(batch, height * width, dims)


def swin_logits(sd: StateDict, x: Tensor, depths: Sequence[int], heads: Sequence[int],
                keep_ratios: Optional[Sequence[float]], locs: Sequence[int],
                window: int = 7) -> Tensor:
    """(B, 1000) logits of the authors' DynamicSwin (or official Swin with ``keep_ratios=None``)
    at inference."""
    x = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=4)
    res = tuple(x.shape[-2:])
    x = _ln(x.flatten(2).transpose(1, 2), sd, 'patch_embed.norm.', 1e-5)
    for i, depth in enumerate(depths):
        keep = None
        for j in range(depth):
            pre = f'layers.{i}.blocks.{j}.'
            if keep_ratios is not None and i == 2 and j in locs:
                p = list(locs).index(j)
                scores = _token_keep_scores(sd, f'layers.2.score_predictor.{p}.', x)
                keep = _top_mask(scores, keep_ratios[p]).unsqueeze(-1)
            x = _window_attention(sd, pre, x, res, heads[i], window, j % 2 == 1)
            slow = _linear(F.gelu(_linear(_ln(x, sd, pre + 'norm2.', 1e-5), sd, pre + 'mlp.fc1.')),
                           sd, pre + 'mlp.fc2.')
            if keep is None:
                x = x + slow
            else:
                fast = _linear(_ln(x, sd, pre + 'fastmlp.fc1.0.', 1e-5), sd, pre + 'fastmlp.fc1.1.')
                x = x + keep * slow + (1 - keep) * fast
        if i < len(depths) - 1:
            batch, _, dims = x.shape
            grid = x.view(batch, *res, dims)
            x = torch.cat([grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2],
                           grid[:, 1::2, 1::2]], dim=-1)
            res = (res[0] // 2, res[1] // 2)
            x = x.reshape(batch, -1, 4 * dims)
            x = _linear(_ln(x, sd, f'layers.{i}.downsample.norm.', 1e-5), sd,
                        f'layers.{i}.downsample.reduction.')
    return _linear(_ln(x, sd, 'norm.', 1e-5).mean(1), sd, 'head.')


def _cnn_keep_scores(sd: StateDict, prefix: str, x: Tensor) -> Tensor:
    """Keep log-probability (B, H*W) of the authors' ConvNeXt predictor (1x1 convs)."""
    h = F.gelu(F.conv2d(_ln_channels_first(x, sd, prefix + 'in_conv.0.'),
                        sd[prefix + 'in_conv.1.weight'], sd[prefix + 'in_conv.1.bias']))
    half = h.shape[1] // 2
    h = torch.cat([h[:, :half], h[:, half:].mean((2, 3), keepdim=True).expand_as(h[:, half:])], 1)
    for i in (0, 2):
        h = F.gelu(F.conv2d(h, sd[f'{prefix}out_conv.{i}.weight'],
                            sd[f'{prefix}out_conv.{i}.bias']))
    h = F.conv2d(h, sd[prefix + 'out_conv.4.weight'], sd[prefix + 'out_conv.4.bias'])
    return h.log_softmax(1)[:, 0].flatten(1)


def convnext_logits(sd: StateDict, x: Tensor, depths: Sequence[int],
                    keep_ratios: Optional[Sequence[float]], locs: Sequence[int]) -> Tensor:
    """(B, 1000) logits of the authors' DynamicCNN (or official ConvNeXt with
    ``keep_ratios=None``) at inference."""
    for i, depth in enumerate(depths):
        if i == 0:
            x = F.conv2d(x, sd['downsample_layers.0.0.weight'], sd['downsample_layers.0.0.bias'],
                         stride=4)
            x = _ln_channels_first(x, sd, 'downsample_layers.0.1.')
        else:
            x = _ln_channels_first(x, sd, f'downsample_layers.{i}.0.')
            x = F.conv2d(x, sd[f'downsample_layers.{i}.1.weight'],
                         sd[f'downsample_layers.{i}.1.bias'], stride=2)
        keep = None
        for j in range(depth):
            pre = f'stages.{i}.{j}.'
            if keep_ratios is not None and i == 2 and j in locs:
                p = list(locs).index(j)
                keep = _top_mask(_cnn_keep_scores(sd, f'score_predictor.{p}.', x),
                                 keep_ratios[p])
            batch, channels, height, width = x.shape
            h = F.conv2d(x, sd[pre + 'dwconv.weight'], sd[pre + 'dwconv.bias'], padding=3,
                         groups=channels).permute(0, 2, 3, 1)
            slow = _linear(F.gelu(_linear(_ln(h, sd, pre + 'norm.', 1e-6), sd, pre + 'pwconv1.')),
                           sd, pre + 'pwconv2.') * sd[pre + 'gamma']
            if keep is None:
                branch = slow
            else:
                fast = _linear(_ln(h, sd, pre + 'fast_path.0.', 1e-6), sd, pre + 'fast_path.1.')
                m = keep.view(batch, height, width, 1)
                branch = m * slow + (1 - m) * fast * sd[pre + 'fast_path_gamma']
            x = x + branch.permute(0, 3, 1, 2)
    return _linear(_ln(x.mean((-2, -1)), sd, 'norm.', 1e-6), sd, 'head.')


def deit_logits(sd: StateDict, x: Tensor, heads: int, keep_ratios: Optional[Sequence[float]],
                locs: Sequence[int]) -> Tensor:
    """(B, 1000) logits of the authors' DynamicViT (or DeiT with ``keep_ratios=None``) at
    inference."""
    x = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=16)
    x = x.flatten(2).transpose(1, 2)
    batch, num, dims = x.shape
    x = torch.cat([sd['cls_token'].expand(batch, -1, -1), x], 1) + sd['pos_embed']
    depth = len({k.split('.')[1] for k in sd if k.startswith('blocks.')})
    for j in range(depth):
        if keep_ratios is not None and j in locs:
            p = list(locs).index(j)
            scores = _token_keep_scores(sd, f'score_predictor.{p}.', x[:, 1:])
            k = int(num * keep_ratios[p])
            keep = torch.argsort(scores, dim=1, descending=True)[:, :k]
            x = torch.cat([x[:, :1], x[:, 1:].gather(1, keep[..., None].expand(-1, -1, dims))], 1)
        pre = f'blocks.{j}.'
        n = x.shape[1]
        q, kk, v = _linear(_ln(x, sd, pre + 'norm1.', 1e-6), sd, pre + 'attn.qkv.').view(
            batch, n, 3, heads, dims // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ kk.transpose(-2, -1)) * (dims // heads)**-0.5).softmax(-1)
        x = x + _linear((attn @ v).transpose(1, 2).reshape(batch, n, dims), sd, pre + 'attn.proj.')
        x = x + _linear(F.gelu(_linear(_ln(x, sd, pre + 'norm2.', 1e-6), sd, pre + 'mlp.fc1.')),
                        sd, pre + 'mlp.fc2.')
    return _linear(_ln(x, sd, 'norm.', 1e-6)[:, 0], sd, 'head.')
