"""tools/analysis_tools/visualize_sparsity.py: PNGs of the right size for any image size, kept
maps that put each kept cell on the pixels it covers, a legend, and figures of random weights
that a seed reproduces."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import force_decisions, random_keep_sets
from mmdvit.analysis.models import build_model, load_config, model_config
from mmdvit.analysis.visualize import (CAPTION_HEIGHT, LEGEND, LEGEND_HEIGHT, caption,
                                       cell_stride, fade_pruned, kept_maps)
from test_flops import run_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VISUALIZE = os.path.join(ROOT, 'tools', 'analysis_tools', 'visualize_sparsity.py')


def write_image(path, height, width, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize('preset', ['swin-test', 'convnext-test', 'deit-test'])
def test_one_png_per_image_with_input_and_one_panel_per_predictor(tmp_path, preset):
    sizes = [(96, 128), (75, 50)]
    images = [write_image(tmp_path / f'img{i}.png', h, w, i) for i, (h, w) in enumerate(sizes)]
    model = build_model(model_config(load_config(preset)), 'mmengine')
    checkpoint = tmp_path / 'model.pth'
    torch.save(model.state_dict(), checkpoint)
    written = run_tool(VISUALIZE, [preset, str(checkpoint), *images, '--out-dir',
                                   str(tmp_path / 'vis')])
    assert [os.path.basename(p) for p in written] == ['img0_sparsity.png', 'img1_sparsity.png']
    for path, (height, width) in zip(written, sizes):
        with Image.open(path) as png:
            assert png.size == ((1 + 3) * width, height + CAPTION_HEIGHT + LEGEND_HEIGHT)
            pixels = np.asarray(png.convert('RGB'))
        with Image.open(images[written.index(path)]) as img:
            original = np.asarray(img.convert('RGB'))
        assert np.array_equal(pixels[CAPTION_HEIGHT:CAPTION_HEIGHT + height, :width], original)
        legend_row = pixels[CAPTION_HEIGHT + height:]
        assert (legend_row < 128).any()  # the legend's text


def test_seeded_random_weight_figures_are_reproducible(tmp_path, capsys):
    image = write_image(tmp_path / 'img.png', 64, 80)

    def figure(seed: int, out: str) -> bytes:
        written = run_tool(VISUALIZE, ['swin-test', 'none', image, '--seed', str(seed),
                                       '--out-dir', str(tmp_path / out)])
        with open(written[0], 'rb') as f:
            return f.read()

    first = figure(3, 'a')
    assert figure(3, 'b') == first
    assert figure(4, 'c') != first
    out = capsys.readouterr().out
    assert 'random weights (seed 3)' in out and 'stage 2 #0: ' in out
    assert 'faded = pruned' in LEGEND


def test_captions_number_stages_as_the_arguments_do():
    info = dict(source='backbone', stage=2, index=1, kept=97, positions=196)
    assert caption(info) == 'stage 2 #1: 97/196'
    info = dict(source='decode_head', stage=0, index=1, kept=25, positions=64)
    assert caption(info) == 'decode_head #1 (level 0): 25/64'


def test_kept_cells_cover_their_pixels_and_pruned_ones_are_faded():
    cfg = load_config('swin-test')
    model = build_model(model_config(cfg), 'mmengine')
    height, width = 50, 70  # stage 3 (stride 16): ceil -> 4 x 5 grid, padded inside
    masks = random_keep_sets(1, 4 * 5, [0.7, 0.5, 0.3], seed=4)
    force_decisions(model, 2, masks)
    image = np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)
    maps = kept_maps(model, image)
    assert len(maps) == 3
    for (info, kept), mask in zip(maps, masks):
        assert kept.shape == (height, width)
        assert info['kept'] == int(mask.sum()) and info['positions'] == 20
        grid = mask.view(4, 5).numpy()
        for i in range(4):
            for j in range(5):
                cell = kept[i * 16:(i + 1) * 16, j * 16:(j + 1) * 16]
                assert cell.size and (cell == grid[i, j]).all()
        faded = fade_pruned(image, kept)
        assert np.array_equal(faded[kept], image[kept])
        assert (faded[~kept].astype(int) >= image[~kept]).all()
        assert (faded[~kept] != image[~kept]).any()


@pytest.mark.parametrize('input_hw, grid_hw, stride', [((224, 224), (14, 14), 16),
                                                       ((50, 70), (4, 5), 16),
                                                       ((75, 50), (4, 3), 16),
                                                       ((64, 96), (16, 24), 4)])
def test_cell_stride_recovers_the_backbone_stride(input_hw, grid_hw, stride):
    assert cell_stride(input_hw, grid_hw) == stride


def test_a_model_without_a_dynamic_backbone_is_refused():
    with pytest.raises(TypeError, match='not an mmdvit dynamic backbone'):
        kept_maps(torch.nn.Conv2d(3, 3, 1), np.zeros((32, 32, 3), np.uint8))
