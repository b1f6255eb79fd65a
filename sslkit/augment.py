"""Views: the random augmentations that turn one image into two (or more) views.

Joint-embedding methods (SimCLR, MoCo, BYOL, DINO, ...) learn by making the representations of
two random views of the same image agree. Whatever the views may differ in (where the crop is,
the colours, the sharpness), the model learns to ignore: the augmentations are the teacher
(Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
section 3 and appendix A).

Two ways to make views, drawing from the same distributions (``tests/test_augment.py`` checks it):

- **the PIL path**, ``lightly_transform(method, image_size)``: lightly's transforms, one PIL image
  at a time, for real datasets in a DataLoader with workers (set ``ImageData.transform`` to it);
- **the batched path**, ``two_views(images, params, generator)``: a whole uint8 batch (B, 3, H, W)
  at once, on the CPU or a GPU, with *independent* random parameters for every sample.
  torchvision's v2 transforms draw one set of parameters per call (every image of a batch would
  get the same crop). kornia's augmentations do draw per sample, but at 32 px on 2 CPU cores they
  made views at about half the speed of the code here (under the 5x-over-lightly target) and take
  no ``torch.Generator``; so the few operations are written in torch, each a few lines
  (``sslkit.imageops``).
  ``python -m sslkit.bench augment`` measures the batched path against lightly.

Both paths output floats normalised like ``sslkit.data.to_float`` ((x / 255 - MEAN) / STD), the
input distribution ``sslkit.evaluate.extract_features`` feeds a backbone.

>>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
>>> x0, x1 = two_views(images, AugmentParams(), generator=0)     # two views of each image
>>> x0.shape, x0.dtype, bool((x0 != x1).any())
(torch.Size([8, 3, 32, 32]), torch.float32, True)
>>> no_jitter = dataclasses.replace(AugmentParams(), color_jitter_prob=0.0)   # the ablation
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import imageops
from .data import MEAN, STD

# method names lightly_transform knows; the two-view methods share SimCLR's views on small images
METHODS = ("simclr", "moco", "byol", "simsiam", "barlowtwins", "vicreg", "dino")
SMALL_IMAGE = 64  # at or below this size (CIFAR-like): blur off, SimCLR's views, as lightly's CIFAR-10 benchmark
NORMALIZE = {"mean": [MEAN] * 3, "std": [STD] * 3}  # lightly's `normalize` argument for to_float's convention


@dataclass(frozen=True)
class AugmentParams:
    """The random augmentations of one view; SimCLR's at CIFAR size by default.

    The defaults are those of lightly's ``SimCLRTransform(input_size=32, gaussian_blur=0.0)``, the
    setting of lightly's CIFAR-10 examples and benchmark: SimCLR's augmentations with colour jitter
    strength 1 and no blur (a 32 px image is blurry already). The operations run in this order:
    crop, flip, colour jitter, grayscale, blur, solarisation. Switch a part off with its probability:
    ``dataclasses.replace(params, color_jitter_prob=0.0)`` is the "no colour jitter" ablation.
    """

    image_size: int = 32  # output views are image_size x image_size pixels
    crop_scale: tuple[float, float] = (0.08, 1.0)  # crop area as a fraction of the image's, drawn uniformly
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop width / height, drawn log-uniformly
    hflip_prob: float = 0.5  # probability of a left-right flip
    color_jitter_prob: float = 0.8  # probability of colour jitter (all four below, in random order); 0: off
    brightness: float = 0.8  # multiply by a factor drawn in [1 - b, 1 + b]
    contrast: float = 0.8  # blend with the view's mean grey by a factor drawn in [1 - c, 1 + c]
    saturation: float = 0.8  # blend with the view's grey version by a factor drawn in [1 - s, 1 + s]
    hue: float = 0.2  # rotate hues by a shift drawn in [-h, h] turns of the colour wheel (h <= 0.5)
    grayscale_prob: float = 0.2  # probability of turning the view grey (ITU-R 601 luma, as PIL)
    blur_prob: float = 0.0  # probability of Gaussian blur (lightly's default 0.5 is for 224 px images)
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # blur standard deviation in pixels, drawn uniformly
    solarize_prob: float = 0.0  # probability of inverting the pixels at or above 128 of 255 (BYOL, DINO)

    def __post_init__(self):
        def check(ok, what, fix):
            if not ok:
                raise ValueError(f"AugmentParams: {what}; {fix}")

        check(self.image_size >= 1, f"image_size={self.image_size} must be at least 1", "give the view size in pixels")
        lo, hi = self.crop_scale
        check(0 < lo <= hi <= 1, f"crop_scale={self.crop_scale} must satisfy 0 < min <= max <= 1",
              "e.g. (0.08, 1.0): the crop covers 8% to 100% of the image")
        lo, hi = self.crop_ratio
        check(0 < lo <= hi, f"crop_ratio={self.crop_ratio} must satisfy 0 < min <= max", "e.g. (3/4, 4/3)")
        for name in ("hflip_prob", "color_jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
            p = getattr(self, name)
            check(0 <= p <= 1, f"{name}={p} is a probability", "give a number between 0 and 1")
        for name in ("brightness", "contrast", "saturation"):
            check(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0", "0 switches it off")
        check(0 <= self.hue <= 0.5, f"hue={self.hue} must be in [0, 0.5] turns", "0.5 already reaches every hue")
        lo, hi = self.blur_sigma
        check(0 < lo <= hi, f"blur_sigma={self.blur_sigma} must satisfy 0 < min <= max", "e.g. (0.1, 2.0)")


# ----------------------------------------------------------------------------------------------
# the PIL path: lightly's transforms


def recipe_views(cfg) -> AugmentParams:
    """The views of notebook 02's SimCLR recipe, which notebook 03's methods and the fallback trainings of 06
    and 07 share: crops of at least ``min_crop`` of the image (0.7), grey with probability ``grayscale``
    (0.8), colour jitter of strength ``jitter`` (1.0), ``view_size`` px (default: the images' size); each knob
    read from ``cfg.extra``.

    ``jitter`` scales all four colour-jitter ranges, as the strength ``s`` of SimCLR's colour distortion (Chen et
    al. 2020, appendix A) and lightly's ``cj_strength`` do: brightness, contrast and saturation ``0.8 * s``, hue
    ``0.2 * s``. BYOL's views are about ``s = 0.5`` (0.4, 0.4, 0.2, 0.1).

    >>> import sslkit
    >>> v = recipe_views(sslkit.make_config("smoke", view_size=24))
    >>> v.image_size, v.crop_scale, v.grayscale_prob, v.brightness
    (24, (0.7, 1.0), 0.8, 0.8)
    >>> v = recipe_views(sslkit.make_config("smoke", jitter=0.5))
    >>> v.brightness, v.contrast, v.saturation, v.hue
    (0.4, 0.4, 0.4, 0.1)
    """
    s = cfg.extra.get("jitter", 1.0)
    if not 0 <= s <= 2.5:  # hue 0.2 * s must stay within half a turn
        raise ValueError(f"jitter={s}: the colour-jitter strength is a number from 0 (no jitter) to 2.5; "
                         "1.0 is SimCLR's, 0.5 about BYOL's")
    return AugmentParams(image_size=cfg.extra.get("view_size", cfg.image_size),
                         crop_scale=(cfg.extra.get("min_crop", 0.7), 1.0),
                         grayscale_prob=cfg.extra.get("grayscale", 0.8),
                         brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=0.2 * s)


def lightly_transform(method: str = "simclr", image_size: int = 32, **kwargs):
    """lightly's view transform for ``method`` at ``image_size``, normalised like ``to_float``.

    Images of at most ``SMALL_IMAGE`` px get what lightly's CIFAR-10 benchmark uses: SimCLR's
    views with blur off for every two-view method (``SimCLRTransform(input_size=32,
    gaussian_blur=0.0)``, the same distributions as ``AugmentParams()``), and DINO's global and
    local crops with blur off. Larger images get each method's own transform (``MoCoV2Transform``,
    ``BYOLTransform`` for BYOL and Barlow Twins, ``SimSiamTransform``, ``VICRegTransform``,
    ``DINOTransform``). ``kwargs`` go to lightly's class (e.g. ``cj_prob=0.0``: no colour jitter;
    ``n_local_views=2`` for DINO).

    The transform maps a PIL image to a list of views, (3, S, S) float tensors each; in a
    DataLoader, a batch is then ``([x0, x1], labels)``:

    >>> from sslkit.data import load_dataset
    >>> data = load_dataset("shapes", "train", n=8, image_size=32)
    >>> data.transform = lightly_transform("simclr", 32)
    >>> (x0, x1), labels = next(iter(torch.utils.data.DataLoader(data, batch_size=4, num_workers=0)))
    >>> x0.shape
    torch.Size([4, 3, 32, 32])
    """
    from lightly import transforms as LT

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    kwargs.setdefault("normalize", NORMALIZE)
    small = image_size <= SMALL_IMAGE
    if method == "dino":
        kwargs.setdefault("local_crop_size", _local_size(image_size))
        if small:
            kwargs.setdefault("gaussian_blur", (0.0, 0.0, 0.0))
        return LT.DINOTransform(global_crop_size=image_size, **kwargs)
    if small:
        kwargs.setdefault("gaussian_blur", 0.0)
        return LT.SimCLRTransform(input_size=image_size, **kwargs)
    if method in ("byol", "barlowtwins"):  # lightly's Barlow Twins example uses BYOL's views
        return LT.BYOLTransform(LT.BYOLView1Transform(input_size=image_size, **kwargs),
                                LT.BYOLView2Transform(input_size=image_size, **kwargs))
    cls = {"simclr": LT.SimCLRTransform, "moco": LT.MoCoV2Transform, "simsiam": LT.SimSiamTransform,
           "vicreg": LT.VICRegTransform}[method]
    return cls(input_size=image_size, **kwargs)


def _local_size(image_size: int) -> int:
    """DINO's local crop size: 96 px for 224 px global crops, the same ratio at other sizes."""
    return max(8, round(image_size * 96 / 224))


