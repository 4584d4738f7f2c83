"""Fine-structure scenes: thin structures and many small objects over textured backgrounds.

The demo scenes (:mod:`.demo_scenes`) hold a few large shapes; a model that blurs or skips
small regions still scores high on them. These scenes are made of what such a model loses:

- large regions (``sky``, ``building``, ``road``, ``grass``, ``water``), all textured: the demo
  background (sky gradient, textured ground with lane markings on a road) with cloud texture on
  the sky and buildings with rows of windows standing on the horizon;
- thin structures: ``pole`` (vertical bars 3-6 px wide), ``fence`` (lattices of 2-px bars
  or diagonal mesh lines; only the lines are labelled, the gaps keep the background) and
  ``railing`` (wire-thin rails: 2-3 parallel 2-px lines with 2-px posts);
- small objects, 6 to 16 px across: ``person`` (standing ellipses 10-16 px tall, half as
  wide), ``car`` (box with a roof, 12-16 px long), ``animal`` (birds: chevrons 6-10 px wide in
  the sky) and ``signboard`` (plates of 7-12 px on poles). They never overlap one another and
  are drawn last, so each one's mask is its visible region.

At the demo's resolution (images of 128-159 px by default, evaluated at a short side of 128)
a 3-px pole or a 2-px fence line is narrower than one pixel of UPerNet's 1/4-scale output.

Labels use ADE20K's class indices (:data:`FINE_ADE20K_LABELS`), so the ADE20K-layout writer
gives a set that mmseg's ``ADE20KDataset`` and the demo configs read with only ``data_root``
changed; the COCO writer lists the small objects as instances. Every random choice comes from
one seeded ``numpy`` generator and every shape is drawn with integer coordinates (cv2, no
anti-aliasing), as in the demo data.
"""
import json
import os.path as osp
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

from .demo_ade20k import write_ade20k
from .demo_coco import write_coco
from .demo_scenes import SceneObject, draw_background, free_spot, outline, texture

# Class name -> 1-based ADE20K class index (the PNG value; 0 = "other", ignored).
FINE_ADE20K_LABELS: Dict[str, int] = {
    'building': 2, 'sky': 3, 'road': 7, 'grass': 10, 'person': 13, 'car': 21, 'water': 22,
    'fence': 33, 'railing': 39, 'signboard': 44, 'pole': 94, 'animal': 127,
}
# The classes by kind of structure (every class is in exactly one group).
FINE_GROUPS: Dict[str, Tuple[str, ...]] = {
    'large': ('sky', 'building', 'road', 'grass', 'water'),
    'thin': ('pole', 'fence', 'railing'),
    'small': ('person', 'car', 'signboard', 'animal'),
}
# Small-object kind -> COCO category name (birds are COCO's 'bird', plates its 'stop sign').
FINE_COCO_KINDS: Dict[str, str] = {
    'person': 'person', 'car': 'car', 'animal': 'bird', 'signboard': 'stop sign'}
POLE_WIDTHS = (3, 6)  # inclusive range of a pole's width in pixels
LINE_WIDTH = 2  # width of the lines of fences and railings, in pixels
SMALL_MAX_SIDE = 18  # no small object's bounding box is longer (drawn size 16, rounding)
META_FILE = 'fine_structure.json'  # what wrote a folder: written next to the data

# Base BGR colours each part draws one of (plus a per-part jitter and the scene's shading). The
# small objects' palettes overlap little (people warm, cars blue / grey / black, signboards
# green / cyan), so that a small model can learn them in a few hundred iterations.
PALETTES: Dict[str, Tuple[Tuple[int, int, int], ...]] = {
    'building': ((150, 150, 150), (120, 160, 190), (70, 80, 150), (180, 190, 200)),
    'pole': ((40, 40, 45), (40, 70, 110), (220, 220, 220), (60, 120, 40)),
    'fence': ((30, 80, 150), (200, 200, 200), (20, 40, 80)),
    'railing': ((30, 30, 30), (190, 190, 200), (30, 150, 200)),
    'signboard': ((50, 170, 40), (200, 200, 40), (40, 220, 160)),
    'person': ((40, 40, 200), (30, 120, 230), (150, 40, 200), (30, 200, 230)),
    'car': ((200, 60, 20), (220, 220, 220), (40, 40, 40), (170, 170, 170)),
    'animal': ((50, 50, 50), (80, 90, 100)),
}
JITTER = 20.0  # per-part colour jitter, uniform in [-JITTER, JITTER] per channel
SHADING = 12.0  # amplitude of the scene-wide shading texture on every part


