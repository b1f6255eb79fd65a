"""Exercises of notebook 03 (without negatives): the momentum (EMA) update of a target network, and SimSiam's
symmetric loss with its stop-gradient."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import Exercise, Hint, Mistake, register, same_dtype


# ---------------------------------------------------------------------------------------------
# The momentum update: the target network as an exponential moving average of the online one


def update_momentum_reference(online, target, m):
    """lightly's ``update_momentum``: every parameter of ``target`` becomes ``m * target + (1 - m) * online``, in
    place (the buffers, e.g. BatchNorm's running statistics, are left alone)."""
    from lightly.models.utils import update_momentum

    update_momentum(online, target, m)


def _pair(g):
    """A small online network (Linear, BatchNorm, Linear: weights, biases and buffers) and its target, a copy with
    different values and no gradient (as BYOL's), both filled from the generator ``g``. The buffers differ too
    (BatchNorm's running statistics and step count), so that an answer that averages them shows."""
    online = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in (*online.parameters(), *target.parameters()):
            p.copy_(torch.randn(p.shape, generator=g))
        for net in (online, target):
            bn = net[1]
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g))
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)  # variances are positive
            bn.num_batches_tracked.fill_(int(torch.randint(1, 100, (1,), generator=g)))
    for p in target.parameters():
        p.requires_grad = False  # lightly's deactivate_requires_grad, as BYOL's target
    return online, target


def _update_momentum_test(answer):
    g = torch.Generator().manual_seed(0)
    for m in (0.9, 0.99, 0.6, 0.0, 1.0):
        online, target = _pair(g)
        before_online = {n: p.detach().clone() for n, p in online.named_parameters()}
        before = {n: p.detach().clone() for n, p in target.named_parameters()}
        buffers_before = {n: b.clone() for n, b in target.named_buffers()}
        want_net = copy.deepcopy(target)
        update_momentum_reference(online, want_net, m)
        want = dict(want_net.named_parameters())
        try:
            answer(online, target, m)
        except RuntimeError as e:
            if "Long" in str(e) or "cast" in str(e):
                raise Hint(f"your function failed on an integer buffer ({e}): average the parameters only "
                           f"(target.parameters()), as lightly's update_momentum does; the buffers (BatchNorm's "
                           f"running statistics, num_batches_tracked) are not averaged") from None
            raise
        if any(not torch.equal(p.detach(), before_online[n]) for n, p in online.named_parameters()):
            raise Hint("your function changed the online network: the online network is the one the optimiser "
                       "trains; only the target moves, towards it (target = m * target + (1 - m) * online)")
        got = dict(target.named_parameters())
        if any(p.grad_fn is not None or p.requires_grad for p in got.values()):
            raise Hint("the target's parameters now carry a computation graph (grad_fn) from the online network: "
                       "do the update under torch.no_grad(), so that no gradient flows into the target")
        moved = [n for n, b in target.named_buffers() if not torch.equal(b, buffers_before[n])]
        if moved:
            raise Hint(f"the target's buffers changed ({', '.join(moved)}): buffers such as BatchNorm's running "
                       f"statistics are left alone, as lightly's update_momentum does; average the parameters only "
                       f"(zip(target.parameters(), online.parameters()), not state_dict())")
        close = {n: torch.allclose(got[n], want[n], rtol=1e-5, atol=1e-6) for n in want}
        if all(close.values()):
            continue
        unchanged = [n for n in want if torch.equal(got[n].detach(), before[n])]
        if m not in (0.0, 1.0) and len(unchanged) == len(want):
            raise Hint("the target did not change: update its tensors in place (p_t.mul_(m).add_(p_o, alpha=1 - m), "
                       "or p_t.copy_(...) under torch.no_grad()); `p_t = m * p_t + ...` only rebinds a local name")
        swapped = {n: (1 - m) * before[n] + m * before_online[n] for n in want}
        if all(torch.allclose(got[n], swapped[n], rtol=1e-5, atol=1e-6) for n in want):
            raise Hint(f"m and 1 - m are swapped: the target keeps m of itself and takes 1 - m of the online network "
                       f"(m = {m} close to 1: the target moves slowly)")
        wrong = [n for n, ok in close.items() if not ok]
        if set(wrong) <= set(unchanged):
            raise Hint(f"some of the target's parameters did not move ({', '.join(wrong)}): update every tensor of "
                       f"target.parameters() (weights and biases, of every layer), paired with online.parameters()")
        n = wrong[0]
        raise Hint(f"with m = {m}, the target's {n} is {got[n].flatten()[:3].tolist()}..., lightly's "
                   f"update_momentum gives {want[n].flatten()[:3].tolist()}...; each target tensor should become "
                   f"m * target + (1 - m) * online")