# ----------------------------------------------------------------------------------------------
# the batched path: draw every random parameter at once, then apply them to the whole batch


def _generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    """An int is a seed; None means torch's global random state (``torch.manual_seed``)."""
    if isinstance(generator, int):
        return torch.Generator().manual_seed(generator)
    return generator


def sample_params(n: int, height: int, width: int, params: AugmentParams,
                  generator: torch.Generator | int | None = None) -> dict[str, torch.Tensor]:
    """Draw the random parameters of ``n`` views of (height x width) images, independently per view.

    Everything is drawn on the CPU from ``generator`` (a ``torch.Generator``, a seed, or None for
    torch's global state), so a seed gives the same views on every device. Returns (n, ...) tensors:
    ``boxes`` (n, 4) crop boxes (x_left, y_top, x_right, y_bottom) in pixels; ``flip``, ``jitter``,
    ``gray``, ``blur``, ``solarize`` (n,) bools; ``factors`` (n, 4) brightness, contrast, saturation
    and hue shift; ``order`` (n, 4) the order of the four jitter operations; ``sigma`` (n,) blur std.

    >>> p = sample_params(3, 32, 32, AugmentParams(), generator=0)
    >>> p["boxes"].shape, p["factors"].shape
    (torch.Size([3, 4]), torch.Size([3, 4]))
    """
    g = _generator(generator)

    def uniform(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(shape or (n,), generator=g)

    # random resized crop, torchvision's algorithm (RandomResizedCrop.make_params) for all n at once:
    # up to 10 tries of (area, aspect ratio); keep the first try whose box fits inside the image
    area = uniform(*params.crop_scale, n, 10) * height * width  # (n, 10)
    aspect = torch.exp(uniform(math.log(params.crop_ratio[0]), math.log(params.crop_ratio[1]), n, 10))
    w, h = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()  # (n, 10) each
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(1, keepdim=True)  # (n, 1) the first try that fits
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)  # (n,)
    top, left = (uniform(0, 1) * (height - h + 1)).floor(), (uniform(0, 1) * (width - w + 1)).floor()
    # when no try fits: the central crop of the whole image, cut to the nearest allowed aspect ratio
    fw, fh = float(width), float(height)
    if width / height < params.crop_ratio[0]:
        fh = float(round(width / params.crop_ratio[0]))
    elif width / height > params.crop_ratio[1]:
        fw = float(round(height * params.crop_ratio[1]))
    none_fit = ~fits.any(1)
    w, h = torch.where(none_fit, fw, w), torch.where(none_fit, fh, h)
    top = torch.where(none_fit, (height - h) // 2, top)
    left = torch.where(none_fit, (width - w) // 2, left)

    jitter = uniform(0, 1) < params.color_jitter_prob
    factors = torch.stack([uniform(max(0.0, 1 - params.brightness), 1 + params.brightness),
                           uniform(max(0.0, 1 - params.contrast), 1 + params.contrast),
                           uniform(max(0.0, 1 - params.saturation), 1 + params.saturation),
                           uniform(-params.hue, params.hue)], dim=1)  # (n, 4)
    return {
        "boxes": torch.stack([left, top, left + w, top + h], dim=1),  # (n, 4)
        "flip": uniform(0, 1) < params.hflip_prob,
        "jitter": jitter,
        "factors": factors,
        "order": uniform(0, 1, n, 4).argsort(dim=1),  # (n, 4) a random permutation per view, as torchvision
        "gray": uniform(0, 1) < params.grayscale_prob,
        "blur": uniform(0, 1) < params.blur_prob,
        "sigma": uniform(*params.blur_sigma),
        "solarize": uniform(0, 1) < params.solarize_prob,
    }


def apply_params(images: torch.Tensor, drawn: dict[str, torch.Tensor], params: AugmentParams) -> torch.Tensor:
    """Apply parameters from ``sample_params`` to uint8 images (B, 3, H, W) -> float views (B, 3, S, S).

    Runs on the images' device. The views are normalised like ``sslkit.data.to_float``.
    """
    from torchvision.ops import roi_align

    d = {k: v.to(images.device) for k, v in drawn.items()}
    b, s = len(images), params.image_size
    x = images.float() / 255  # (B, 3, H, W) in [0, 1]
    # crop and resize in one op: roi_align samples each output pixel bilinearly inside its box
    # (and averages several samples per pixel when it shrinks, which anti-aliases like PIL does)
    rois = torch.cat([torch.arange(b, device=x.device, dtype=x.dtype)[:, None], d["boxes"].to(x.dtype)], 1)  # (B, 5)
    x = roi_align(x, rois, output_size=s, spatial_scale=1.0, sampling_ratio=-1, aligned=True)  # (B, 3, S, S)
    # every other operation runs only on the views that drew it
    _apply_to(x, d["flip"], lambda v: v.flip(-1))
    # colour jitter: at step k, each jittered view gets the operation it drew for position k (a random order per view)
    ops = (imageops.brightness, imageops.contrast, imageops.saturation, imageops.hue)
    for step in range(4):
        for k, op in enumerate(ops):
            _apply_to(x, d["jitter"] & (d["order"][:, step] == k), op, d["factors"][:, k])
    _apply_to(x, d["gray"], lambda v: imageops.gray(v).expand(-1, 3, -1, -1))
    _apply_to(x, d["blur"], lambda v, sigma: imageops.gaussian_blur(v, sigma, params.blur_sigma[1]), d["sigma"])
    _apply_to(x, d["solarize"], lambda v: torch.where(v >= 128 / 255, 1 - v, v))
    return x.sub_(MEAN).div_(STD)  # as sslkit.data.to_float


def _apply_to(x, chosen, op, *per_view):
    """In place: x[chosen] = op(x[chosen], *per_view[chosen]), for the chosen views (n,) only."""
    idx = chosen.nonzero().squeeze(1)
    if len(idx):
        x[idx] = op(x[idx], *(a[idx] for a in per_view))


def augment(images: torch.Tensor, params: AugmentParams | None = None,
            generator: torch.Generator | int | None = None) -> torch.Tensor:
    """One random view of every image: uint8 (B, 3, H, W) -> normalised float (B, 3, S, S).

    Each image gets its own crop, flip, jitter, ...; ``generator`` (a ``torch.Generator`` or a
    seed) makes it repeatable. Runs on the images' device (CPU or GPU).
    """
    _check_images(images)
    params = params or AugmentParams()
    drawn = sample_params(len(images), images.shape[-2], images.shape[-1], params, generator)
    return apply_params(images, drawn, params)


def two_views(images: torch.Tensor, params: AugmentParams | None = None,
              generator: torch.Generator | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random views ``x0, x1`` (B, 3, S, S) of every image in a uint8 batch (B, 3, H, W).

    The batched equivalent of lightly's ``SimCLRTransform`` (see ``AugmentParams``).

    >>> images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> x0, x1 = two_views(images, generator=0)
    >>> torch.equal(x0, two_views(images, generator=0)[0])   # same seed, same views
    True
    """
    g = _generator(generator)
    params = params or AugmentParams()
    return augment(images, params, g), augment(images, params, g)


def multi_crop(images: torch.Tensor, view_params: list[AugmentParams],
               generator: torch.Generator | int | None = None) -> list[torch.Tensor]:
    """One random view per entry of ``view_params``: a list of (B, 3, S_i, S_i) float batches.

    With ``dino_view_params`` it is DINO's multi-crop (Caron et al. 2021): two global views of most
    of the image, then local views, small crops of a small part of it.

    >>> images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> [v.shape[-1] for v in multi_crop(images, dino_view_params(32, num_local=2), generator=0)]
    [32, 32, 14, 14]
    """
    g = _generator(generator)
    return [augment(images, p, g) for p in view_params]


def flip_and_translate(images: torch.Tensor, max_shift: int = 4, generator: torch.Generator | None = None):
    """Random horizontal flips and translations of up to ``max_shift`` pixels, on a batch: the light
    augmentation of supervised training and fine-tuning (not a view for self-supervised learning).

    ``images`` (B, C, H, W) of any dtype; the border is filled by reflection (as in the usual
    "pad 4 and crop" CIFAR augmentation). Runs on the batch's device, no Python loop.

    >>> x = torch.arange(16.).view(1, 1, 4, 4)
    >>> flip_and_translate(x, max_shift=0).shape
    torch.Size([1, 1, 4, 4])
    """
    b, _, h, w = images.shape
    dev = images.device
    rand = (lambda *s: torch.rand(*s, generator=generator).to(dev)) if generator is not None else \
        (lambda *s: torch.rand(*s, device=dev))
    flip = rand(b) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if max_shift == 0:
        return images
    padded = F.pad(images.float(), (max_shift,) * 4, mode="reflect").to(images.dtype)  # (B, C, H+2s, W+2s)
    sy = (rand(b) * (2 * max_shift + 1)).long()  # (B,) offsets in [0, 2s]
    sx = (rand(b) * (2 * max_shift + 1)).long()
    rows = sy[:, None] + torch.arange(h, device=dev)  # (B, H)
    cols = sx[:, None] + torch.arange(w, device=dev)  # (B, W)
    out = padded[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


LOCAL_CROP_SCALE = (0.05, 0.4)  # DINO's local crops: 5-40% of the image


def dino_view_params(image_size: int = 32, num_local: int = 6, local_size: int | None = None,
                     global_views: AugmentParams | None = None) -> list[AugmentParams]:
    """The parameters of DINO's 2 + num_local views, as lightly's ``DINOTransform`` (and
    ``lightly_transform("dino", image_size, n_local_views=num_local)``) makes them.

    Global crops cover 40-100% of the image, local crops 5-40% at ``local_size`` px (default:
    DINO's 96/224 of ``image_size``). Colour jitter has strength 0.5; the first global view is
    always blurred, the second blurred with probability 0.1 and solarised with 0.2, local views
    blurred with 0.5; on images of at most ``SMALL_IMAGE`` px blur is off (lightly's CIFAR setting).

    ``global_views`` replaces both global views with other ones (notebook 03 gives DINO the views of its other
    methods; ``image_size`` is then theirs); the local views are the same augmentations, cropped as DINO's.

    >>> [(v.image_size, v.grayscale_prob) for v in dino_view_params(num_local=1, global_views=AugmentParams(24))]
    [(24, 0.2), (24, 0.2), (10, 0.2)]
    """
    if global_views is not None:
        local = dataclasses.replace(global_views, image_size=local_size or _local_size(global_views.image_size),
                                    crop_scale=LOCAL_CROP_SCALE)
        return [global_views, global_views] + [local] * num_local
    small = image_size <= SMALL_IMAGE
    base = AugmentParams(image_size=image_size, crop_scale=(0.4, 1.0), brightness=0.4, contrast=0.4,
                         saturation=0.2, hue=0.1)
    global0 = dataclasses.replace(base, blur_prob=0.0 if small else 1.0)
    global1 = dataclasses.replace(base, blur_prob=0.0 if small else 0.1, solarize_prob=0.2)
    local = dataclasses.replace(base, image_size=local_size or _local_size(image_size), crop_scale=LOCAL_CROP_SCALE,
                                blur_prob=0.0 if small else 0.5)
    return [global0, global1] + [local] * num_local


def _check_images(images):
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected a batch of RGB images (B, 3, H, W), got {shape}; for one image use "
                         f"image[None], for a dataset pass data.images")
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images in [0, 255], got {images.dtype}; for floats normalised by "
                         f"to_float use sslkit.data.to_uint8(x), for floats in [0, 1] (x * 255).round().byte()")
