"""The from-scratch code the notebooks teach equals the library's version (micrograd-style).

Each notebook cell tagged ``teach:<name>`` (or ``exercise:<name>``, whose solution the learner writes) is loaded on
its own with ``sslkit.nbtools.load_teaching_cell`` and compared with the library on the same inputs, so the lesson
cannot drift from what the kit trains with.
"""
from pathlib import Path

import pytest
import torch

from sslkit.nbtools import load_teaching_cell

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"


@pytest.fixture(scope="module")
def ntxent():
    # notebook 02's NT-Xent exercise: its solution, as the notebook holds it (the learner's version replaces it)
    return load_teaching_cell(NOTEBOOKS / "02_contrastive.ipynb", "exercise:ntxent")["my_ntxent"]


@pytest.mark.parametrize("batch_size", [2, 5, 32])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
def test_ntxent_from_scratch_equals_lightly(ntxent, batch_size, temperature):
    from lightly.loss import NTXentLoss

    g = torch.Generator().manual_seed(batch_size)
    z0 = torch.randn(batch_size, 16, generator=g, requires_grad=True)
    z1 = (z0.detach() + 0.5 * torch.randn(batch_size, 16, generator=g)).requires_grad_()  # views that roughly agree
    ours = ntxent(z0, z1, temperature)
    ours.backward()
    grads = z0.grad.clone(), z1.grad.clone()
    z0.grad = z1.grad = None
    theirs = NTXentLoss(temperature=temperature)(z0, z1)
    theirs.backward()
    assert ours.ndim == 0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads, (z0.grad, z1.grad), rtol=1e-4, atol=1e-6)


def test_ntxent_rewards_views_that_agree(ntxent):
    # the positive pair is the same image's twin: matching views give a lower loss than shuffled ones
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    assert ntxent(z, z, 0.1) < ntxent(z, z[torch.randperm(16, generator=torch.Generator().manual_seed(1))], 0.1)


# ----------------------------------------------------------------------------------------------
# notebook 06: Grad-CAM from scratch (forward and backward hooks) against pytorch-grad-cam's GradCAM


@pytest.fixture(scope="module")
def gradcam():
    from sslkit.exercises.nb06 import gradcam_map_reference

    namespace = load_teaching_cell(NOTEBOOKS / "06_gradcam.ipynb", "teach:gradcam")
    namespace["gradcam_map"] = gradcam_map_reference  # the exercise's arithmetic, as the notebook hands it in
    return namespace["gradcam"]


@pytest.fixture(scope="module")
def cam_setup():
    from sslkit.cam import prototype_targets
    from sslkit.data import load_dataset, to_float
    from sslkit.models import make_backbone
    from sslkit.supervised import Supervised

    torch.manual_seed(0)
    backbone, dim = make_backbone("resnet_tiny", width=8)
    data = load_dataset("shapes", "test", n=24, seed=0)
    x = to_float(data.images)
    targets = prototype_targets(backbone, data, data.labels)  # SSL-style: similarity to a class prototype
    classifier = Supervised(backbone, data.num_classes).eval()  # a classifier: class scores
    return backbone, classifier, x, data.labels, targets


def _library_gradcam(model, layer, x, targets):
    """pytorch-grad-cam's GradCAM: the final maps, and the maps before upsampling (from its internals)."""
    import numpy as np
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image

    with GradCAM(model=model, target_layers=[layer]) as cam:
        final = cam(input_tensor=x, targets=targets)  # (B, H, W): ReLU, scale, cv2.resize, scale
        acts = cam.activations_and_grads.activations[0].numpy()  # (B, C, h, w), kept by its forward hook
        grads = cam.activations_and_grads.gradients[0].numpy()  # (B, C, h, w), kept by its tensor hook
        coarse = np.maximum(cam.get_cam_image(x, layer, targets, acts, grads), 0)  # (B, h, w) before resizing
    return torch.from_numpy(final), torch.from_numpy(scale_cam_image(coarse))


@pytest.mark.parametrize("layer_name", ["layers.1", "layers.2", "layers.3"])
@pytest.mark.parametrize("kind", ["embedding", "classifier"])
def test_gradcam_from_scratch_equals_pytorch_grad_cam(gradcam, cam_setup, layer_name, kind):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from sslkit.cam import get_layer

    backbone, classifier, x, labels, proto_targets = cam_setup
    if kind == "embedding":
        model, targets = backbone, proto_targets
    else:
        model, targets, layer_name = classifier, [ClassifierOutputTarget(int(k)) for k in labels], f"backbone.{layer_name}"
    layer = get_layer(model, layer_name)
    theirs, theirs_coarse = _library_gradcam(model, layer, x, targets)
    ours = gradcam(model, layer, x, targets)
    ours_coarse = gradcam(model, layer, x, targets, upsample=False)
    assert ours.shape == (len(x), 32, 32) and ours_coarse.shape == theirs_coarse.shape
    # before upsampling: the same weights, weighted sum and ReLU
    assert (ours_coarse - theirs_coarse).abs().max() < 1e-5
    # after: torch's bilinear upsampling (align_corners=False) and OpenCV's cv2.resize agree for these sizes
    assert (ours - theirs).abs().max() < 1e-5


def test_gradcam_from_scratch_leaves_no_hooks_and_works_on_the_stem(gradcam, cam_setup):
    from sslkit.cam import get_layer

    backbone, _, x, _, targets = cam_setup
    layer = get_layer(backbone, "stem.1")  # a BatchNorm followed by an in-place ReLU
    maps = gradcam(backbone, layer, x[:4], targets[:4])
    assert maps.shape == (4, 32, 32) and 0 <= maps.min() and maps.max() <= 1
    assert not layer._forward_hooks and not layer._backward_hooks