def _ema_factory(keep="target", which="target", in_place=True, no_grad=True, only_weights=False, state=None):
    """A wrong update; ``state``: None (the parameters), "all" (every entry of state_dict(), integer buffers too)
    or "float" (every floating-point entry of state_dict(), BatchNorm's running statistics too)."""
    def wrong(online, target, m):
        a, b = (target, online) if which == "target" else (online, target)  # a moves towards b
        pairs = (zip(a.state_dict().values(), b.state_dict().values()) if state
                 else zip(a.parameters(), b.parameters()))
        named = [n for n, _ in a.named_parameters()] if not state else list(a.state_dict())
        k = m if keep == "target" else 1 - m
        with torch.no_grad() if no_grad else torch.enable_grad():
            for name, (p_a, p_b) in zip(named, pairs):
                if only_weights and not name.endswith("weight"):
                    continue
                if state == "float" and not p_a.is_floating_point():
                    continue
                if in_place:
                    p_a.mul_(k).add_(p_b, alpha=1 - k)
                else:
                    p_a = k * p_a + (1 - k) * p_b  # noqa: F841 - rebinds the loop variable only

    return wrong


register(Exercise(
    name="update_momentum", notebook="03_non_contrastive", answer_name="my_update_momentum", difficulty=1,
    idea="the momentum (EMA) update: every target parameter becomes m * target + (1 - m) * online, in place",
    test=_update_momentum_test, reference=update_momentum_reference,
    mistakes=(
        Mistake("m and 1 - m swapped", _ema_factory(keep="online"), "swapped"),
        Mistake("the online network updated instead of the target", _ema_factory(which="online"), "online network"),
        Mistake("not in place: a loop variable rebound", _ema_factory(in_place=False), "in place"),
        Mistake("the biases forgotten (weights only)", _ema_factory(only_weights=True), "did not move"),
        Mistake("no torch.no_grad(): the target joins the online network's graph", _ema_factory(no_grad=False),
                "torch.no_grad()"),
        Mistake("every entry of state_dict() averaged, integer buffers too", _ema_factory(state="all"),
                "parameters only"),
        Mistake("every floating-point entry of state_dict() averaged, BatchNorm's running statistics too",
                _ema_factory(state="float"), "buffers such as BatchNorm's running statistics are left alone"),
    ),
))


# ---------------------------------------------------------------------------------------------
# SimSiam's symmetric loss, with the stop-gradient


def simsiam_loss_reference(p0, p1, z0, z1):
    """SimSiam's loss as ``sslkit.methods.SimSiam`` computes it with lightly's ``NegativeCosineSimilarity``:
    0.5 * (D(p0, stopgrad(z1)) + D(p1, stopgrad(z0))), D the negative cosine similarity averaged over the batch."""
    from lightly.loss import NegativeCosineSimilarity

    criterion = NegativeCosineSimilarity()
    return 0.5 * (criterion(p0, z1.detach()) + criterion(p1, z0.detach()))


def _leaves(g, b, d):
    p0, p1 = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    z0, z1 = p1 + 0.7 * torch.randn(b, d, generator=g), p0 + 0.7 * torch.randn(b, d, generator=g)  # z1 near p0
    return [t.requires_grad_() for t in (p0, p1, z0, z1)]


