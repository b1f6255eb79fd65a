"""Exercises of notebook 06 (Grad-CAM: the map from a layer's activations and gradients, and its score against
the object mask)."""

from __future__ import annotations

import torch
from torch import nn

from . import Exercise, Hint, Mistake, register


# ---------------------------------------------------------------------------------------------
# Grad-CAM's channel weights and map, from the activations A and the gradients dA of one layer


def gradcam_map_reference(activations, gradients):
    """Grad-CAM (Selvaraju et al. 2017) from a layer's activations and gradients, both (B, C, h, w), as
    pytorch-grad-cam computes it: the channel weights (B, C) (``GradCAM.get_cam_weights``: each channel's mean
    gradient over the h x w positions) and the maps (B, h, w) (``get_cam_image``: the weighted sum over channels;
    then the ReLU and ``scale_cam_image``: each map to [0, 1])."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image

    a = activations.detach().float().cpu().numpy()
    da = gradients.detach().float().cpu().numpy()
    holder = nn.Conv2d(1, 1, 1)  # GradCAM hooks a model; only its arithmetic is used here, on the given A and dA
    with GradCAM(model=holder, target_layers=[holder]) as cam:
        weights = cam.get_cam_weights(None, None, None, a, da)  # (B, C)
        maps = cam.get_cam_image(None, None, None, a, da).clip(min=0)  # (B, h, w): weighted sum, ReLU
    return torch.from_numpy(weights).float(), torch.from_numpy(scale_cam_image(maps)).float()


def _unit(maps):
    lo, hi = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
    return (maps - lo) / (hi - lo + 1e-7)


def _gradcam_cases():
    """(activations, gradients) pairs: after a ReLU (a ResNet stage) and signed (a ViT's tokens), a non-square
    map, one image, a 1x1 map, and gradients that make every map zero after the ReLU."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    cases = [(r(4, 16, 8, 8).relu(), r(4, 16, 8, 8)), (r(3, 8, 4, 6), r(3, 8, 4, 6)),
             (r(1, 32, 8, 8).relu(), r(1, 32, 8, 8)), (r(2, 4, 1, 1).relu(), r(2, 4, 1, 1))]
    a = r(2, 8, 4, 4).relu() + 0.1
    cases.append((a, -r(2, 8, 4, 4).abs() - 0.1))  # every weight negative: nothing speaks for the target
    return cases


def _gradcam_test(answer):
    for a, da in _gradcam_cases():
        b, c, h, w = a.shape
        got = answer(a.clone(), da.clone())
        if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)):
            raise Hint("return two tensors: the channel weights (B, C) and the maps (B, h, w)")
        weights, maps = (t.detach().float().cpu() for t in got)
        want_weights, want_maps = gradcam_map_reference(a, da)
        if tuple(weights.shape) != (b, c):
            raise Hint(f"the weights should be (B, C) = {(b, c)}, one per channel of each image; yours are "
                       f"{tuple(weights.shape)} (average the gradients over the positions, dim=(2, 3))")
        if tuple(maps.shape) != (b, h, w):
            raise Hint(f"the maps should be (B, h, w) = {(b, h, w)}; yours are {tuple(maps.shape)} (sum the "
                       f"weighted channels over dim=1)")
        if not torch.allclose(weights, want_weights, rtol=1e-4, atol=1e-6):
            _diagnose_weights(a, da, weights)
            raise Hint("your channel weights differ from the gradients' mean over the h x w positions of each channel")
        if torch.isnan(maps).any():
            raise Hint("a map that is zero everywhere after the ReLU became NaN (0 / 0) when scaled: divide by "
                       "(max - min + 1e-7), as pytorch-grad-cam does, so it stays zero")
        if torch.allclose(maps, want_maps, atol=1e-5):
            continue
        _diagnose_maps(a, want_weights, maps)
        raise Hint(f"for B={b}, C={c}, h={h}, w={w} your weights are right but the maps differ (largest difference "
                   f"{(maps - want_maps).abs().max():.3g}): weighted sum over the channels, ReLU, then each map to "
                   f"[0, 1]")


