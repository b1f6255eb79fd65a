"""MAE and the tiny ViT: shapes, the loss on hidden patches only, errors, attention maps against a
hand-computed softmax, determinism, lightly's patchify/unpatchify as the reference layout, the optimiser's
parameter groups (weight decay) and the reconstruction snapshots. Fine-tuning (layer-wise lr decay) is
tested in test_finetune.py."""

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from lightly.models import utils

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import sslkit
from sslkit.data import to_float
from sslkit.methods import make_method
import sslkit.methods.mae as mae_module
from sslkit.methods.mae import MAE, ReconstructionSnapshots, check_mask_ratio, masked_mse, patch_targets
from sslkit.models import TinyViT, make_backbone

SMALL = dict(hidden_dim=32, num_layers=2, num_heads=2)  # fast: the tests check wiring, not quality
DECODER = dict(decoder_dim=32, decoder_depth=1, decoder_heads=2)


def small_mae(seed=0, **knobs):
    torch.manual_seed(seed)
    backbone, dim = make_backbone("vit_tiny", **SMALL)
    return MAE(backbone, dim, **{**DECODER, **knobs})


@pytest.fixture(scope="module")
def images():
    return sslkit.load_dataset("shapes", "train", n=16, seed=0).images


# ----------------------------------------------------------------------------------------------
# the ViT


def test_vit_tiny_by_name_gives_class_token_features_and_tokens():
    backbone, dim = make_backbone("vit_tiny")
    assert isinstance(backbone, TinyViT) and dim == backbone.feature_dim
    assert (backbone.patch_size, backbone.grid_size, backbone.num_patches) == (4, 8, 64)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features, tokens = backbone.eval()(x), backbone.tokens(x)
    assert features.shape == (3, dim)
    assert tokens.shape == (3, 1 + 64, dim)
    assert torch.equal(features, tokens[:, 0])  # the feature is the class token
    assert backbone.vit.encoder.layers[-1].self_attention.num_heads == backbone.vit.encoder.layers[0].num_heads


def test_mean_pool_is_the_mean_patch_token():
    backbone, dim = make_backbone("vit_tiny", pool="mean", **SMALL)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone(x), backbone.tokens(x)[:, 1:].mean(1))
    with pytest.raises(ValueError, match="'cls'.*'mean'"):
        make_backbone("vit_tiny", pool="max")


def test_vit_forward_is_torchvisions_forward():
    torch.manual_seed(0)
    backbone, _ = make_backbone("vit_tiny", **SMALL)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone.eval()(x), backbone.vit.eval()(x), atol=1e-6)  # heads = Identity


def test_image_size_not_divisible_by_patch_size_lists_sizes_that_work():
    with pytest.raises(ValueError) as e:
        make_backbone("vit_tiny", image_size=30)
    message = str(e.value)
    assert "28" in message and "32" in message  # multiples of the patch size nearby
    assert "1, 2, 3, 5, 6, 10, 15, 30" in message  # patch sizes that divide 30


def test_width_not_divisible_by_heads_suggests_a_width():
    with pytest.raises(ValueError, match="hidden_dim=50 must be a multiple of num_heads=4.*hidden_dim=52"):
        make_backbone("vit_tiny", hidden_dim=50, num_heads=4)
    with pytest.raises(ValueError, match="patch_size=4"):
        make_backbone("vit_tiny", image_size=2)  # smaller than one patch


def test_wrong_image_size_at_run_time_says_which_size():
    backbone, _ = make_backbone("vit_tiny", **SMALL)
    with pytest.raises(ValueError, match="32x32 px"):
        backbone(torch.zeros(1, 3, 28, 28))
    mae = MAE(backbone, **DECODER)
    with pytest.raises(ValueError, match="32x32 px"):  # checked before the crop would resize it away
        mae.training_step(torch.zeros(2, 3, 40, 40, dtype=torch.uint8))


