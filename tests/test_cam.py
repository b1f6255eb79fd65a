import pytest
import torch
import torch.nn.functional as F

from sslkit.cam import (EmbeddingSimilarity, cam_in_mask, cam_iou, check_gradients, class_prototypes,
                        cls_attention_maps, compute_cams, fit_probe, get_layer, prototype_targets, road_score,
                        two_view_targets, vit_layer, vit_reshape)
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
    def to_unit(m):
        lo, hi = m.amin(dim=(1, 2), keepdim=True), m.amax(dim=(1, 2), keepdim=True)
        return (m - lo) / (hi - lo + 1e-7)

    cam = F.interpolate(to_unit(cam)[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return to_unit(cam).detach()  # scaled before and after upsampling, as pytorch-grad-cam does


def test_library_gradcam_with_embedding_target_matches_the_paper(setup):
    backbone, data, x, targets = setup
    lib = compute_cams(backbone, x, "layers.3", targets, method="gradcam")
    ref = _reference_gradcam(backbone, get_layer(backbone, "layers.3"), x, targets)
    assert lib.shape == (20, 32, 32)
    # pytorch-grad-cam resizes with OpenCV (bilinear, half-pixel centres, like align_corners=False): for these
    # integer upsampling factors the two agree to float precision
    assert (lib - ref).abs().max() < 1e-5


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
    tokens = torch.randn(2, 17, 16)  # class token + 4 x 4 patches: token 1 + 4 * row + col is patch (row, col)
    assert torch.equal(vit_reshape(tokens), tokens[:, 1:].reshape(2, 4, 4, 16).permute(0, 3, 1, 2))
    assert torch.equal(vit_reshape(tokens)[:, :, 2, 3], tokens[:, 1 + 4 * 2 + 3])
    with pytest.raises(ValueError, match="not a class token plus a square grid"):
        vit_reshape(torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match="pass reshape=sslkit.cam.vit_reshape"):
        check_gradients(vit, "encoder.layers.encoder_layer_1", x)
    with pytest.raises(ValueError, match="zero gradient.*encoder_layer_1.ln_1"):
        check_gradients(vit, "encoder.layers.encoder_layer_1", x, reshape=vit_reshape)
    check_gradients(vit, "encoder.layers.encoder_layer_1.ln_1", x, reshape=vit_reshape)  # the right layer


# ----------------------------------------------------------------------------------------------
# targets, probe, ROAD, ViT, the explorer


def test_centred_prototypes_point_away_from_the_mean():
    torch.manual_seed(0)
    common = torch.tensor([10.0, 10.0, 0.0, 0.0])  # what every feature shares
    features = common + torch.cat([torch.tensor([[0.0, 0.0, 1.0, 0.0]]).repeat(5, 1),
                                   torch.tensor([[0.0, 0.0, 0.0, 1.0]]).repeat(5, 1)]) + 0.01 * torch.randn(10, 4)
    labels = torch.tensor([0] * 5 + [1] * 5)
    raw = class_prototypes(features, labels, 2)
    centred = class_prototypes(features, labels, 2, center=features.mean(0))
    assert F.cosine_similarity(raw[0], raw[1], dim=0) > 0.99  # both are "any image"
    assert F.cosine_similarity(centred[0], centred[1], dim=0) < -0.9  # opposite concepts
    target = EmbeddingSimilarity(centred[0], center=features.mean(0))
    assert target(features[0]) > 0.9 and target(features[9]) < -0.9
    with pytest.raises(ValueError, match=r"no labeled image of class\(es\) \[2\]"):
        class_prototypes(features, labels, 3)


def test_prototype_and_two_view_targets_give_one_target_per_image(setup):
    backbone, data, x, _ = setup
    protos = prototype_targets(backbone, data, data.labels)
    views = two_view_targets(backbone, data.images, seed=0)
    assert len(protos) == len(views) == len(data)
    with torch.no_grad():
        out = backbone(x[:1])[0]
    assert -1 <= float(protos[0](out)) <= 1 and -1 <= float(views[0](out)) <= 1
    assert torch.equal(two_view_targets(backbone, data.images, seed=0)[0].direction, views[0].direction)  # repeatable


def test_probe_is_the_linear_probe_as_a_torch_module(setup):
    from sslkit.evaluate import extract_features
    from sslkit.probe import fit_linear

    backbone, data, x, _ = setup
    probe = fit_probe(backbone, data)
    features = extract_features(backbone, data)
    expected = fit_linear(features, data.labels).logits(features)
    with torch.no_grad():
        torch.testing.assert_close(probe(x), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="every one of the 10 classes"):
        fit_probe(backbone, data.subset(torch.nonzero(data.labels < 5).squeeze(1)))


def test_road_rewards_maps_on_the_pixels_that_decide():
    # a "classifier" that only looks at the top-left quarter: maps there beat maps elsewhere
    class TopLeft(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([4.0, -4.0]))

        def forward(self, x):
            return x[:, :, :8, :8].mean(dim=(1, 2, 3))[:, None] * self.w  # (B, 2)

    x = torch.full((6, 3, 16, 16), -1.0)
    x[:, :, :8, :8] = 2.0
    labels = torch.zeros(6, dtype=torch.long)
    right = torch.zeros(6, 16, 16); right[:, :8, :8] = 1.0
    wrong = torch.zeros(6, 16, 16); wrong[:, 8:, 8:] = 1.0
    good, bad = road_score(TopLeft(), x, right, labels), road_score(TopLeft(), x, wrong, labels)
    assert good > bad
    with pytest.raises(ValueError, match="do not match"):
        road_score(TopLeft(), x, right[:, :8], labels)


def test_vit_maps_attention_and_layer():
    from sslkit.models import make_backbone
    torch.manual_seed(0)
    vit, _ = make_backbone("vit_tiny", hidden_dim=32, num_layers=2, num_heads=2)
    vit.eval()
    x = torch.randn(3, 3, 32, 32)
    assert vit_layer(vit) == "encoder.vit.encoder.layers.encoder_layer_1.ln_1"
    attention = cls_attention_maps(vit, x)
    assert attention.shape == (3, 32, 32) and attention.min() >= 0 and attention.max() <= 1
    target = [EmbeddingSimilarity(torch.randn(32)) for _ in range(3)]
    cams = compute_cams(vit, x, vit_layer(vit), target, reshape=vit_reshape)
    assert cams.shape == (3, 32, 32) and cams.max() > 0
    with pytest.raises(ValueError, match="outputs tokens .* pass reshape=sslkit.cam.vit_reshape and the layer "
                                         "'encoder.vit.encoder.layers.encoder_layer_1.ln_1'"):
        compute_cams(vit, x, "encoder.vit.encoder.layers.encoder_layer_1", target)
    with pytest.raises(ValueError, match="zero gradient.*encoder_layer_1.ln_1"):
        compute_cams(vit, x, "encoder.vit.encoder.layers.encoder_layer_1", target, reshape=vit_reshape)
    # EigenCAM needs no gradient: the last block's output is fine for it
    assert compute_cams(vit, x, "encoder.vit.encoder.layers.encoder_layer_1", method="eigencam",
                        reshape=vit_reshape).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="no layer 'blocks.1'; layers it has: .*encoder_layer_1.ln_1"):
        get_layer(vit, "blocks.1")


def test_more_bad_inputs(setup):
    backbone, data, x, targets = setup
    with pytest.raises(ValueError, match="convert uint8 images with sslkit.to_float"):
        compute_cams(backbone, data.images[:2], "layers.3")
    with pytest.raises(ValueError, match="3 targets for 2 images"):
        compute_cams(backbone, x[:2], "layers.3", targets[:3])
    with pytest.raises(ValueError, match="after the pooling"):
        compute_cams(backbone, x[:2], "pool", targets[:2])


def test_a_failing_target_is_an_error_not_fewer_maps_and_modes_come_back(setup):
    """pytorch-grad-cam's ``with`` block prints and swallows an IndexError (a class the classifier does not have):
    compute_cams used to return maps for the batches before it only. Every submodule's train/eval mode is as it was
    after compute_cams and road_score (a frozen BatchNorm stays frozen)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    backbone, data, x, _ = setup
    torch.manual_seed(0)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone(x[:1]).shape[1], 4))
    model.train()
    backbone.eval()  # frozen inside a model that trains
    with pytest.raises(IndexError):
        compute_cams(model, x[:6], "0.layers.2", [ClassifierOutputTarget(k) for k in (0, 1, 2, 3, 7, 1)], batch_size=2)
    assert model.training and not backbone.training
    cams = compute_cams(model, x[:6], "0.layers.2", [ClassifierOutputTarget(k % 4) for k in range(6)], batch_size=4)
    assert cams.shape == (6, 32, 32) and model.training and not backbone.training
    road_score(model, x[:6], cams, torch.arange(6) % 4)
    assert model.training and not backbone.training
    with pytest.raises(ValueError, match="no images to explain"):
        compute_cams(model, x[:0], "0.layers.2")


def test_scorecam_keeps_its_progress_bars_quiet(setup, capsys):
    backbone, data, x, targets = setup
    compute_cams(backbone, x[:2], "layers.3", targets[:2], method="scorecam")
    assert capsys.readouterr().err == ""


def test_cam_explorer_draws_a_static_figure_without_widgets(setup):
    import matplotlib
    matplotlib.use("Agg")
    from sslkit.viz import cam_explorer, show_cams

    backbone, data, x, targets = setup
    calls = []

    def cam_fn(index, method, layer, target):
        calls.append((index, method, layer, target))
        return compute_cams(backbone, x[index:index + 1], layer, [targets[index]], method=method)[0]

    fig = cam_explorer(data.images[:5], cam_fn, ["gradcam", "eigencam"], ["layers.2", "layers.3"], ["prototype"],
                       masks=data.masks[:5], interactive=False, static_images=3)
    assert len(fig.axes) == 3 * 3  # images, then one row per method
    assert calls[0] == (0, "gradcam", "layers.2", "prototype") and len(calls) == 6
    fig = show_cams(data.images[:2], {"a": torch.rand(2, 32, 32)}, data.masks[:2])
    assert len(fig.axes) == 4