def _diagnose_weights(a, da, weights):
    close = lambda x: torch.allclose(weights, x, rtol=1e-4, atol=1e-6)  # noqa: E731
    if close(da.sum(dim=(2, 3))):
        raise Hint("the weights are summed over the positions instead of averaged: Grad-CAM's weight is the mean "
                   "over the h x w positions (the map looks the same after scaling to [0, 1], but the weights are "
                   "h * w times too large)")
    if close(a.mean(dim=(2, 3))) or close(a.sum(dim=(2, 3))):
        raise Hint("the weights come from the activations: a channel's weight is the mean of its gradient, how "
                   "much the target rises with it, not how strongly it fires")
    if close(da.mean(dim=(2, 3)).relu()):
        raise Hint("the ReLU is on the weights: Grad-CAM keeps every weight with its sign and applies the ReLU "
                   "to the map, after the weighted sum")


def _diagnose_maps(a, weights, maps):
    weighted = (weights[:, :, None, None] * a).sum(dim=1)  # (B, h, w)
    close = lambda x: torch.allclose(maps, x, atol=1e-5)  # noqa: E731
    if close(_unit(weighted)):
        raise Hint("the ReLU is missing: keep only the positive part of the weighted sum (what speaks *for* the "
                   "target) before scaling each map to [0, 1]")
    if close(weighted.relu()):
        raise Hint("the maps are not scaled: bring each map to [0, 1] (subtract its min, divide by max - min + "
                   "1e-7), as pytorch-grad-cam and sslkit do")
    if close(weighted.relu() / (weighted.relu().amax() + 1e-7)) or close(
            (weighted.relu() - weighted.relu().amin()) / (weighted.relu().amax() - weighted.relu().amin() + 1e-7)):
        raise Hint("the maps are scaled with the min and max of the whole batch: scale each map with its own "
                   "(amin / amax over dim=(1, 2), keepdim=True)")


def _gradcam_factory(weights_from="gradients", reduce="mean", relu=True, scale=True, eps=1e-7):
    def wrong(activations, gradients):
        source = gradients if weights_from == "gradients" else activations
        weights = source.mean(dim=(2, 3)) if reduce == "mean" else source.sum(dim=(2, 3))  # (B, C)
        cam = (weights[:, :, None, None] * activations).sum(dim=1)  # (B, h, w)
        cam = cam.relu() if relu else cam
        if scale:
            lo, hi = cam.amin(dim=(1, 2), keepdim=True), cam.amax(dim=(1, 2), keepdim=True)
            cam = (cam - lo) / (hi - lo + eps)
        return weights, cam

    return wrong


register(Exercise(
    name="gradcam_map", notebook="06_gradcam", answer_name="my_gradcam_map", difficulty=2,
    idea="Grad-CAM from a layer's activations A and gradients dA: channel weights = the spatial mean of dA, "
         "map = ReLU of the weighted sum of A over channels, each map scaled to [0, 1]",
    test=_gradcam_test, reference=gradcam_map_reference,
    mistakes=(
        Mistake("the ReLU left out", _gradcam_factory(relu=False), "ReLU is missing"),
        Mistake("the weights from the activations", _gradcam_factory(weights_from="activations"),
                "come from the activations"),
        Mistake("the gradients summed over space instead of averaged", _gradcam_factory(reduce="sum"),
                "instead of averaged"),
        Mistake("the maps not scaled to [0, 1]", _gradcam_factory(scale=False), "not scaled"),
        Mistake("no epsilon: a zero map divided by zero", _gradcam_factory(eps=0.0), "NaN"),
    ),
))


# ---------------------------------------------------------------------------------------------
# The score of a map against the object mask: the share of its energy inside the object


def energy_in_mask_reference(cams, masks):
    """``sslkit.cam.cam_in_mask``: the mean over images of the fraction of each map's sum inside its mask."""
    from ..cam import cam_in_mask

    return cam_in_mask(cams, masks)


