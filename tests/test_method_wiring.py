"""Each joint-embedding method wires lightly's parts together as lightly's own example for it does.

The references below are written by hand from lightly's examples (``examples/pytorch/<method>.py`` in
lightly-ai/lightly): which network sees which view, which outputs go to the criterion in which order, which side
is detached, how the two halves of a symmetric loss are combined. They use the method's own modules (backbone and
heads, so the weights are the same) and a *fresh* lightly criterion built with the method's settings, never the
method's ``loss``. On fixed weights and fixed views, the loss and its gradient must be the reference's.

The momentum networks start as copies of the online ones; the tests move them away first, so that a method
reading the wrong network cannot pass.

The last tests show that BYOL's averaged loss (lightly's example) trains under SGD at (2 lr, wd / 2) exactly the
weights that the sum of its two halves trains at (lr, wd): the values notebook 03's BYOL was tuned with on the summed
loss carry over, doubled and halved, with the same trajectory.
"""
import copy

import pytest
import torch
from lightly.loss import BarlowTwinsLoss, DINOLoss, NegativeCosineSimilarity, NTXentLoss, VICRegLoss

import sslkit
from sslkit.methods import make_method

B, SIZE = 8, 24  # images per batch, pixels per side of the views


def _method(name, **knobs):
    torch.manual_seed(0)
    backbone, dim = sslkit.make_backbone("resnet_tiny", width=8)
    return make_method(name, backbone, dim, **knobs)


def _views(n=2, size=SIZE, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(B, 3, size, size, generator=g) for _ in range(n)]


def _move_away(*modules):
    """Perturb a momentum network so that it no longer equals the online one it was copied from."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def _copy_buffers(source, target):
    """A criterion's state (MoCo's queue, DINO's centre): lightly keeps the queue in non-persistent buffers."""
    with torch.no_grad():
        for (name, a), (other, b) in zip(source.named_buffers(), target.named_buffers(), strict=True):
            assert name == other
            b.copy_(a)


def _grads(method, loss):
    method.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}


def _assert_same(method, loss, reference):
    """The same value and the same gradient on every trainable parameter (and none where the reference has none)."""
    assert torch.allclose(loss, reference, rtol=1e-6, atol=1e-7), f"loss {loss.item()} != reference {reference.item()}"
    got, want = _grads(method, loss), _grads(method, reference)
    assert got.keys() == want.keys(), f"gradients reach {sorted(got.keys() ^ want.keys())} in one and not the other"
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-5, atol=1e-7), f"gradient of {name} differs"


# --- the references, from lightly's examples (flatten(start_dim=1) is the examples' ResNet glue; here a no-op) ---

def _simclr_reference(m, x0, x1):
    criterion = NTXentLoss(temperature=m.criterion.temperature)
    z0 = m.projection_head(m.backbone(x0).flatten(start_dim=1))
    z1 = m.projection_head(m.backbone(x1).flatten(start_dim=1))
    return criterion(z0, z1)


def _moco_reference(m, criterion, x_query, x_key):
    query = m.projection_head(m.backbone(x_query).flatten(start_dim=1))
    key = m.projection_head_momentum(m.backbone_momentum(x_key).flatten(start_dim=1)).detach()
    return criterion(query, key)


def _byol_reference(m, x0, x1):
    criterion = NegativeCosineSimilarity()
    p0 = m.prediction_head(m.projection_head(m.backbone(x0).flatten(start_dim=1)))
    z0 = m.projection_head_momentum(m.backbone_momentum(x0).flatten(start_dim=1)).detach()
    p1 = m.prediction_head(m.projection_head(m.backbone(x1).flatten(start_dim=1)))
    z1 = m.projection_head_momentum(m.backbone_momentum(x1).flatten(start_dim=1)).detach()
    return 0.5 * (criterion(p0, z1) + criterion(p1, z0))