@dataclass
class Part:
    """One thing drawn over the background.

    Attributes:
        kind: its class (a key of :data:`FINE_ADE20K_LABELS`).
        mask: (H, W) bool, the pixels drawn (later parts may cover some of them).
        colour: (3,) float32 BGR colour it was drawn with, before the shading texture.
    """
    kind: str
    mask: np.ndarray
    colour: np.ndarray


@dataclass
class FineScene:
    """A rendered fine-structure scene.

    Attributes:
        image: (H, W, 3) uint8 BGR image.
        label: (H, W) uint8 ADE20K class indices (:data:`FINE_ADE20K_LABELS` values).
        parts: everything drawn over the background, in drawing order.
        objects: the small objects (never overlapping one another; nothing covers them).
    """
    image: np.ndarray
    label: np.ndarray
    parts: List[Part]
    objects: List[SceneObject]


class _Canvas:
    """The image and label under construction; parts are painted in order."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        self.height, self.width = height, width
        image, background, self.horizon = draw_background(rng, height, width, (0.25, 0.5))
        image[:self.horizon] += texture(rng, self.horizon, width, 10.0)  # clouds
        self.image = image
        self.label = np.vectorize(FINE_ADE20K_LABELS.__getitem__, otypes=[np.uint8])(background)
        self.shading = texture(rng, height, width, SHADING)
        self.parts: List[Part] = []
        self.taken = np.zeros((height, width), bool)  # pixels of small objects
        self.objects: List[SceneObject] = []

    def colour(self, kind: str) -> np.ndarray:
        """(3,) float32: a colour of ``kind``'s palette with jitter."""
        palette = PALETTES[kind]
        base = np.array(palette[self.rng.integers(len(palette))], np.float32)
        return base + self.rng.uniform(-JITTER, JITTER, 3).astype(np.float32)

    def paint(self, kind: str, mask: np.ndarray) -> Part:
        """Draw ``mask`` as ``kind``: its colour plus the shading; the label follows."""
        part = Part(kind, mask, self.colour(kind))
        self.image[mask] = part.colour + self.shading[mask]
        self.label[mask] = FINE_ADE20K_LABELS[kind]
        self.parts.append(part)
        return part

    def empty(self) -> np.ndarray:
        return np.zeros((self.height, self.width), np.uint8)


