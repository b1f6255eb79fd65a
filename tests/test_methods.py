"""Every method builds by name, trains a step through the shared loop, and keeps its promises."""
import pytest
import torch
import torch.nn.functional as F

import sslkit
from sslkit.methods import METHODS, make_method


@pytest.fixture(scope="module")
def images():
    return sslkit.load_dataset("shapes", "train", n=16, seed=0).images


def _backbone():
    torch.manual_seed(0)
    return sslkit.make_backbone("resnet_tiny")


@pytest.mark.parametrize("name", [m for m in METHODS if m != "mae"])
def test_every_method_trains_one_step(name, images):
    backbone, dim = _backbone()
    method = make_method(name, backbone, dim)
    before = [p.detach().clone() for p in backbone.parameters()]
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    loss = method.training_step(images, None)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    opt.step()
    if hasattr(method, "on_step_end"):
        method.on_step_end(1, 10)
    assert any(not torch.equal(a, b) for a, b in zip(before, backbone.parameters())), f"{name} did not train the backbone"


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown method 'simclrr'; choose one of: rotation, jigsaw, simclr, moco"):
        make_method("simclrr", *_backbone())


def test_bad_batch_and_queue_sizes_are_clear(images):
    with pytest.raises(ValueError, match="at least 2 images"):
        make_method("simclr", *_backbone()).training_step(images[:1], None)
    with pytest.raises(ValueError, match="queue_size=100 is not a multiple of the batch size 16"):
        make_method("moco", *_backbone(), queue_size=100).training_step(images, None)


def test_symmetric_moco_makes_both_views_queries_against_the_queue_before_the_step(images):
    """The oracle: MoCo's loss (cross-entropy of the positive key against the queued negatives, at the temperature)
    written out for x0 -> x1 and x1 -> x0, both against the queue as it was before the step, averaged; afterwards both
    views' keys are in the queue. A second criterion call would put x1's keys into the negatives of x1's queries."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    moco = make_method("moco", *_backbone(), queue_size=64, temperature=0.2, symmetric=True)
    with pytest.raises(ValueError, match="queue_size=64 is not a multiple of twice the batch size 48"):
        moco.check_batch_size(48)
    x0, x1 = torch.randn(16, 3, 32, 32), torch.randn(16, 3, 32, 32)
    bank = moco.criterion.memory_bank.bank  # (64, out_dim): the queue of earlier keys, unit vectors
    bank.copy_(F.normalize(torch.randn_like(bank), dim=1))
    queue = bank.clone()
    loss = moco.loss(x0, x1)

    def direction(q, k):  # (B, d) queries and their keys against the queue: MoCo's InfoNCE
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / 0.2
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))

    with torch.no_grad():
        expected = 0.5 * (direction(moco(x0), moco.forward_momentum(x1)) + direction(moco(x1), moco.forward_momentum(x0)))
        keys = F.normalize(torch.cat([moco.forward_momentum(x1), moco.forward_momentum(x0)]), dim=1)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert any(torch.allclose(bank[i:i + 32], keys, atol=1e-6) for i in range(0, 64, 32)), "both keys queued"
    one_way = make_method("moco", *_backbone(), queue_size=64)
    one_way.check_batch_size(48 // 3)  # a queue of a multiple of B suffices without symmetric


@pytest.mark.parametrize("name", ["barlowtwins", "vicreg"])
def test_batch_statistics_methods_refuse_a_batch_of_one(name, images):
    with pytest.raises(ValueError, match="at least 2 images"):
        make_method(name, *_backbone()).training_step(images[:1], None)


@pytest.mark.parametrize("name", ["barlowtwins", "vicreg"])
def test_the_loss_itself_makes_a_collapsed_embedding_expensive(name):
    """What notebook 03 says of Barlow Twins and VICReg: no architecture needed, a constant embedding costs more."""
    criterion = make_method(name, *_backbone()).criterion
    torch.manual_seed(0)
    spread = torch.randn(64, 32)
    collapsed = torch.ones(64, 32) + 1e-3 * torch.randn(64, 32)
    assert criterion(collapsed, collapsed) > criterion(spread, spread + 0.1 * torch.randn(64, 32)) + 1.0


def _ntxent_by_hand(z0, z1, temperature):
    """NT-Xent (Chen et al. 2020, eq. 1) written out: softmax over the 2B - 1 others, the positive is the twin."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)  # (2B, D)
    sim = z @ z.T / temperature  # (2B, 2B)
    sim.fill_diagonal_(float("-inf"))  # a view is not its own negative
    n = len(z0)
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])  # the twin of i is i + B (mod 2B)
    return F.cross_entropy(sim, positives)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_simclr_uses_lightlys_ntxent_which_matches_the_paper(temperature):
    from lightly.loss import NTXentLoss
    torch.manual_seed(0)
    z0, z1 = torch.randn(8, 16), torch.randn(8, 16)
    assert torch.allclose(NTXentLoss(temperature=temperature)(z0, z1), _ntxent_by_hand(z0, z1, temperature), atol=1e-5)


