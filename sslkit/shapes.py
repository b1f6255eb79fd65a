"""The default dataset: procedurally generated shapes, made from a seed, offline.

Every image holds one object whose *shape* is the class (10 shapes). Everything else is a
nuisance drawn at random per image: the object's colour, position, scale and tilt (up to 30 degrees), the
background (a flat colour with noise and a soft gradient) and small distractors (dots and
thin lines). Because colour and position say nothing about the class, raw pixels and a random
network classify it poorly, while a model that has learned *shape* classifies it well: just
what self-supervision has to show. Each image comes with its ground-truth object mask, which
notebook 06 uses to score where Grad-CAM looks.

The ``shifted`` split draws backgrounds never seen in the other splits (stripes and checkers in
two colours), to measure robustness under a domain shift.

Shapes are drawn as signed distance functions (negative inside) in the object's own frame,
where the object has radius about 1; the distance, scaled to pixels, gives anti-aliased edges.

>>> d = make_shapes("test", 20, image_size=32, seed=0)
>>> tuple(d.images.shape), d.images.dtype, tuple(d.masks.shape)
((20, 3, 32, 32), torch.uint8, (20, 32, 32))
>>> bool(torch.equal(d.images, make_shapes("test", 20, image_size=32, seed=0).images))
True
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

GENERATOR_VERSION = 2  # bump when a change alters the pixels; the cache is keyed by it
# v2: objects stand roughly upright (tilted by at most MAX_TILT) instead of any rotation, as objects in
# photos do; a dataset without an "up" leaves rotation prediction (notebook 01) nothing to learn
MAX_TILT = math.pi / 6  # radians: each object is rotated by a uniform angle in [-30 deg, +30 deg]
CLASSES = ("circle", "ring", "square", "triangle", "plus", "star", "crescent", "heart", "L", "T")
SPLITS = ("unlabeled", "train", "test", "shifted")
_SPLIT_OFFSET = {name: i + 1 for i, name in enumerate(SPLITS)}


# ----------------------------------------------------------------------------------------------
# signed distance functions: (x, y) points in the object frame -> distances (negative inside)


def _circle(x, y, r, cx=0.0, cy=0.0):
    return torch.hypot(x - cx, y - cy) - r


def _box(x, y, half_w, half_h, cx=0.0, cy=0.0):
    qx = (x - cx).abs() - half_w
    qy = (y - cy).abs() - half_h
    return torch.hypot(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)


def _regular_polygon(x, y, n, apothem, phase=0.0):
    # max over edges of (p . normal - apothem): exact inside, a lower bound outside
    d = None
    for i in range(n):
        a = phase + i * 2 * math.pi / n
        edge = x * math.cos(a) + y * math.sin(a)
        d = edge if d is None else torch.maximum(d, edge)
    return d - apothem


def _star(x, y, n=5, outer=1.0, inner=0.45):
    phi = torch.atan2(y, x) + math.pi / 2
    a = torch.remainder(phi, 2 * math.pi / n) / (2 * math.pi / n)  # 0 at a tip, 0.5 between
    tip = (a - 0.5).abs() * 2  # 1 at a tip, 0 in a valley
    return (torch.hypot(x, y) - (inner + (outer - inner) * tip)) * 0.6  # radial distance overstates


def _shape_sdf(name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "circle":
        return _circle(x, y, 0.8)
    if name == "ring":
        return (torch.hypot(x, y) - 0.72).abs() - 0.2
    if name == "square":
        return _box(x, y, 0.72, 0.72)
    if name == "triangle":
        return _regular_polygon(x, y + 0.05, 3, 0.5, phase=-math.pi / 2)
    if name == "plus":
        return torch.minimum(_box(x, y, 0.9, 0.26), _box(x, y, 0.26, 0.9))
    if name == "star":
        return _star(x, y)
    if name == "crescent":
        return torch.maximum(_circle(x, y, 0.85), -_circle(x, y, 0.72, cx=0.45))
    if name == "heart":
        lobes = torch.minimum(_circle(x, y, 0.45, cx=-0.38, cy=0.3), _circle(x, y, 0.45, cx=0.38, cy=0.3))
        c = math.sqrt(0.5)  # the tip: a square turned by 45 degrees
        tip = _box(c * x - c * (y + 0.12), c * x + c * (y + 0.12), 0.55, 0.55)
        return torch.minimum(lobes, tip)
    if name == "L":
        return torch.minimum(_box(x, y, 0.24, 0.85, cx=-0.4), _box(x, y, 0.7, 0.24, cx=-0.06, cy=-0.61))
    if name == "T":
        return torch.minimum(_box(x, y, 0.85, 0.24, cy=0.61), _box(x, y, 0.24, 0.8, cy=-0.04))
    raise ValueError(f"unknown shape {name!r}; choose one of: {', '.join(CLASSES)}")


# ----------------------------------------------------------------------------------------------
# the generator


def _split_seed(seed: int, split: str) -> int:
    return seed * 7919 + _SPLIT_OFFSET[split]


def _uniform(g, n, lo, hi):
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _random_colours(g, n):
    return torch.rand(n, 3, generator=g)


def _backgrounds(g, n, size, shifted: bool):
    """(n, 3, H, W) float backgrounds and their (n, 3) mean colour."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    base = _random_colours(g, n)
    if not shifted:
        # flat colour, a soft linear gradient in a random direction, pixel noise
        angle = _uniform(g, n, 0, 2 * math.pi)
        strength = _uniform(g, n, 0.0, 0.15)
        ramp = (angle.cos()[:, None, None] * xs + angle.sin()[:, None, None] * ys) * strength[:, None, None]
        bg = base[:, :, None, None] + ramp[:, None]
        noise_std = _uniform(g, n, 0.02, 0.08)
        bg = bg + torch.randn(n, 3, size, size, generator=g) * noise_std[:, None, None, None]
        return bg, base
    # shifted: stripes or checkers in two colours, never seen in the other splits
    other = _random_colours(g, n)
    angle = _uniform(g, n, 0, math.pi)
    freq = _uniform(g, n, 3.0, 7.0)
    u = (angle.cos()[:, None, None] * xs + angle.sin()[:, None, None] * ys) * freq[:, None, None]
    v = (-angle.sin()[:, None, None] * xs + angle.cos()[:, None, None] * ys) * freq[:, None, None]
    stripes = torch.sin(u * math.pi) > 0
    checkers = (torch.floor(u) + torch.floor(v)).remainder(2) > 0
    use_checkers = torch.rand(n, generator=g) < 0.5
    pattern = torch.where(use_checkers[:, None, None], checkers, stripes).float()
    bg = base[:, :, None, None] * (1 - pattern[:, None]) + other[:, :, None, None] * pattern[:, None]
    bg = bg + torch.randn(n, 3, size, size, generator=g) * 0.03
    return bg, (base + other) / 2


