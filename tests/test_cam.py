import pytest
import torch
import torch.nn.functional as F

from sslkit.cam import (EmbeddingSimilarity, cam_in_mask, cam_iou, check_gradients, class_prototypes, compute_cams,
                        get_layer, vit_reshape)
from sslkit.data import load_dataset, to_float
from sslkit.models import make_backbone


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    backbone, _ = make_backbone("resnet_tiny")
    backbone.eval()
    data = load_dataset("shapes", "test", n=20, seed=0)
    x = to_float(data.images)
    with torch.no_grad():
        protos = class_prototypes(backbone(x), data.labels, data.num_classes)
    targets = [EmbeddingSimilarity(protos[k]) for k in data.labels]
    return backbone, data, x, targets


def _reference_gradcam(model, layer, x, targets):
    """Grad-CAM by hand (Selvaraju et al. 2017): channel weights = mean gradient, ReLU, upsample, min-max."""
    acts = {}
    h = layer.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    out = model(x)
    h.remove()
    score = torch.stack([t(o) for t, o in zip(targets, out)]).sum()
    grads = torch.autograd.grad(score, acts["a"])[0]
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * acts["a"]).sum(1))
    cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo, hi = cam.amin(dim=(1, 2), keepdim=True), cam.amax(dim=(1, 2), keepdim=True)
    return ((cam - lo) / (hi - lo + 1e-7)).detach()


def test_library_gradcam_with_embedding_target_matches_the_paper(setup):
    backbone, data, x, targets = setup
    lib = compute_cams(backbone, x, "layers.3", targets, method="gradcam")
    ref = _reference_gradcam(backbone, get_layer(backbone, "layers.3"), x, targets)
    assert lib.shape == (20, 32, 32)
    # pytorch-grad-cam resizes with OpenCV (bilinear, half-pixel centres, like align_corners=False)
    assert (lib - ref).abs().max() < 1e-3


@pytest.mark.parametrize("method", ["gradcam++", "eigencam", "scorecam"])
def test_other_methods_give_maps_in_unit_range(setup, method):
    backbone, data, x, targets = setup
    cams = compute_cams(backbone, x[:4], "layers.3", targets[:4], method=method)
    assert cams.shape == (4, 32, 32) and cams.min() >= 0 and cams.max() <= 1 + 1e-6


def test_scores_on_known_maps():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    perfect = masks.float()
    uniform = torch.ones(2, 8, 8)
    assert cam_in_mask(perfect, masks) == 1.0 and cam_iou(perfect, masks) == 1.0
    assert cam_in_mask(uniform, masks) == pytest.approx(16 / 64)
    assert cam_iou(uniform, masks) == pytest.approx(16 / 64)


def test_bad_inputs_say_how_to_fix(setup):
    backbone, data, x, targets = setup
    with pytest.raises(ValueError, match="no layer 'layer4'; layers it has: .*layers.3"):
        compute_cams(backbone, x[:2], "layer4")
    with pytest.raises(ValueError, match="differ in size"):
        cam_in_mask(torch.zeros(2, 16, 16), torch.zeros(2, 32, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"unknown CAM method 'gradcam\+'; choose one of"):
        compute_cams(backbone, x[:2], "layers.3", method="gradcam+")


def test_vit_layer_without_gradient_and_missing_reshape_are_explained():
    from torchvision.models import VisionTransformer
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=10).eval()
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero: no gradient at all
    x = torch.randn(2, 3, 32, 32)
    assert vit_reshape(torch.zeros(2, 17, 16)).shape == (2, 16, 4, 4)
    with pytest.raises(ValueError, match="pass reshape=sslkit.cam.vit_reshape"):
        check_gradients(vit, "encoder.layers.encoder_layer_1", x)
    with pytest.raises(ValueError, match="zero gradient.*encoder_layer_1.ln_1"):
        check_gradients(vit, "encoder.layers.encoder_layer_1", x, reshape=vit_reshape)
    check_gradients(vit, "encoder.layers.encoder_layer_1.ln_1", x, reshape=vit_reshape)  # the right layer
