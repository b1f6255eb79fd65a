"""The batched views against the PIL path (lightly's SimCLRTransform) and against torchvision.

Oracles: torchvision's RandomResizedCrop parameter sampler and its functional colour ops (the
kernels lightly's transforms call), and lightly's SimCLRTransform itself for output statistics.
Statistical tests use fixed seeds (so they are repeatable) and tolerances of 4 standard errors
(a false alarm about once in 16,000 comparisons); each says what a wrong implementation would do.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from scipy import stats
from torchvision.transforms.v2 import RandomResizedCrop

from sslkit import imageops
from sslkit.config import torch_threads
from sslkit.augment import (METHODS, NORMALIZE, AugmentParams, apply_params, augment, dino_view_params,
                            lightly_transform, multi_crop, recipe_views, sample_params, two_views)
from sslkit.data import load_dataset, to_float

DEFAULT = AugmentParams()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These ops are small: on a shared 2-core machine, two torch threads wait on each other while
    other jobs hold a core (this file took 58 s with 2 threads at load 5, 13 s with 1)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes", "train", n=512, image_size=32, seed=0).images


def colour_noise(n, size=32, seed=0):
    """Random RGB pixels: no pixel is grey, so only the grayscale op makes R == G == B."""
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def pil_views(transform, images, seed=0):
    """Every view lightly's transform makes of ``images`` (one PIL image at a time), stacked."""
    torch.manual_seed(seed)
    np.random.seed(seed)  # lightly's blur and solarisation draw from numpy
    views = [v for x in images for v in transform(TF.to_pil_image(x))]
    return torch.stack(views)


def within(x, p, n):
    """|x - p| within 4 standard errors of a binomial proportion p estimated from n samples."""
    return abs(x - p) < 4 * math.sqrt(p * (1 - p) / n)


# ------------------------------------------------------------------------------------------------
# parameter distributions


@pytest.mark.parametrize("height, width, params", [
    (32, 32, DEFAULT),
    # a wide image and ratios no square crop fits: most tries fail, exercising the central-crop fallback
    (24, 48, AugmentParams(crop_scale=(0.6, 1.0), crop_ratio=(2.5, 3.0))),
])
def test_crop_boxes_follow_torchvision(height, width, params):
    n = 4000
    boxes = sample_params(n, height, width, params, generator=0)["boxes"]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert torch.equal(boxes, boxes.round()), "torchvision crops whole pixels"
    # within scale and ratio up to the rounding of w and h to whole pixels (+-0.5 px)
    area = height * width
    lo, hi = params.crop_scale
    fallback = ~((w + 0.5) * (h + 0.5) >= lo * area)
    assert ((w - 0.5) * (h - 0.5) <= hi * area).all()
    assert ((w + 0.5) / (h - 0.5) >= params.crop_ratio[0])[~fallback].all()
    assert ((w - 0.5) / (h + 0.5) <= params.crop_ratio[1])[~fallback].all()

    # same distribution as torchvision's sampler (what lightly's SimCLRTransform calls per image)
    torch.manual_seed(0)
    rrc = RandomResizedCrop(params.image_size, scale=params.crop_scale, ratio=params.crop_ratio)
    ref = [rrc.make_params([torch.zeros(3, height, width)]) for _ in range(n)]
    ref_w = torch.tensor([r["width"] for r in ref], dtype=torch.float)
    ref_h = torch.tensor([r["height"] for r in ref], dtype=torch.float)
    ref_left = torch.tensor([r["left"] for r in ref], dtype=torch.float)
    for ours, theirs in [(w * h / area, ref_w * ref_h / area), ((w / h).log(), (ref_w / ref_h).log()),
                         (boxes[:, 0] / (width - w + 1), ref_left / (width - ref_w + 1))]:
        assert stats.ks_2samp(ours.numpy(), theirs.numpy()).pvalue > 1e-4


