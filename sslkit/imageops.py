"""The pixel operations of the batched views, each on a batch of float views with one factor per view.

``sslkit.augment.apply_params`` runs them on the views that drew them: colour jitter (``brightness``,
``contrast``, ``saturation``, ``hue``), ``gray`` and ``gaussian_blur``. Each takes views (n, 3, S, S) in
[0, 1] and one factor per view (n,), and computes what torchvision's functional transform of the same name
computes for one image (``tests/test_augment.py`` checks each against it).

>>> x = torch.rand(2, 3, 8, 8)
>>> torch.allclose(saturation(x, torch.zeros(2)), gray(x).expand(-1, 3, -1, -1))   # saturation 0: grey
True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gray(x):  # (n, 3, S, S) -> (n, 1, S, S), ITU-R 601-2 luma as PIL's convert("L")
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _blend(x, y, f):  # f * x + (1 - f) * y, clipped to [0, 1]
    f = f[:, None, None, None]
    return (f * x + (1 - f) * y).clamp(0, 1)


def brightness(x, f):  # a blend with black
    return (x * f[:, None, None, None]).clamp(0, 1)


def contrast(x, f):  # a blend with the view's mean grey
    return _blend(x, gray(x).mean(dim=(1, 2, 3), keepdim=True), f)


def saturation(x, f):  # a blend with the view's grey version
    return _blend(x, gray(x), f)


def hue(x, shift):
    """Rotate the hue of every pixel by ``shift`` turns: RGB -> HSV, shift H, HSV -> RGB."""
    r, g, b = x.unbind(1)
    v = x.amax(1)  # (n, S, S) value
    c = v - x.amin(1)  # chroma
    s = c / v.clamp_min(1e-8)  # saturation (0 where v = 0, as c = 0 there)
    cc = c.clamp_min(1e-8)
    h = torch.where(v == r, (g - b) / cc, torch.where(v == g, (b - r) / cc + 2, (r - g) / cc + 4))
    h = (h / 6 + shift[:, None, None]) % 1.0  # hue in turns, shifted
    # HSV -> RGB: channel n in (R, G, B) = (5, 3, 1) is v - v * s * clamp(min(k, 4 - k), 0, 1)
    k = (torch.tensor([5.0, 3.0, 1.0], device=x.device)[None, :, None, None] + 6 * h[:, None]) % 6
    return v[:, None] - (v * s)[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)


def gaussian_blur(x, sigma, max_sigma):
    """Blur each view with its own sigma: a separable Gaussian as one grouped convolution."""
    n, c, height, width = x.shape
    radius = min(math.ceil(3 * max_sigma), height - 1, width - 1)  # reflect padding needs radius < size
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-t**2 / (2 * sigma[:, None] ** 2))  # (n, 2r + 1)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n * c, 2r + 1)
    y = F.pad(x.reshape(1, n * c, height, width), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=n * c)  # along rows
    y = F.conv2d(y, kernel[:, None, :, None], groups=n * c)  # along columns
    return y.reshape(n, c, height, width)