def _simsiam_reference(m, x0, x1):
    criterion = NegativeCosineSimilarity()

    def forward(x):
        z = m.projection_head(m.backbone(x).flatten(start_dim=1))
        p = m.prediction_head(z)
        return z.detach(), p

    z0, p0 = forward(x0)
    z1, p1 = forward(x1)
    return 0.5 * (criterion(z0, p1) + criterion(z1, p0))


def _dino_reference(m, criterion, views):
    teacher_out = [m.projection_head_momentum(m.backbone_momentum(v).flatten(start_dim=1)) for v in views[:2]]
    student_out = [m.projection_head(m.backbone(v).flatten(start_dim=1)) for v in views]
    return criterion(teacher_out, student_out, epoch=0)


def _barlowtwins_reference(m, x0, x1):
    criterion = BarlowTwinsLoss(lambda_param=m.criterion.lambda_param)
    z0 = m.projection_head(m.backbone(x0).flatten(start_dim=1))
    z1 = m.projection_head(m.backbone(x1).flatten(start_dim=1))
    return criterion(z0, z1)


def _vicreg_reference(m, x0, x1):
    criterion = VICRegLoss()
    z0 = m.projection_head(m.backbone(x0).flatten(start_dim=1))
    z1 = m.projection_head(m.backbone(x1).flatten(start_dim=1))
    return criterion(z0, z1)


@pytest.mark.parametrize("name,knobs,reference", [
    ("simclr", dict(temperature=0.2), _simclr_reference),
    ("simsiam", dict(), _simsiam_reference),
    ("barlowtwins", dict(lambda_param=0.0025), _barlowtwins_reference),
    ("vicreg", dict(), _vicreg_reference),
], ids=["simclr", "simsiam", "barlowtwins", "vicreg"])
def test_the_loss_is_lightlys_example(name, knobs, reference):
    method = _method(name, **knobs)
    x0, x1 = _views()
    _assert_same(method, method.loss(x0, x1), reference(method, x0, x1))


def test_byol_is_lightlys_example_its_two_halves_averaged():
    method = _method("byol")
    _move_away(method.backbone_momentum, method.projection_head_momentum)
    x0, x1 = _views()
    _assert_same(method, method.loss(x0, x1), _byol_reference(method, x0, x1))


def test_simsiam_without_stop_gradient_differs_from_the_reference_only_in_the_gradient():
    """The knob of notebook 03's ablation: the same value, but the gradient now flows into the target branch."""
    method = _method("simsiam", stop_gradient=False)
    x0, x1 = _views()
    loss, reference = method.loss(x0, x1), _simsiam_reference(method, x0, x1)
    assert torch.allclose(loss, reference, rtol=1e-6, atol=1e-7)
    got, want = _grads(method, loss), _grads(method, reference)
    assert any(not torch.allclose(got[n], want[n], rtol=1e-5, atol=1e-7) for n in want)


def test_moco_is_lightlys_example_queries_online_keys_momentum_and_the_queue_fills_with_keys():
    method = _method("moco", queue_size=4 * B)
    _move_away(method.backbone_momentum, method.projection_head_momentum)
    criterion = NTXentLoss(temperature=method.criterion.temperature, memory_bank_size=(4 * B, 128))  # 128: out_dim
    _copy_buffers(method.criterion, criterion)  # the same random queue to start from
    for seed in (1, 2, 3):  # the later steps see the keys that the earlier ones queued
        x_query, x_key = _views(seed=seed)
        _assert_same(method, method.loss(x_query, x_key), _moco_reference(method, criterion, x_query, x_key))
    for (name, a), (_, b) in zip(method.criterion.named_buffers(), criterion.named_buffers()):
        assert torch.allclose(a, b, atol=1e-7), f"the queues differ ({name})"