def test_crop_sampler_detects_a_wrong_distribution():
    """The KS comparison above has power: crops drawn with scale (0.2, 1) instead of (0.08, 1) fail it."""
    n = 4000
    ours = sample_params(n, 32, 32, AugmentParams(crop_scale=(0.2, 1.0)), generator=0)["boxes"]
    torch.manual_seed(0)
    rrc = RandomResizedCrop(32, scale=DEFAULT.crop_scale)
    ref = [rrc.make_params([torch.zeros(3, 32, 32)]) for _ in range(n)]
    area = ((ours[:, 2] - ours[:, 0]) * (ours[:, 3] - ours[:, 1])).numpy()
    assert stats.ks_2samp(area, [r["width"] * r["height"] for r in ref]).pvalue < 1e-4


def test_jitter_factors_are_uniform_in_their_ranges():
    n = 5000
    d = sample_params(n, 32, 32, DEFAULT, generator=1)
    ranges = [(1 - DEFAULT.brightness, 1 + DEFAULT.brightness), (1 - DEFAULT.contrast, 1 + DEFAULT.contrast),
              (1 - DEFAULT.saturation, 1 + DEFAULT.saturation), (-DEFAULT.hue, DEFAULT.hue)]
    for k, (lo, hi) in enumerate(ranges):
        f = d["factors"][:, k]
        assert lo <= f.min() and f.max() <= hi
        assert stats.kstest(f.numpy(), "uniform", args=(lo, hi - lo)).pvalue > 1e-4
    # every row of `order` is a permutation of the four ops, and each op comes first a quarter of the time
    assert torch.equal(d["order"].sort(1).values, torch.arange(4).expand(n, 4))
    for k in range(4):
        assert within((d["order"][:, 0] == k).float().mean().item(), 0.25, n)
    assert within(d["jitter"].float().mean().item(), DEFAULT.color_jitter_prob, n)
    # brightness can't go below 0: lightly's strength 1.5 gives factors in [0, 2.2]
    strong = sample_params(n, 32, 32, AugmentParams(brightness=1.2), generator=1)["factors"][:, 0]
    assert strong.min() >= 0 and strong.min() < 0.01


def test_hue_shift_in_the_output_is_the_drawn_shift():
    """Fully saturated colours keep their saturation; the hue the view shows moved by the drawn shift."""
    n = 400
    hue_in = torch.rand(n, generator=torch.Generator().manual_seed(0))
    k = (torch.tensor([5.0, 3.0, 1.0])[None, :] + 6 * hue_in[:, None]) % 6
    rgb = 1 - torch.minimum(k, 4 - k).clamp(0, 1)  # (n, 3) pure colours of hue hue_in
    images = (rgb[:, :, None, None] * 255).round().to(torch.uint8).expand(n, 3, 32, 32).contiguous()
    only_hue = AugmentParams(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_jitter_prob=1.0, brightness=0.0,
                             contrast=0.0, saturation=0.0, grayscale_prob=0.0)
    drawn = sample_params(n, 32, 32, only_hue, generator=0)
    out = apply_params(images, drawn, only_hue) * 0.25 + 0.5  # back to [0, 1]
    r, g, b = out[:, :, 0, 0].unbind(1)
    hue_out = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b) / (2 * math.pi)  # hue in turns
    shift = (hue_out - hue_in + 0.5) % 1 - 0.5  # circular difference in [-0.5, 0.5)
    assert shift.abs().max() <= DEFAULT.hue + 0.01
    assert (shift - drawn["factors"][:, 3]).abs().max() < 0.01
    assert shift.std() > 0.1  # it is not the identity


# ------------------------------------------------------------------------------------------------
# the operations against torchvision's (the kernels lightly's transforms call)


def test_colour_ops_match_torchvision():
    x = colour_noise(24).float() / 255
    f = torch.linspace(0.2, 1.8, 24)
    h = torch.linspace(-0.5, 0.49, 24)
    for ours, theirs, factors in [(imageops.brightness, TF.adjust_brightness, f),
                                  (imageops.contrast, TF.adjust_contrast, f),
                                  (imageops.saturation, TF.adjust_saturation, f), (imageops.hue, TF.adjust_hue, h)]:
        ref = torch.stack([theirs(x[i], float(factors[i])) for i in range(24)])
        torch.testing.assert_close(ours(x, factors), ref, atol=2e-4, rtol=0)
    torch.testing.assert_close(imageops.gray(x), TF.rgb_to_grayscale(x), atol=2e-4, rtol=0)
    sigma = torch.linspace(0.1, 2.0, 16)
    ref = torch.stack([TF.gaussian_blur(x[i], [13, 13], [float(sigma[i])] * 2) for i in range(16)])
    torch.testing.assert_close(imageops.gaussian_blur(x[:16], sigma, 2.0), ref, atol=1e-5, rtol=0)