def test_simsiam_stop_gradient_is_what_detaches_the_target(images):
    backbone, dim = _backbone()
    method = make_method("simsiam", backbone, dim)
    _, z_target, _ = method(sslkit.to_float(images))
    assert not z_target.requires_grad
    method.stop_gradient = False
    _, z_target, _ = method(sslkit.to_float(images))
    assert z_target.requires_grad


def test_momentum_encoders_follow_the_online_network(images):
    backbone, dim = _backbone()
    method = make_method("byol", backbone, dim)
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    target = list(method.backbone_momentum.parameters())[0].detach().clone()
    method.on_step_end(1, 100)  # momentum ~0.99: the target moves 1% of the way
    moved = list(method.backbone_momentum.parameters())[0] - target
    assert torch.allclose(moved, torch.full_like(moved, 0.01), atol=2e-3)
    assert not any(p.requires_grad for p in method.backbone_momentum.parameters())


@pytest.mark.parametrize("name", ["moco", "byol", "dino"])
def test_the_target_momentum_is_a_start_or_a_start_and_an_end(name):
    backbone, dim = _backbone()
    assert make_method(name, backbone, dim).target_momentum == (0.99, 1.0)  # lightly's examples
    assert make_method(name, backbone, dim, target_momentum=0.9).target_momentum == (0.9, 1.0)
    assert make_method(name, backbone, dim, target_momentum=(0.9, 0.99)).target_momentum == (0.9, 0.99)
    for bad in (1.5, -0.1, (0.99, 0.9), "0.9", (0.9,), float("nan")):
        with pytest.raises(ValueError, match=r"e\.g\. 0\.99 or \(0\.99, 1\.0\)"):
            make_method(name, backbone, dim, target_momentum=bad)


@pytest.mark.parametrize("name", [m for m in METHODS if m != "mae"])
def test_building_a_method_shows_the_learner_no_warning(name):
    # DINO's head is lightly's, built on torch's deprecated weight_norm: its FutureWarning is about lightly's code,
    # which a learner cannot act on, so notebook 03's DINO cell must not show it
    import warnings

    backbone, dim = _backbone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_method(name, backbone, dim)


@pytest.mark.parametrize("name", ["byol", "simsiam"])
def test_the_predictor_can_learn_faster_than_the_rest(name):
    from sslkit.optim import make_optimizer

    backbone, dim = _backbone()
    cfg = sslkit.make_config("smoke", lr=0.01)
    method = make_method(name, backbone, dim, predictor_lr_scale=4)
    opt = make_optimizer(method, cfg)
    predictor = {id(p) for p in method.prediction_head.parameters()}
    scales = {id(p): g["lr_scale"] if "lr_scale" in g else 1.0 for g in opt.param_groups for p in g["params"]}
    assert {scales[i] for i in predictor} == {4}
    assert {s for i, s in scales.items() if i not in predictor} == {1.0}
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert set(scales) == trainable  # every trainable parameter once, the momentum networks not at all
    # by default one group, as before the knob existed: the optimizer state of earlier checkpoints still loads
    plain = make_optimizer(make_method(name, backbone, dim), cfg)
    assert len(plain.param_groups) == 1 and "lr_scale" not in plain.param_groups[0]
    for bad in (0, -1.0, "4", None, True):
        with pytest.raises(ValueError, match="predictor_lr_scale=.*give a positive number"):
            make_method(name, backbone, dim, predictor_lr_scale=bad)