def _draw_buildings(canvas: _Canvas) -> None:
    """0-3 buildings standing on the horizon, with rows of dark windows (part of the class)."""
    rng, height, width, horizon = canvas.rng, canvas.height, canvas.width, canvas.horizon
    for _ in range(int(rng.integers(0, 4))):
        if horizon < 12:
            return
        w = int(rng.integers(width // 8, width // 3))
        x0 = int(rng.integers(0, width - w))
        top = int(rng.integers(2, horizon - 8))
        mask = canvas.empty().astype(bool)
        mask[top:horizon, x0:x0 + w] = True
        canvas.paint('building', mask)
        step, side = int(rng.integers(4, 7)), int(rng.integers(1, 3))
        for y in range(top + 2, horizon - side, step):
            for x in range(x0 + 2, x0 + w - side, step):
                canvas.image[y:y + side, x:x + side] -= 60


def _draw_fences(canvas: _Canvas) -> None:
    """1-2 fences on the ground: 2-px vertical bars with two rails, or a diagonal mesh of 2-px
    lines with a top rail; only the lines are fence."""
    rng, height, width, horizon = canvas.rng, canvas.height, canvas.width, canvas.horizon
    for _ in range(int(rng.integers(1, 3))):
        length = int(rng.integers(width // 4, width * 4 // 5))
        x0 = int(rng.integers(0, width - length))
        fence_height = int(rng.integers(10, 25))
        bottom = int(rng.integers(horizon + 4, height))
        top = max(bottom - fence_height, 0)
        band = np.zeros((bottom - top, length), np.uint8)
        band[:LINE_WIDTH] = 1  # top rail
        if rng.uniform() < 0.5:  # bars and a middle rail
            gap = int(rng.integers(4, 9))
            for x in range(int(rng.integers(0, gap)), length, gap + LINE_WIDTH):
                band[:, x:x + LINE_WIDTH] = 1
            middle = (bottom - top) // 2
            band[middle:middle + LINE_WIDTH] = 1
        else:  # diagonal mesh
            gap = int(rng.integers(6, 11))
            rows = bottom - top
            for x in range(-rows, length + rows, gap):
                for dx in range(LINE_WIDTH):
                    cv2.line(band, (x + dx, 0), (x + dx + rows, rows), 1, 1, cv2.LINE_8)
                    cv2.line(band, (x + dx + rows, 0), (x + dx, rows), 1, 1, cv2.LINE_8)
        mask = canvas.empty()
        mask[top:bottom, x0:x0 + length] = band
        canvas.paint('fence', mask.astype(bool))


def _draw_railings(canvas: _Canvas) -> None:
    """1-2 railings: 2-3 parallel wire-thin rails (2 px, slightly sloped) with 2-px posts."""
    rng, height, width, horizon = canvas.rng, canvas.height, canvas.width, canvas.horizon
    for _ in range(int(rng.integers(1, 3))):
        length = int(rng.integers(width // 3, width))
        x0 = int(rng.integers(0, width - length + 1))
        x1 = x0 + length - 1
        y0 = int(rng.integers(max(horizon - 10, 4), height - 16))
        y1 = y0 + int(rng.integers(-6, 7))
        spacing, num_rails = int(rng.integers(4, 8)), int(rng.integers(2, 4))
        mask = canvas.empty()
        for k in range(num_rails):
            for t in range(LINE_WIDTH):
                dy = k * spacing + t
                cv2.line(mask, (x0, y0 + dy), (x1, y1 + dy), 1, 1, cv2.LINE_8)
        post_gap = int(rng.integers(10, 20))
        depth = (num_rails - 1) * spacing + LINE_WIDTH + 3
        for x in range(x0, x1 + 1, post_gap):
            y = y0 + round((y1 - y0) * (x - x0) / max(x1 - x0, 1))
            mask[max(y, 0):max(y + depth, 0), x:x + LINE_WIDTH] = 1
        canvas.paint('railing', mask.astype(bool))


def _draw_poles(canvas: _Canvas) -> None:
    """2-6 poles, 3-6 px wide, at least 6 px apart, from the ground up past the horizon; 60% of
    them carry a signboard (a small object) near the top."""
    rng, height, width, horizon = canvas.rng, canvas.height, canvas.width, canvas.horizon
    columns = np.zeros(width, bool)  # columns of poles drawn, grown by 6 px
    for _ in range(int(rng.integers(2, 7))):
        pole_width = int(rng.integers(POLE_WIDTHS[0], POLE_WIDTHS[1] + 1))
        x0 = int(rng.integers(0, width - pole_width))
        if columns[x0:x0 + pole_width].any():
            continue
        columns[max(x0 - 6, 0):x0 + pole_width + 6] = True
        bottom = int(rng.integers(horizon + 2, height + 1))
        top = int(rng.integers(0, max(horizon - 4, 1)))
        mask = canvas.empty().astype(bool)
        mask[top:bottom, x0:x0 + pole_width] = True
        canvas.paint('pole', mask)
        if rng.uniform() < 0.6:
            plate_w, plate_h = int(rng.integers(7, 13)), int(rng.integers(6, 11))
            cx, y = x0 + pole_width / 2, top + int(rng.integers(0, 8))
            polygon = np.array([[cx - plate_w / 2, y], [cx + plate_w / 2 - 1, y],
                                [cx + plate_w / 2 - 1, y + plate_h - 1],
                                [cx - plate_w / 2, y + plate_h - 1]])
            _add_object(canvas, 'signboard', polygon)


def _add_object(canvas: _Canvas, kind: str, polygon: np.ndarray) -> bool:
    """Paint a small object unless it touches another one (2-px margin); whether it was."""
    mask = canvas.empty()
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    grown = cv2.dilate(mask, np.ones((5, 5), np.uint8)).astype(bool)
    if not mask.any() or (grown & canvas.taken).any():
        return False
    part = canvas.paint(kind, mask.astype(bool))
    canvas.taken |= part.mask
    canvas.objects.append(SceneObject(kind, polygon.astype(np.float32), part.mask))
    return True


def car_outline(cx: float, cy: float, size: float) -> np.ndarray:
    """(8, 2) side view of a car ``size`` long: a body with a roof on its middle."""
    w, h = size / 2, size / 4
    return np.array([[cx - w, cy + h], [cx + w, cy + h], [cx + w, cy], [cx + w / 2, cy],
                     [cx + w / 4, cy - h], [cx - w / 2, cy - h], [cx - w * 0.7, cy],
                     [cx - w, cy]])


def bird_outline(cx: float, cy: float, size: float) -> np.ndarray:
    """(6, 2) chevron ``size`` wide: a bird seen from afar."""
    s = size
    return np.array([[cx - s / 2, cy - s * 0.3], [cx, cy], [cx + s / 2, cy - s * 0.3],
                     [cx + s / 2, cy], [cx, cy + s * 0.3], [cx - s / 2, cy]])


def _scatter(canvas: _Canvas, kind: str, count: int, sizes: Tuple[int, int], shape_fn,
             y_range: Tuple[float, float]) -> None:
    """Up to ``count`` small objects of ``kind`` with sizes in ``[low, high)`` px, centred on
    rows in ``y_range``, on free spots."""
    for _ in range(count):
        size = int(canvas.rng.integers(*sizes))
        low, high = max(y_range[0], size / 2), min(y_range[1], canvas.height - size / 2)
        if low >= high:
            return
        found = free_spot(canvas.rng, canvas.taken, lambda cx, cy: shape_fn(cx, cy, size),
                          canvas.height, canvas.width, size, y_range=(low, high))
        if found is not None:
            _add_object(canvas, kind, found[0])


def render_fine_scene(rng: np.random.Generator, height: int, width: int) -> FineScene:
    """Draw one fine-structure scene of size (height, width): background, buildings, fences,
    railings, poles (with signboards), then 3-12 people, 2-8 cars on the ground and 1-8 birds
    in the sky."""
    canvas = _Canvas(rng, height, width)
    _draw_buildings(canvas)
    _draw_fences(canvas)
    _draw_railings(canvas)
    _draw_poles(canvas)
    ground = (canvas.horizon, height)
    _scatter(canvas, 'person', int(rng.integers(3, 13)), (10, 17),
             lambda cx, cy, size: outline('tall_ellipse', cx, cy, size), ground)
    _scatter(canvas, 'car', int(rng.integers(2, 9)), (12, 17), car_outline,
             ground)
    _scatter(canvas, 'animal', int(rng.integers(1, 9)), (6, 11), bird_outline,
             (0, canvas.horizon))
    image = np.clip(canvas.image, 0, 255).astype(np.uint8)
    return FineScene(image, canvas.label, canvas.parts, canvas.objects)


def _write_meta(root: str, layout: str, **params) -> None:
    meta = dict(generator=__name__, layout=layout, **params, classes=FINE_ADE20K_LABELS,
                groups=FINE_GROUPS)
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(osp.join(root, META_FILE), 'w') as f:
        json.dump(meta, f, indent=1)


def _draw_ade20k(rng: np.random.Generator, height: int, width: int
                 ) -> Tuple[np.ndarray, np.ndarray]:
    scene = render_fine_scene(rng, height, width)
    return scene.image, scene.label


def _draw_coco(rng: np.random.Generator, height: int, width: int
               ) -> Tuple[np.ndarray, List[SceneObject]]:
    scene = render_fine_scene(rng, height, width)
    return scene.image, scene.objects


def make_fine_structure_ade20k(root: str, num_train: int = 300, num_val: int = 100,
                               seed: int = 0, size_range: Tuple[int, int] = (128, 160)
                               ) -> Dict[str, int]:
    """Write ``num_train`` + ``num_val`` fine-structure scenes under ``root`` in the ADE20K
    layout (as :func:`mmdvit.datasets.make_ade20k_demo`), and ``root/fine_structure.json``
    with the parameters and classes.

    Image heights and widths are drawn from ``[size_range[0], size_range[1])``; the same
    arguments write the same files. Returns the number of images per split.
    """
    counts = write_ade20k(root, num_train, num_val, seed, size_range, _draw_ade20k)
    _write_meta(root, 'ade20k', seed=seed, num_train=num_train, num_val=num_val,
                size_range=list(size_range))
    return counts


def make_fine_structure_coco(root: str, num_train: int = 300, num_val: int = 100, seed: int = 0,
                             size_range: Tuple[int, int] = (128, 160)) -> Dict[str, int]:
    """Write the scenes' small objects as COCO 2017 instances under ``root`` (as
    :func:`mmdvit.datasets.make_coco_demo`; categories of :data:`FINE_COCO_KINDS`; masks as RLE
    of the drawn pixels, boxes around them), and ``root/fine_structure.json``. Returns the
    number of objects per split."""
    counts = write_coco(root, num_train, num_val, seed, size_range, size_range, _draw_coco,
                        FINE_COCO_KINDS, masks_as_rle=True)
    _write_meta(root, 'coco', seed=seed, num_train=num_train, num_val=num_val,
                size_range=list(size_range))
    return counts