def test_solarize_and_grayscale_match_torchvision(shapes):
    images = shapes[:16]
    only = AugmentParams(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_prob=0.0, color_jitter_prob=0.0,
                         grayscale_prob=0.0, solarize_prob=1.0)
    torch.testing.assert_close(augment(images, only, 0), to_float(TF.solarize(images, 128)), atol=1e-5, rtol=0)
    only = dataclasses.replace(only, solarize_prob=0.0, grayscale_prob=1.0)
    gray = TF.rgb_to_grayscale(images.float(), num_output_channels=3) / 255  # floats: no rounding to uint8
    torch.testing.assert_close(augment(images, only, 0), (gray - 0.5) / 0.25, atol=1e-3, rtol=0)


def test_crop_matches_torchvision_resized_crop(shapes):
    images = shapes[:32]
    params = AugmentParams(hflip_prob=0.0, color_jitter_prob=0.0, grayscale_prob=0.0)
    drawn = sample_params(32, 32, 32, params, generator=0)
    out = apply_params(images, drawn, params)
    ref = torch.stack([to_float(TF.resized_crop(images[i], int(t), int(l), int(b - t), int(r - l), [32, 32]))
                       for i, (l, t, r, b) in enumerate(drawn["boxes"])])
    # bilinear resampling with the same pixel centres; at the box's edge roi_align blends in the pixel
    # just outside the box where torchvision repeats the edge pixel, and torchvision rounds to uint8
    assert (out - ref).abs().mean() < 0.03  # about 2 grey levels in to_float units (1/255/0.25 each)
    inner = (out - ref)[..., 4:-4, 4:-4].abs()
    assert inner.max() < 1.01 / 255 / 0.25  # inside, they differ by torchvision's rounding to uint8 only
    whole = torch.tensor([[0.0, 0.0, 32.0, 32.0]]).expand(32, 4)
    assert torch.equal(apply_params(images, {**drawn, "boxes": whole}, params), to_float(images))


# ------------------------------------------------------------------------------------------------
# independence, probabilities, statistics


def test_every_sample_gets_its_own_parameters():
    """One image repeated: the views differ, and nothing is correlated across samples or views."""
    n = 1000
    image = colour_noise(1)
    images = image.expand(n, -1, -1, -1)
    g = torch.Generator().manual_seed(0)
    d0, d1 = sample_params(n, 32, 32, DEFAULT, g), sample_params(n, 32, 32, DEFAULT, g)

    def area(d):
        return (d["boxes"][:, 2] - d["boxes"][:, 0]) * (d["boxes"][:, 3] - d["boxes"][:, 1])

    bound = 4 / math.sqrt(n)  # 4 standard errors of a correlation near 0
    for a, b in [(area(d0)[:-1], area(d0)[1:]), (d0["factors"][:-1, 3], d0["factors"][1:, 3]),
                 (area(d0), area(d1)), (d0["factors"][:, 0], d1["factors"][:, 0])]:
        assert abs(np.corrcoef(a.numpy(), b.numpy())[0, 1]) < bound
    x0, x1 = two_views(images, DEFAULT, generator=0)
    # every view of the same image is different (but for the rare pair that both drew the whole image
    # and no flip, jitter or grayscale)
    assert len(torch.unique(x0.flatten(1), dim=0)) > 0.99 * n
    m0, m1 = x0.mean((1, 2, 3)), x1.mean((1, 2, 3))
    assert abs(np.corrcoef(m0.numpy(), m1.numpy())[0, 1]) < bound