def _contrasting_colours(g, background_mean):
    """Object colours at least 0.35 (RGB distance) from the background's mean colour."""
    colour = _random_colours(g, background_mean.shape[0])
    for _ in range(8):  # re-draw the few too close to the background
        close = (colour - background_mean).norm(dim=1) < 0.35
        if not close.any():
            break
        colour[close] = _random_colours(g, int(close.sum()))
    close = (colour - background_mean).norm(dim=1) < 0.35
    colour[close] = 1.0 - background_mean[close]  # the opposite colour is always far enough
    return colour


def _paint_distractors(g, images, size, max_count=3):
    """Small dots and thin lines in random colours: clutter that is not the object."""
    n = images.shape[0]
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    for _ in range(max_count):
        present = torch.rand(n, generator=g) < 0.5
        colour = _random_colours(g, n)
        cx, cy = _uniform(g, n, 0, size), _uniform(g, n, 0, size)
        is_line = torch.rand(n, generator=g) < 0.5
        radius = _uniform(g, n, 0.04, 0.08) * size
        angle = _uniform(g, n, 0, math.pi)
        half_len = _uniform(g, n, 0.12, 0.3) * size
        for kind, idx in (("line", (present & is_line).nonzero().squeeze(1)),
                          ("dot", (present & ~is_line).nonzero().squeeze(1))):
            if not len(idx):
                continue
            dx, dy = xs - cx[idx, None, None], ys - cy[idx, None, None]
            if kind == "dot":
                dist = torch.hypot(dx, dy) - radius[idx, None, None]
            else:  # distance to a segment of half-length half_len through (cx, cy), minus half a pixel
                cos, sin = angle[idx].cos()[:, None, None], angle[idx].sin()[:, None, None]
                along = ((dx * cos + dy * sin).abs() - half_len[idx, None, None]).clamp(min=0)
                dist = torch.hypot(along, -dx * sin + dy * cos) - 0.5
            alpha = (0.5 - dist).clamp(0, 1)[:, None]  # (m, 1, H, W)
            images[idx] = images[idx] * (1 - alpha) + alpha * colour[idx, :, None, None]