def _mask_cases():
    """(maps, masks): maps in [0, 1] of different totals per image, masks of different sizes, a non-square
    image, one image, and a map that is zero everywhere (Grad-CAM gives one when nothing speaks for the target)."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for b, h, w in [(6, 8, 8), (3, 5, 7), (1, 6, 6)]:
        maps = torch.rand(b, h, w, generator=g) ** torch.linspace(1, 4, b)[:, None, None]  # totals differ
        masks = torch.rand(b, h, w, generator=g) < torch.linspace(0.15, 0.6, b)[:, None, None]
        masks[:, 0, 0] = True  # every object has a pixel
        cases.append((maps, masks))
    maps, masks = torch.rand(4, 8, 8, generator=g), torch.rand(4, 8, 8, generator=g) < 0.3
    masks[:, 0, 0] = True
    maps[1] = 0.0
    cases.append((maps, masks))
    return cases


def _energy_test(answer):
    for maps, masks in _mask_cases():
        got = answer(maps.clone(), masks.clone())
        try:
            got = float(got)
        except (TypeError, ValueError, RuntimeError):
            raise Hint(f"return one number (the mean over the images), not {type(got).__name__}") from None
        want = energy_in_mask_reference(maps, masks)
        if got != got:  # NaN
            raise Hint("a map that is zero everywhere gave NaN (0 / 0): it has no energy anywhere, so it scores 0; "
                       "guard the division, e.g. divide by total.clamp(min=1e-12)")
        if abs(got - want) <= 1e-5:
            continue
        _diagnose_energy(maps, masks, got)
        raise Hint(f"for {len(maps)} maps of {tuple(maps.shape[1:])} your score is {got:.4f}, sslkit's cam_in_mask "
                   f"{want:.4f}: per image, the map's sum inside the mask over its total sum; then the mean")


def _diagnose_energy(maps, masks, got):
    m = masks.float()
    total = maps.sum(dim=(1, 2)).clamp(min=1e-12)
    close = lambda x: abs(got - float(x)) <= 1e-5  # noqa: E731
    if close(((maps * (1 - m)).sum(dim=(1, 2)) / total).mean()):
        raise Hint("the mask is inverted: that is the energy outside the object; the mask is True on the object")
    if close((maps * m).sum(dim=(1, 2)).mean()) or close((maps * m).sum()):
        raise Hint("the energy inside is not divided by the map's total: a brighter map would score higher; "
                   "divide each map's sum inside the mask by its sum over the whole image")
    if close(((maps * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2))).mean()):
        raise Hint("that is the mean value of the map inside the mask (divided by the mask's area): the score is "
                   "the share of the map's energy inside the mask, (map * mask).sum() / map.sum()")
    if close((maps * m).sum() / maps.sum()):
        raise Hint("the sums are pooled over all images: compute the share for each image, then take the mean, so "
                   "every image counts the same")


def _energy_unnormalised(cams, masks):
    return (cams * masks).sum(dim=(1, 2)).mean().item()


def _energy_outside(cams, masks):
    return ((cams * ~masks).sum(dim=(1, 2)) / cams.sum(dim=(1, 2)).clamp(min=1e-12)).mean().item()


def _energy_outside_by_subtraction(cams, masks):
    """The mask inverted with 1 - masks, which torch refuses on a bool tensor (NotImplementedError)."""
    return ((cams * (1 - masks)).sum(dim=(1, 2)) / cams.sum(dim=(1, 2)).clamp(min=1e-12)).mean().item()


def _energy_mean_inside(cams, masks):
    return ((cams * masks).sum(dim=(1, 2)) / masks.sum(dim=(1, 2))).mean().item()


def _energy_pooled(cams, masks):
    return ((cams * masks).sum() / cams.sum()).item()


def _energy_unguarded(cams, masks):
    return ((cams * masks).sum(dim=(1, 2)) / cams.sum(dim=(1, 2))).mean().item()


register(Exercise(
    name="energy_in_mask", notebook="06_gradcam", answer_name="my_energy_in_mask", difficulty=1,
    idea="a map's score against the object: the share of its energy (sum) inside the mask, averaged over images",
    test=_energy_test, reference=energy_in_mask_reference,
    mistakes=(
        Mistake("not normalised by the map's total", _energy_unnormalised, "not divided by the map's total"),
        Mistake("the mask inverted", _energy_outside, "mask is inverted"),
        Mistake("1 - masks on a bool mask (torch's NotImplementedError)", _energy_outside_by_subtraction,
                "raised NotImplementedError"),
        Mistake("the mean of the map inside the mask", _energy_mean_inside, "mask's area"),
        Mistake("the sums pooled over all images", _energy_pooled, "pooled over all images"),
        Mistake("a zero map divided by zero", _energy_unguarded, "zero everywhere"),
    ),
))