def test_grayscale_probability_matches_lightly():
    images = colour_noise(400)
    n = 2 * len(images)

    def gray_fraction(views):
        return ((views[:, 0] == views[:, 1]) & (views[:, 1] == views[:, 2])).flatten(1).all(1).float().mean().item()

    assert within(gray_fraction(torch.cat(two_views(images, DEFAULT, generator=0))), DEFAULT.grayscale_prob, n)
    assert within(gray_fraction(pil_views(lightly_transform("simclr", 32), images)), DEFAULT.grayscale_prob, n)
    assert gray_fraction(augment(images, dataclasses.replace(DEFAULT, grayscale_prob=0.0), 0)) == 0


def test_flip_probability_matches_lightly():
    """A grey ramp, dark on the left: a view is flipped when its right half is darker."""
    ramp = torch.linspace(0, 100, 32).round().to(torch.uint8)
    images = ramp.expand(400, 3, 32, 32).contiguous()
    n = 2 * len(images)

    def flipped_fraction(views):
        diff = views[..., 16:].mean((1, 2, 3)) - views[..., :16].mean((1, 2, 3))
        assert (diff != 0).all()  # jitter keeps the ramp's direction (positive factors, no hue on grey)
        return (diff < 0).float().mean().item()

    assert within(flipped_fraction(torch.cat(two_views(images, DEFAULT, generator=0))), DEFAULT.hflip_prob, n)
    assert within(flipped_fraction(pil_views(lightly_transform("simclr", 32), images)), DEFAULT.hflip_prob, n)
    assert flipped_fraction(augment(images, dataclasses.replace(DEFAULT, hflip_prob=0.0), 0)) == 0


def _view_statistics(views):
    """Per view and channel: pixel mean and pixel std; (N, 6)."""
    return torch.cat([views.mean((2, 3)), views.std((2, 3))], dim=1)


def _agree(batched, pil):
    """Mean statistics of the two paths agree within 4 standard errors of their difference plus 0.01.

    The standard error comes from the spread of the statistic over views (the crops of dark and bright
    regions dominate it). The 0.01 allows for PIL rounding to whole grey levels after each of its
    up-to-six operations (unbiased on average; one grey level is 1/255/0.25 = 0.016 in to_float units).
    """
    a, b = _view_statistics(batched), _view_statistics(pil)
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    return bool(((a.mean(0) - b.mean(0)).abs() < 4 * se + 0.01).all())


def test_output_statistics_match_lightly(shapes):
    """Views of the same images through both paths: same per-channel means and stds.

    The comparison has power: the no-colour-jitter ablation fails it.
    """
    images = shapes.repeat(4, 1, 1, 1)  # 2048 images -> 4096 views per path
    pil = pil_views(lightly_transform("simclr", 32), images)
    assert _agree(torch.cat(two_views(images, DEFAULT, generator=0)), pil)
    no_jitter = torch.cat(two_views(images, dataclasses.replace(DEFAULT, color_jitter_prob=0.0), generator=0))
    assert not _agree(no_jitter, pil)


# ------------------------------------------------------------------------------------------------
# determinism, devices, multi-crop, the PIL path by name, errors


def test_a_seed_fixes_the_views():
    images = colour_noise(16)
    x0, x1 = two_views(images, DEFAULT, generator=3)
    y0, y1 = two_views(images, DEFAULT, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x0, y0) and torch.equal(x1, y1)
    assert not torch.equal(x0, x1)  # the generator moves on between the two views
    assert not torch.equal(x0, two_views(images, DEFAULT, generator=4)[0])


@pytest.mark.parametrize("threads, n", [(2, 128), (3, 50), (4, 70)])
def test_views_are_the_same_bit_for_bit_on_any_number_of_threads(threads, n):
    """The views a seed draws do not depend on torch's thread count (a training's arithmetic does: the README's
    "the same machine" includes the threads); a parallel crop or colour op that split its work by thread would."""
    images = colour_noise(n)
    params = dataclasses.replace(DEFAULT, image_size=24, blur_prob=0.5, solarize_prob=0.2)
    one = two_views(images, params, generator=5)
    with torch_threads(threads):
        many = two_views(images, params, generator=5)
        crops = multi_crop(images, dino_view_params(32, num_local=2), generator=1)
    assert all(torch.equal(a, b) for a, b in zip(one, many))
    assert all(torch.equal(a, b) for a, b in zip(multi_crop(images, dino_view_params(32, num_local=2), generator=1),
                                                 crops))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_views_on_a_device_match_the_cpu(device):
    images = colour_noise(16)
    params = dataclasses.replace(DEFAULT, blur_prob=0.5, solarize_prob=0.5)
    x0 = augment(images.to(device), params, generator=0)
    assert x0.device.type == device and x0.dtype == torch.float32
    torch.testing.assert_close(x0.cpu(), augment(images, params, generator=0), atol=1e-3, rtol=0)