def test_dino_is_lightlys_example_teacher_on_global_views_student_on_all():
    method = _method("dino", num_local=2, out_dim=256, teacher_temp=0.04, student_temp=0.1)
    _move_away(method.backbone_momentum, method.projection_head_momentum)
    c = method.criterion
    criterion = DINOLoss(output_dim=256, warmup_teacher_temp=0.04, teacher_temp=0.04, student_temp=0.1,
                         center_momentum=c.center_momentum)
    _copy_buffers(method.criterion, criterion)  # the same centre to start from
    for seed in (1, 2):  # the second step sees the centre the first one moved
        views = _views(seed=seed) + _views(2, size=12, seed=seed + 10)  # 2 global views, 2 local
        _assert_same(method, method.loss(views), _dino_reference(method, criterion, views))
    assert torch.allclose(method.criterion.center, criterion.center, atol=1e-7)


# --- BYOL's loss scale and notebook 03's SGD recipe ---

def _sgd(method, lr, weight_decay, predictor_lr_scale=4.0):
    """SGD as the kit's make_optimizer builds it for BYOL: momentum 0.9, the predictor at lr_scale times the lr."""
    head = {id(p) for p in method.prediction_head.parameters()}
    rest = [p for p in method.parameters() if p.requires_grad and id(p) not in head]
    groups = [dict(params=rest, lr_scale=1.0), dict(params=list(method.prediction_head.parameters()),
                                                    lr_scale=predictor_lr_scale)]
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)


def _summed_loss(m, x0, x1):
    """BYOL's two halves summed, not averaged: the loss scale of notebook 03's recorded BYOL run."""
    p0, p1 = m(x0), m(x1)
    z0, z1 = m.forward_momentum(x0), m.forward_momentum(x1)
    return m.criterion(p0, z1) + m.criterion(p1, z0)


def _train(method, loss_fn, lr, weight_decay, steps=4):
    """A few steps of train()'s order: warm-up lr, loss, backward, step, then the target's momentum update."""
    opt = _sgd(method, lr, weight_decay)
    for step in range(steps):
        for group in opt.param_groups:  # a linear warm-up over the first 2 steps, then constant (lr_schedule="constant")
            group["lr"] = lr * min(1.0, (step + 1) / 2) * group["lr_scale"]
        x0, x1 = _views(seed=step)
        opt.zero_grad(set_to_none=True)
        loss_fn(method, x0, x1).backward()
        opt.step()
        method.on_step_end(step + 1, steps)
    return method.state_dict()


def _identical(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("lr,weight_decay", [(0.12, 5e-4), (0.06, 5e-4)], ids=["lesson", "smoke"])
def test_byol_averaged_at_twice_the_lr_and_half_the_weight_decay_trains_the_summed_runs_weights(lr, weight_decay):
    """Halving the loss halves every gradient exactly (a power of two); SGD's step is lr * (grad + wd * w) plus
    momentum, so (2 lr, wd / 2) on the averaged loss takes the summed loss's steps at (lr, wd), bit for bit: notebook
    03's BYOL at lesson (summed: lr 0.12, weight decay 5e-4) is lr 0.24, weight decay 2.5e-4 on the averaged loss, and
    at smoke (summed: lr 0.06) lr 0.12."""
    base = _method("byol", target_momentum=0.9, predictor_lr_scale=4)
    summed = _train(copy.deepcopy(base), _summed_loss, lr, weight_decay)
    averaged = _train(copy.deepcopy(base), lambda m, x0, x1: m.loss(x0, x1), 2 * lr, weight_decay / 2)
    assert _identical(summed, averaged), "the averaged loss at (2 lr, wd / 2) did not train the same weights"
    # the comparison can fail: the averaged loss at the same values, or with the weight decay kept, trains others
    assert not _identical(summed, _train(copy.deepcopy(base), lambda m, x0, x1: m.loss(x0, x1), lr, weight_decay))
    assert not _identical(summed, _train(copy.deepcopy(base), lambda m, x0, x1: m.loss(x0, x1), 2 * lr, weight_decay))


def test_byol_loss_is_half_the_summed_one():
    method = _method("byol")
    x0, x1 = _views()
    assert method.loss(x0, x1) == 0.5 * _summed_loss(method, x0, x1)
