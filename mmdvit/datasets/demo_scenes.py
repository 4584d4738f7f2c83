"""Synthetic scenes for the demo datasets: textured backgrounds with shaped objects on them.

A scene is a sky above a ground region (grass, road or water, each with its own texture) and a
few non-overlapping objects whose class decides their shape and colour, plus small clutter
patches that belong to no class. Everything is drawn from one seeded ``numpy`` generator, so a
seed gives the same images on every machine. The ADE20K and COCO writers turn a scene into
their on-disk formats.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

# Background kinds -> (base BGR colour, texture amplitude).
GROUNDS: Dict[str, Tuple[Tuple[int, int, int], float]] = {
    'grass': ((40, 140, 60), 30.0),
    'road': ((110, 110, 110), 12.0),
    'water': ((150, 90, 30), 20.0),
}
# Object kinds -> (polygon shape, base BGR colour, (min, max) size as a fraction of the image side).
OBJECTS: Dict[str, Tuple[str, Tuple[int, int, int], Tuple[float, float]]] = {
    'person': ('tall_ellipse', (40, 40, 200), (0.25, 0.45)),
    'car': ('wide_box', (200, 60, 20), (0.25, 0.4)),
    'tree': ('disk', (20, 90, 20), (0.2, 0.35)),
    'ball': ('disk', (0, 150, 250), (0.1, 0.2)),
    'kite': ('diamond', (40, 220, 230), (0.15, 0.3)),
}


@dataclass
class SceneObject:
    """One object: its kind, its outline and its filled mask.

    Attributes:
        kind: key of :data:`OBJECTS`.
        polygon: (P, 2) float32 outline in pixel coordinates (x, y).
        mask: (H, W) bool, the pixels the object covers (objects never overlap).
    """
    kind: str
    polygon: np.ndarray
    mask: np.ndarray


@dataclass
class Scene:
    """A rendered scene.

    Attributes:
        image: (H, W, 3) uint8 BGR image.
        background: (H, W) array of background names (``'sky'`` or a :data:`GROUNDS` key).
        objects: the objects, in drawing order.
        clutter: (H, W) bool, pixels of patches that belong to no class.
    """
    image: np.ndarray
    background: np.ndarray
    objects: List[SceneObject]
    clutter: np.ndarray


def outline(shape: str, cx: float, cy: float, size: float) -> np.ndarray:
    """(P, 2) polygon of ``shape`` centred at (cx, cy) with its longer side ``size``."""
    if shape in ('disk', 'tall_ellipse'):
        angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        rx = size / 2 if shape == 'disk' else size / 4
        return np.stack([cx + rx * np.cos(angles), cy + size / 2 * np.sin(angles)], 1)
    if shape in ('wide_box', 'square'):
        w, h = size / 2, (size / 4 if shape == 'wide_box' else size / 2)
        return np.array([[cx - w, cy - h], [cx + w, cy - h], [cx + w, cy + h], [cx - w, cy + h]])
    if shape == 'diamond':
        r = size / 2
        return np.array([[cx, cy - r], [cx + r * 0.7, cy], [cx, cy + r], [cx - r * 0.7, cy]])
    raise ValueError(f'unknown shape {shape!r}')


def texture(rng: np.random.Generator, height: int, width: int, amplitude: float) -> np.ndarray:
    """(H, W, 1) smooth noise in [-amplitude, amplitude]: upsampled coarse noise plus grain."""
    coarse = rng.uniform(-1, 1, (max(height // 8, 2), max(width // 8, 2))).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.uniform(-0.3, 0.3, (height, width)).astype(np.float32)
    return (amplitude * np.clip(smooth + grain, -1, 1))[..., None]


def free_spot(rng: np.random.Generator, taken: np.ndarray, polygon_fn, height: int,
              width: int, size: float, tries: int = 20,
              y_range: Optional[Tuple[float, float]] = None):
    """A polygon of the given size inside the image that overlaps nothing in ``taken`` (with a
    2-pixel margin), or ``None`` after ``tries`` attempts.

    Args:
        y_range: the rows the centre is drawn from (default: wherever the polygon fits).
    """
    low, high = (size / 2, height - size / 2) if y_range is None else y_range
    for _ in range(tries):
        cx = rng.uniform(size / 2, width - size / 2)
        cy = rng.uniform(low, high)
        polygon = polygon_fn(cx, cy)
        mask = np.zeros((height, width), np.uint8)
        cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
        grown = cv2.dilate(mask, np.ones((5, 5), np.uint8))
        if mask.any() and not (grown.astype(bool) & taken).any():
            return polygon, mask.astype(bool)
    return None


def draw_background(rng: np.random.Generator, height: int, width: int,
                    horizon_range: Tuple[float, float] = (0.3, 0.6)
                    ) -> Tuple[np.ndarray, np.ndarray, int]:
    """A sky (vertical gradient) above one textured ground kind of :data:`GROUNDS` (a road gets
    lane markings).

    Args:
        horizon_range: the horizon's row is drawn uniformly in this range, as a fraction of
            the height.

    Returns:
        (H, W, 3) float32 BGR image, (H, W) array of background names (``'sky'`` or the ground
        kind), and the horizon row (the first ground row).
    """
    horizon = int(rng.uniform(*horizon_range) * height)
    ground = list(GROUNDS)[rng.integers(len(GROUNDS))]
    background = np.full((height, width), ground, dtype=object)
    background[:horizon] = 'sky'
    sky = np.linspace(230, 160, height, dtype=np.float32)[:, None, None] * np.array(
        [1.0, 0.8, 0.55], np.float32)
    image = np.broadcast_to(sky, (height, width, 3)).copy()
    base, amplitude = GROUNDS[ground]
    image[horizon:] = np.array(base, np.float32) + texture(rng, height - horizon, width, amplitude)
    if ground == 'road':  # lane markings
        for x in range(int(rng.integers(0, 24)), width, 24):
            image[horizon + (height - horizon) // 2 - 1:horizon + (height - horizon) // 2 + 1,
                  x:x + 12] = 235
    return image, background, horizon


def render_scene(rng: np.random.Generator, height: int, width: int, kinds: List[str],
                 max_objects: int = 4, clutter_patches: int = 2) -> Scene:
    """Draw one scene of size (height, width) with 1 to ``max_objects`` objects of ``kinds``.

    Args:
        rng: the generator every random choice comes from.
        kinds: object kinds (keys of :data:`OBJECTS`) to choose from.
        clutter_patches: number of small random-coloured squares that belong to no class.
    """
    image, background, _ = draw_background(rng, height, width)
    taken = np.zeros((height, width), bool)
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = kinds[rng.integers(len(kinds))]
        shape, colour, (lo, hi) = OBJECTS[kind]
        size = rng.uniform(lo, hi) * min(height, width)
        found = free_spot(rng, taken, lambda cx, cy: outline(shape, cx, cy, size), height,
                           width, size)
        if found is None:
            continue
        polygon, mask = found
        jitter = rng.uniform(-25, 25, 3)
        shading = texture(rng, height, width, 15.0)
        image[mask] = (np.array(colour, np.float32) + jitter + shading[mask]).reshape(-1, 3)
        taken |= mask
        objects.append(SceneObject(kind, polygon.astype(np.float32), mask))

    clutter = np.zeros((height, width), bool)
    for _ in range(clutter_patches):
        side = int(rng.integers(4, 10))
        found = free_spot(rng, taken, lambda cx, cy: outline('square', cx, cy, side), height,
                           width, side)
        if found is None:
            continue
        clutter |= found[1]
        taken |= found[1]
        image[found[1]] = rng.uniform(0, 255, 3)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return Scene(image, background, objects, clutter)