def test_multi_crop_gives_dino_views_like_lightly():
    images = colour_noise(8, size=32)
    view_params = dino_view_params(32, num_local=3)
    views = multi_crop(images, view_params, generator=0)
    pil = lightly_transform("dino", 32, n_local_views=3)(TF.to_pil_image(images[0]))
    assert [v.shape[1:] for v in views] == [p.shape for p in pil] == [(3, 32, 32)] * 2 + [(3, 14, 14)] * 3
    local = sample_params(4000, 32, 32, view_params[2], generator=0)["boxes"]
    fraction = (local[:, 2] - local[:, 0]) * (local[:, 3] - local[:, 1]) / 1024
    assert fraction.max() < 0.45 and fraction.min() < 0.07  # DINO's local crops: 5-40% of the image
    assert [p.solarize_prob for p in view_params[:2]] == [0.0, 0.2]


def test_dino_with_other_global_views_crops_its_local_views_from_them():
    views = AugmentParams(image_size=24, crop_scale=(0.7, 1.0), grayscale_prob=0.8, brightness=0.4)
    params = dino_view_params(num_local=2, global_views=views)
    assert params[:2] == [views, views] and len(params) == 4
    assert params[2] == dataclasses.replace(views, image_size=10, crop_scale=(0.05, 0.4))  # 96/224 of 24 px
    assert [v.shape[-1] for v in multi_crop(colour_noise(4), params, generator=0)] == [24, 24, 10, 10]


@pytest.mark.parametrize("strength", [0.5, 1.0, 1.5])
def test_the_recipes_jitter_strength_is_lightlys_cj_strength(strength):
    from sslkit.config import make_config

    views = recipe_views(make_config("smoke", jitter=strength))
    steps = lightly_transform("simclr", 32, cj_strength=strength).transforms[0].transform.transforms
    jitter = next(t.transforms[0] for t in steps if type(t).__name__ == "RandomApply")  # torchvision's
    assert type(jitter).__name__ == "ColorJitter"
    for name in ("brightness", "contrast", "saturation"):
        b = getattr(views, name)  # factors in [1 - b, 1 + b], cut at 0 as torchvision does (and sample_params)
        assert getattr(jitter, name) == pytest.approx((max(0.0, 1 - b), 1 + b))
    assert jitter.hue == pytest.approx((-views.hue, views.hue))
    with pytest.raises(ValueError, match="jitter=3: the colour-jitter strength is a number from 0"):
        recipe_views(make_config("smoke", jitter=3))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("size", [32, 96])
def test_lightly_transform_for_every_method(method, size):
    views = lightly_transform(method, size)(TF.to_pil_image(colour_noise(1, size=size)[0]))
    assert len(views) == (8 if method == "dino" else 2)
    assert views[0].shape == (3, size, size)


def test_lightly_transform_normalises_like_to_float():
    grey = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    transform = lightly_transform("simclr", 32, cj_prob=0.0)
    for view in transform(TF.to_pil_image(grey)):
        torch.testing.assert_close(view, to_float(grey))
    assert NORMALIZE["mean"] == [0.5] * 3


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown method 'simclrr'; choose one of: simclr, moco"):
        lightly_transform("simclrr")
    with pytest.raises(ValueError, match="uint8.*to_uint8"):
        two_views(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*image\[None\]"):
        two_views(colour_noise(1)[0])
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentParams(crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="hue"):
        AugmentParams(hue=0.7)
    with pytest.raises(ValueError, match="color_jitter_prob"):
        AugmentParams(color_jitter_prob=1.5)