def test_wrong_channel_count_names_both_counts():
    backbone, _ = make_backbone("vit_tiny", **SMALL)
    with pytest.raises(ValueError, match=r"built for 3-channel images but got 1 channels.*in_channels=1"):
        backbone(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="3-channel.*got 1"):
        MAE(backbone, **DECODER).training_step(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    gray, dim = make_backbone("vit_tiny", in_channels=1, **SMALL)
    assert gray(torch.zeros(2, 1, 32, 32)).shape == (2, dim)
    with pytest.raises(ValueError, match="built for 1-channel images but got 3"):
        gray(torch.zeros(2, 3, 32, 32))


def test_attention_maps_match_a_softmax_computed_by_hand():
    torch.manual_seed(0)
    backbone, dim = make_backbone("vit_tiny", hidden_dim=48, num_layers=2, num_heads=3)
    backbone.eval()
    x = torch.randn(2, 3, 32, 32)
    weights = backbone.last_attention(x)
    assert weights.shape == (2, 3, 65, 65)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 65), atol=1e-5)

    # reference: the last block's input by running the blocks before it, then softmax(q k^T / sqrt(d))
    vit = backbone.vit
    with torch.no_grad():
        tokens = backbone.encoder.preprocess(x)  # (B, 65, D) with position embeddings
        for block in vit.encoder.layers[:-1]:
            tokens = block(tokens)
        last = vit.encoder.layers[-1]
        y = last.ln_1(tokens)
        w, b = last.self_attention.in_proj_weight, last.self_attention.in_proj_bias
        q, k, _ = F.linear(y, w, b).chunk(3, dim=-1)  # (B, 65, D) each
        heads, d = 3, dim // 3
        q = q.view(2, 65, heads, d).transpose(1, 2)  # (B, heads, 65, d)
        k = k.view(2, 65, heads, d).transpose(1, 2)
        reference = (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(-1)  # (B, heads, 65, 65)
    assert torch.allclose(weights, reference, atol=1e-5)

    per_head = backbone.cls_attention(x, per_head=True)
    assert per_head.shape == (2, 3, 8, 8)
    assert torch.allclose(per_head, reference[:, :, 0, 1:].reshape(2, 3, 8, 8), atol=1e-5)
    maps = backbone.cls_attention(x)
    assert maps.shape == (2, 8, 8)
    assert torch.allclose(maps, per_head.mean(1))
    self_attention = reference[:, :, 0, 0].mean(1)  # what the class token pays to itself
    assert torch.allclose(maps.sum((1, 2)) + self_attention, torch.ones(2), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# MAE


def test_mae_by_name_and_shapes(images):
    torch.manual_seed(0)
    backbone, dim = make_backbone("vit_tiny", **SMALL)
    mae = make_method("mae", backbone, **DECODER)
    assert isinstance(mae, MAE) and mae.backbone is backbone
    assert mae.mask_ratio == 0.75 and mae.num_visible_patches == 16
    x = to_float(images)
    idx_keep, idx_mask = mae.random_mask(len(x))
    assert idx_keep.shape == (16, 1 + 16) and idx_mask.shape == (16, 48)
    assert (idx_keep[:, 0] == 0).all()  # the class token is always visible
    pred = mae(x, idx_keep)
    assert pred.shape == (16, 64, 4 * 4 * 3)
    loss = mae.training_step(images, None)
    assert loss.shape == () and torch.isfinite(loss)


def test_the_encoder_sees_only_the_visible_tokens(images):
    for ratio, visible in [(0.25, 48), (0.5, 32), (0.75, 16), (0.9, 6)]:
        mae = small_mae(mask_ratio=ratio, crop_scale=(0.2, 1.0))  # through the crop-and-flip views too
        assert mae.num_visible_patches == visible
        seen = []
        hook = mae.backbone.vit.encoder.layers[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
        mae.training_step(images[:4], None)
        hook.remove()
        assert seen == [torch.Size([4, 1 + visible, 32])]


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5, "0.75"])
def test_mask_ratio_outside_0_1_says_which_values_work(ratio):
    with pytest.raises(ValueError, match="between 0 and 1"):
        small_mae(mask_ratio=ratio)


def test_mask_ratio_that_leaves_nothing_visible_is_refused():
    with pytest.raises(ValueError, match="at most 0.984"):
        check_mask_ratio(0.99, 64)
    assert check_mask_ratio(0.98, 64) == 1


def test_mae_needs_a_vit():
    resnet, dim = make_backbone("resnet_tiny")
    with pytest.raises(ValueError, match="vit_tiny"):
        MAE(resnet, dim)


def test_loss_counts_only_the_hidden_patches(images):
    torch.manual_seed(0)
    pred, target = torch.randn(4, 64, 48), torch.randn(4, 64, 48)
    mask = torch.rand(4, 64) < 0.75
    loss = masked_mse(pred, target, mask)
    changed_visible = torch.where(mask[..., None], pred, pred + 100.0)
    assert torch.equal(masked_mse(changed_visible, target, mask), loss)
    changed_hidden = torch.where(mask[..., None], pred + 1.0, pred)
    assert masked_mse(changed_hidden, target, mask) > loss
    # the same number as lightly's example, which predicts only at the hidden indices
    mae = small_mae()
    x = to_float(images)
    idx_keep, idx_mask = mae.random_mask(len(x))
    loss, pred, target, mask = mae.loss(x, idx_keep, idx_mask)
    assert mask.sum(1).eq(48).all()
    reference = F.mse_loss(utils.get_at_index(pred, idx_mask - 1), utils.get_at_index(target, idx_mask - 1))
    assert torch.allclose(loss, reference, atol=1e-6)


def test_patch_layout_is_lightlys_and_round_trips(images):
    x = to_float(images)
    patches = patch_targets(x, 4, norm_pix_loss=False)
    assert patches.shape == (16, 64, 48)
    assert torch.equal(utils.unpatchify(patches, 4, 3), x)
    assert torch.equal(patches[:, 9].view(16, 4, 4, 3).permute(0, 3, 1, 2), x[:, :, 4:8, 4:8])  # row 1, col 1
    normed = patch_targets(x, 4, norm_pix_loss=True)
    assert torch.allclose(normed.mean(-1), torch.zeros(16, 64), atol=1e-4)


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_reconstruct_pictures(images, norm_pix_loss):
    mae = small_mae(norm_pix_loss=norm_pix_loss)
    masked, recon, mask = mae.reconstruct(images, seed=0)
    assert masked.shape == recon.shape == images.shape and masked.dtype == recon.dtype == torch.uint8
    assert mask.shape == (16, 8, 8) and mask.sum((1, 2)).eq(48).all()
    pixel_mask = mask.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].expand_as(images)  # (B, 3, 32, 32)
    assert torch.equal(masked[~pixel_mask], images[~pixel_mask])  # visible patches untouched
    assert masked[pixel_mask].eq(128).all()  # hidden patches mid-grey
    assert torch.equal(recon[~pixel_mask], images[~pixel_mask])
    # a perfect predictor reconstructs the image, also through norm_pix_loss's standardisation
    mae.forward = lambda x, idx_keep: patch_targets(x, 4, norm_pix_loss)
    _, perfect, _ = mae.reconstruct(images, seed=0)
    assert (perfect.int() - images.int()).abs().max() <= 1
    assert mae.last_reconstruction_loss < 1e-6