class ShapesData:
    """A split of the shapes dataset held in memory (see ``make_shapes``).

    Attributes: ``images`` (N, 3, H, W) uint8, ``labels`` (N,) int64 (-1 for the unlabeled
    split), ``masks`` (N, H, W) bool object masks, ``classes`` the class names.
    """

    def __init__(self, images, labels, masks, classes, split, seed):
        self.images, self.labels, self.masks = images, labels, masks
        self.classes, self.split, self.seed = list(classes), split, seed


def make_shapes(split: str = "train", n: int = 1000, image_size: int = 32, seed: int = 0,
                cache_dir: str | Path | None = None) -> ShapesData:
    """Generate ``n`` images of one split of the shapes dataset.

    Args:
        split: "unlabeled", "train" (labeled), "test" or "shifted" (test with unseen backgrounds).
            Each split is drawn from its own stream, so splits never share an image.
        n: number of images; classes are balanced (n // 10 each, the remainder spread over the first).
        image_size: height and width in pixels (at least 16).
        seed: the same seed gives bit-identical tensors.
        cache_dir: when given, the split is saved there (keyed by generator version, split, n,
            size and seed) and loaded on the next call.

    Returns:
        ShapesData with images (n, 3, S, S) uint8, labels (n,), masks (n, S, S) bool.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if image_size < 16:
        raise ValueError(f"image_size={image_size} is too small to draw a shape; use 16 or more (32 is the default)")
    if n < 1:
        raise ValueError(f"n={n}: ask for at least one image")
    cache_file = None
    if cache_dir is not None:
        key = f"shapes-v{GENERATOR_VERSION}-{split}-n{n}-s{image_size}-seed{seed}"
        cache_file = Path(cache_dir) / f"{key}.pt"
        if cache_file.exists():
            blob = torch.load(cache_file, weights_only=True)
            return ShapesData(blob["images"], blob["labels"], blob["masks"], CLASSES, split, seed)

    g = torch.Generator().manual_seed(_split_seed(seed, split))
    size, k = image_size, len(CLASSES)
    labels = torch.arange(n) % k
    labels = labels[torch.randperm(n, generator=g)]

    background, bg_mean = _backgrounds(g, n, size, shifted=(split == "shifted"))
    colour = _contrasting_colours(g, bg_mean)
    radius = _uniform(g, n, 0.22, 0.36) * size  # object radius in pixels
    margin = radius * 0.9
    cx = margin + torch.rand(n, generator=g) * (size - 2 * margin)
    cy = margin + torch.rand(n, generator=g) * (size - 2 * margin)
    angle = _uniform(g, n, -MAX_TILT, MAX_TILT)

    # pixel centres -> object frame: p = R(-angle) (x - c) / radius, y pointing up
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    dx = (xs[None] - cx[:, None, None]) / radius[:, None, None]
    dy = -(ys[None] - cy[:, None, None]) / radius[:, None, None]
    c, s = angle.cos()[:, None, None], angle.sin()[:, None, None]
    px, py = c * dx + s * dy, -s * dx + c * dy  # (n, H, W) each

    sdf = torch.empty(n, size, size)
    for class_index, name in enumerate(CLASSES):
        idx = (labels == class_index).nonzero().squeeze(1)
        if len(idx):
            sdf[idx] = _shape_sdf(name, px[idx], py[idx])
    alpha = (0.5 - sdf * radius[:, None, None]).clamp(0, 1)  # anti-aliased coverage of each pixel
    masks = alpha > 0.5

    images = background * (1 - alpha[:, None]) + colour[:, :, None, None] * alpha[:, None]
    _paint_distractors(g, images, size)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    if split == "unlabeled":
        labels = torch.full_like(labels, -1)
    data = ShapesData(images, labels, masks, CLASSES, split, seed)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        torch.save({"images": images, "labels": labels, "masks": masks}, tmp)
        tmp.replace(cache_file)
    return data


def fingerprint(data: ShapesData) -> str:
    """A short hash of the images, for checking determinism across runs."""
    return hashlib.sha256(data.images.numpy().tobytes()).hexdigest()[:16]