def _simsiam_test(answer):
    g = torch.Generator().manual_seed(0)
    for b, d in ((8, 16), (1, 4), (32, 8), (5, 3)):
        leaves = _leaves(g, b, d)
        got = answer(*leaves)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise Hint(f"return one number (a 0-d tensor, the loss averaged over the batch), not "
                       f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
        same_dtype(got, leaves[0], "your loss")
        twins = [t.detach().clone().requires_grad_() for t in leaves]
        want = simsiam_loss_reference(*twins)
        got = got.reshape(())
        if not torch.isclose(got, want.detach(), rtol=1e-4, atol=1e-5):
            _diagnose_value(got.detach(), want.detach(), [t.detach() for t in leaves])
            raise Hint(f"for B={b}, D={d} your loss is {got.item():.4f}, the reference's {want.item():.4f}: "
                       f"0.5 * (D(p0, z1) + D(p1, z0)) with D(p, z) = -mean cosine similarity")
        if not got.requires_grad:
            raise Hint("your loss has no gradient at all: detach only the projections z0, z1 (the target branch), "
                       "not the predictions p0, p1")
        got.backward()
        want.backward()
        p0, p1, z0, z1 = leaves
        for p, name in ((p0, "p0"), (p1, "p1")):
            if p.grad is None or p.grad.abs().max() == 0:
                raise Hint(f"no gradient reaches {name}: detach only the projections z0, z1 (the targets), not the "
                           f"predictions, which are the branch that learns")
        if any(z.grad is not None and z.grad.abs().max() > 0 for z in (z0, z1)):
            raise Hint("gradient flows into the target branch: detach z0 and z1 (the stop-gradient, z.detach()) "
                       "before comparing them with the predictions; without it SimSiam collapses")
        for p, twin, name in ((p0, twins[0], "p0"), (p1, twins[1], "p1")):
            if not torch.allclose(p.grad, twin.grad, rtol=1e-4, atol=1e-6):
                raise Hint(f"the gradient reaching {name} differs from the reference's: compare each step with "
                           f"0.5 * (D(p0, z1.detach()) + D(p1, z0.detach()))")
    # scale invariance: cosine similarities do not change when a vector is scaled
    p0, p1, z0, z1 = (t.detach() for t in _leaves(g, 6, 8))
    if not torch.isclose(answer(3 * p0, p1, z0, 5 * z1).reshape(()), simsiam_loss_reference(p0, p1, z0, z1),
                         rtol=1e-4, atol=1e-5):
        raise Hint("scaling p0 by 3 and z1 by 5 changed your loss: use the cosine similarity "
                   "(F.cosine_similarity, or F.normalize both vectors before the dot product)")


def _d(p, z):
    return -F.cosine_similarity(p, z, dim=1).mean()


def _diagnose_value(got, want, leaves):
    p0, p1, z0, z1 = leaves
    close = lambda x: torch.isclose(got, x, rtol=1e-4, atol=1e-5)  # noqa: E731
    if close(0.5 * (_d(p0, z0) + _d(p1, z1))) or close(_d(p0, z0) + _d(p1, z1)):
        raise Hint("each prediction is compared with the projection of its own view: p0 must predict z1 (the other "
                   "view's projection) and p1 must predict z0")
    if close(2 * want):
        raise Hint("the two halves are summed: average them, 0.5 * (D(p0, z1) + D(p1, z0)), so that -1 is perfect "
                   "agreement")
    if close(-want):
        raise Hint("the sign is flipped: the loss is the *negative* cosine similarity, so that minimising it makes "
                   "the prediction agree with the other view's projection")
    if close(_d(p0, z1)) or close(_d(p1, z0)) or close(0.5 * _d(p0, z1)):
        raise Hint("only one half of the loss: SimSiam is symmetric, 0.5 * (D(p0, z1) + D(p1, z0)), each view "
                   "predicting the other")
    dot = 0.5 * (-(p0 * z1).sum(1).mean() - (p1 * z0).sum(1).mean())
    if close(dot):
        raise Hint("raw dot products instead of cosine similarities: normalise both vectors "
                   "(F.cosine_similarity(p, z, dim=1))")


def _simsiam_factory(detach="z", pairing="other", reduce="mean", sign=-1):
    def wrong(p0, p1, z0, z1):
        if detach == "z":
            z0, z1 = z0.detach(), z1.detach()
        elif detach == "p":
            p0, p1 = p0.detach(), p1.detach()
        a, b = (z1, z0) if pairing == "other" else (z0, z1)
        halves = sign * F.cosine_similarity(p0, a, dim=1).mean() + sign * F.cosine_similarity(p1, b, dim=1).mean()
        return 0.5 * halves if reduce == "mean" else halves

    return wrong


def _simsiam_float64(p0, p1, z0, z1):
    """The right loss, computed in float64."""
    return simsiam_loss_reference(*(t.double() for t in (p0, p1, z0, z1)))


register(Exercise(
    name="simsiam_loss", notebook="03_non_contrastive", answer_name="my_simsiam_loss", difficulty=2,
    idea="SimSiam's loss: 0.5 * (D(p0, stopgrad(z1)) + D(p1, stopgrad(z0))), D the negative cosine similarity",
    test=_simsiam_test, reference=simsiam_loss_reference,
    mistakes=(
        Mistake("no stop-gradient: the gradient flows into the target branch", _simsiam_factory(detach=None),
                "detach z0 and z1"),
        Mistake("each prediction paired with its own view's projection (p0 with z0)",
                _simsiam_factory(pairing="same"), "p0 must predict z1"),
        Mistake("the two halves summed instead of averaged", _simsiam_factory(reduce="sum"), "summed"),
        Mistake("the predictions detached instead of the projections", _simsiam_factory(detach="p"),
                "detach only the projections"),
        Mistake("the cosine similarity without its minus sign", _simsiam_factory(sign=1), "sign is flipped"),
        Mistake("the loss computed in float64", _simsiam_float64, "return a float32 tensor, as the inputs are"),
    ),
))