def test_same_seed_same_masks_and_training(images):
    mae = small_mae()
    _, _, m0 = mae.reconstruct(images, seed=0)
    _, _, m0_again = mae.reconstruct(images, seed=0)
    _, _, m1 = mae.reconstruct(images, seed=1)
    assert torch.equal(m0, m0_again) and not torch.equal(m0, m1)
    cfg = sslkit.make_config("smoke", num_epochs=2, batch_size=8, time_budget_s=None, lr=1e-3)
    data = sslkit.load_dataset("shapes", "unlabeled", n=16, seed=0)
    runs = [sslkit.train.train(small_mae(seed=0), data, cfg, progress=False).losses for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 4


def test_training_lowers_the_reconstruction_loss(images):
    mae = small_mae(crop_scale=None)
    before = mae.reconstruction_loss(images)
    optimizer = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    for _ in range(30):
        loss = mae.training_step(images, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert mae.reconstruction_loss(images) < 0.9 * before


def test_the_method_module_does_not_import_the_training_loop():
    """The methods sit below the loop (data -> models -> methods -> loop): importing MAE loads no sslkit.train."""
    import subprocess
    import sys

    code = "import sys, sslkit.methods.mae; print(sorted(m for m in sys.modules if m.startswith('sslkit.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "sslkit.methods.mae" in loaded and "sslkit.train" not in loaded and "sslkit.finetune" not in loaded


# ----------------------------------------------------------------------------------------------
# optimiser groups, fine-tuning groups, snapshots


def test_weight_decay_only_on_weight_matrices():
    mae = small_mae()
    groups = mae.param_groups()
    decayed = {id(p) for g in groups if "weight_decay" not in g for p in g["params"]}
    kept = {id(p) for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}
    names = {id(p): n for n, p in mae.named_parameters()}
    trainable = {id(p) for p in mae.parameters() if p.requires_grad}
    assert decayed | kept == trainable and not decayed & kept  # every trainable parameter exactly once
    assert all(mae.get_parameter(names[i]).ndim >= 2 for i in decayed)
    assert {names[i] for i in kept} >= {"mask_token", "backbone.encoder.vit.class_token",
                                        "backbone.encoder.vit.encoder.ln.weight", "backbone.encoder.vit.conv_proj.bias"}
    assert not mae.backbone.vit.encoder.pos_embedding.requires_grad  # fixed sine-cosine, never trained
    cfg = sslkit.make_config("smoke", weight_decay=0.05, betas=(0.9, 0.95))
    optimizer = sslkit.train.make_optimizer(mae, cfg)
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == [0.0, 0.05]
    assert optimizer.defaults["betas"] == (0.9, 0.95)


def test_snapshots_at_fractions_of_the_planned_steps_whatever_the_clock(images, monkeypatch):
    """A planned run takes its snapshots at the same steps on any machine: the clock does not move them."""
    mae = small_mae()
    clock = iter([0.0, 1000.0, 1001.0, 9000.0, 9001.0, 9002.0])  # a slow, uneven machine
    monkeypatch.setattr(mae_module.time, "perf_counter", lambda: next(clock))
    snapshots = ReconstructionSnapshots(images[:4], at_fractions=(0.5, 0.03, 0.15, 0.8), seed=3)  # any order
    for step in range(1, 7):
        snapshots(mae, step, 6)
    # step 1 of 6 passes 0.03 and 0.15 (one snapshot), step 3 passes 0.5, step 5 passes 0.8
    assert [s["step"] for s in snapshots.taken] == [1, 3, 5]
    with pytest.raises(ValueError, match="fraction"):
        ReconstructionSnapshots(images[:2], at_fractions=(0.5, 30.0))


def test_snapshots_are_taken_at_the_times_asked_with_the_same_masks(images, monkeypatch):
    mae = small_mae()
    snapshots = ReconstructionSnapshots(images[:4], at_s=(0.0, 10.0, 20.0), seed=3)
    snapshots.take(mae, "before")
    clock = iter([100.0, 105.0, 131.0, 200.0])  # seconds: first step, then 5 s, 31 s, 100 s after it
    monkeypatch.setattr(mae_module.time, "perf_counter", lambda: next(clock))
    for step in range(1, 5):
        snapshots(mae, step, 4)  # as train's callback does after every step
    assert [s["label"] for s in snapshots.taken] == ["before", "step 1 (0 s)", "step 3 (31 s)"]  # 10 s and 20 s: once
    assert all(torch.equal(s["masked"], snapshots.taken[0]["masked"]) for s in snapshots.taken)
    fig = snapshots.figure()
    assert len(fig.axes) == 4 * (2 + 3)  # originals, masked inputs, 3 rows of reconstructions
    plt.close(fig)
    with pytest.raises(ValueError, match="no snapshots"):
        ReconstructionSnapshots(images[:2]).figure()
