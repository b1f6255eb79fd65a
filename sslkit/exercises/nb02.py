"""Exercises of notebook 02 (contrastive learning)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Exercise, Hint, Mistake, register, same_dtype


# ---------------------------------------------------------------------------------------------
# NT-Xent: the loss of SimCLR, written from its definition


def ntxent_reference(z0, z1, temperature=0.5):
    """NT-Xent as lightly's ``NTXentLoss`` computes it (the mean over the 2B views)."""
    from lightly.loss import NTXentLoss

    return NTXentLoss(temperature=temperature)(z0, z1)


def _ntxent_test(answer):
    g = torch.Generator().manual_seed(0)
    cases = [(8, 16, 0.5), (2, 4, 0.1), (32, 8, 1.0), (5, 3, 0.07)]
    for b, d, t in cases:
        z0 = torch.randn(b, d, generator=g)
        z1 = z0 + 0.5 * torch.randn(b, d, generator=g)  # views that roughly agree
        leaves = [z0.requires_grad_(), z1.requires_grad_()]  # the projections of training, which need a gradient
        got = answer(z0, z1, t)
        twins = [z.detach().clone().requires_grad_() for z in leaves]
        want = ntxent_reference(*twins, t)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise Hint(f"return one number (a 0-d tensor, the mean over the 2B views), not "
                       f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
        same_dtype(got, z0, "your loss")
        got = got.reshape(())
        if not torch.isclose(got.detach(), want.detach(), rtol=1e-4, atol=1e-5):
            _diagnose(answer, z0.detach(), z1.detach(), t, got.detach(), want.detach())
            raise Hint(f"for B={b}, D={d}, temperature={t} your loss is {got.item():.4f}, lightly's "
                       f"{want.item():.4f}; compare each step with the definition in the text")
        # the value is right: the gradient must be too, as training calls loss.backward() on it
        if not got.requires_grad:
            raise Hint("your loss has the right value but no gradient: keep it a tensor computed from z0 and z1 with "
                       "torch operations (no .item(), torch.tensor(...), .detach() or NumPy), so that "
                       "loss.backward() can train the encoder")
        got.backward()
        want.backward()
        for z, twin, name in ((z0, twins[0], "z0"), (z1, twins[1], "z1")):
            if z.grad is None or z.grad.abs().max() == 0:
                raise Hint(f"no gradient reaches {name}: compute the loss from z0 and z1 without .detach(), so "
                           f"that both views' encoders learn")
            if not torch.allclose(z.grad, twin.grad, rtol=1e-4, atol=1e-6):
                raise Hint(f"for B={b}, D={d}, temperature={t} the gradient reaching {name} differs from lightly's "
                           f"(the value is right): compute the loss from z0 and z1 with torch operations only")
    # scale invariance: NT-Xent uses cosine similarities, so scaling a projection changes nothing
    z0, z1 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    if not torch.isclose(answer(3 * z0, z1, 0.5).reshape(()), ntxent_reference(z0, z1, 0.5), rtol=1e-4, atol=1e-5):
        raise Hint("scaling z0 by 3 changed your loss: normalise the projections to unit length (F.normalize) "
                   "before the dot products")


def _diagnose(answer, z0, z1, t, got, want):
    """Name the mistake when the answer equals one of the common wrong formulations."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    b = len(z0)
    raw = torch.cat([z0, z1])
    close = lambda x: torch.isclose(got, x, rtol=1e-4, atol=1e-5)  # noqa: E731
    positive = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
    rows = torch.arange(2 * b)

    def loss(sim, pos=positive, mask=True):
        if mask:
            sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool), float("-inf"))
        return -(sim[rows, pos] - sim.logsumexp(dim=1)).mean()

    if close(loss(z @ z.T / t, mask=False)):
        raise Hint("each view's similarity with itself is still in the denominator: mask the diagonal "
                   "(k != i) with -inf before the logsumexp")
    if close(loss(raw @ raw.T / t)):
        raise Hint("the projections are not normalised: F.normalize(z, dim=1) first, so the dot products "
                   "are cosine similarities")
    if close(loss(z @ z.T / t**2)):
        raise Hint("the temperature is applied twice: divide the similarities by it once")
    if close(loss(z @ z.T)):
        raise Hint("the temperature is missing: divide the cosine similarities by it")
    if close(loss(z @ z.T / t, pos=rows)) or close(loss(z @ z.T / t, pos=(rows + 1) % (2 * b))):
        raise Hint("the positive is at the wrong index: the twin of view i < B is view i + B, and of view "
                   "i >= B is view i - B")
    half = -(F.log_softmax((z[:b] @ z[b:].T) / t, dim=1).diagonal()).mean()
    if close(half):
        raise Hint("only the views of z0 are anchors, against z1 only: NT-Xent uses all 2B views as anchors, "
                   "each against the other 2B - 1")
    if close(want * 2 * b) or close(want * b):
        raise Hint("the loss is summed, not averaged: return the mean over the 2B views")


def _ntxent_no_mask(z0, z1, temperature=0.5):
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    sim = z @ z.T / temperature
    b = len(z0)
    positive = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
    return -(sim[torch.arange(2 * b), positive] - sim.logsumexp(dim=1)).mean()


def _ntxent_factory(normalise=True, temperature_power=1, shift=None, reduce="mean"):
    def wrong(z0, z1, temperature=0.5):
        z = torch.cat([z0, z1])
        z = F.normalize(z, dim=1) if normalise else z
        sim = z @ z.T / temperature**temperature_power
        sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool), float("-inf"))
        b = len(z0)
        rows = torch.arange(2 * b)
        positive = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]) if shift is None else (rows + shift) % (2 * b)
        per_view = -(sim[rows, positive] - sim.logsumexp(dim=1))
        return per_view.mean() if reduce == "mean" else per_view.sum()

    return wrong


def _ntxent_not_differentiable(z0, z1, temperature=0.5):
    """The right value, through .item(): a new tensor with no gradient."""
    return torch.tensor(ntxent_reference(z0, z1, temperature).item())


def _ntxent_float64(z0, z1, temperature=0.5):
    """The right loss, computed in float64."""
    return ntxent_reference(z0.double(), z1.double(), temperature)


register(Exercise(
    name="ntxent", notebook="02_contrastive", answer_name="my_ntxent", difficulty=3,
    idea="NT-Xent: for each of the 2B views, the log-softmax of its twin among the other 2B - 1 views",
    test=_ntxent_test, reference=ntxent_reference,
    mistakes=(
        Mistake("the self-similarity left in the denominator", _ntxent_no_mask, "mask the diagonal"),
        Mistake("projections not normalised", _ntxent_factory(normalise=False), "normalise"),
        Mistake("the temperature applied twice", _ntxent_factory(temperature_power=2), "applied twice"),
        Mistake("the positive one index off", _ntxent_factory(shift=1), "wrong index"),
        Mistake("summed instead of averaged", _ntxent_factory(reduce="sum"), "averaged"),
        Mistake("the right value without a gradient (.item(), then torch.tensor)", _ntxent_not_differentiable,
                "no gradient"),
        Mistake("the loss computed in float64", _ntxent_float64, "return a float32 tensor, as the inputs are"),
    ),
))


# ---------------------------------------------------------------------------------------------
# the kNN vote: how every notebook scores frozen features


def knn_predict_reference(train_features, train_labels, test_features, num_classes, k=200, temperature=0.1):
    """lightly's ``knn_predict`` on L2-normalised features (what ``sslkit.evaluate.knn_accuracy`` uses): the
    predicted class (M,) of each test feature."""
    from lightly.utils.benchmarking import knn_predict

    bank = F.normalize(train_features.float(), dim=1).T  # (D, N)
    query = F.normalize(test_features.float(), dim=1)  # (M, D)
    return knn_predict(query, bank, train_labels.long(), num_classes=num_classes, knn_k=k, knn_t=temperature)[:, 0]


def _knn_cases(g):
    """(train features, train labels, test features, num_classes, k, temperature): clustered features whose
    lengths vary (only their directions should matter), then the edge cases k = 1 and k = N."""
    def clusters(n, d, c, m):
        centres = torch.randn(c, d, generator=g)
        labels, test_labels = torch.randint(c, (n,), generator=g), torch.randint(c, (m,), generator=g)
        scale = lambda k: torch.empty(k, 1).uniform_(0.2, 5.0, generator=g)  # noqa: E731
        train = (centres[labels] + 1.2 * torch.randn(n, d, generator=g)) * scale(n)
        test = (centres[test_labels] + 1.2 * torch.randn(m, d, generator=g)) * scale(m)
        return train, labels, test, c

    cases = [(*clusters(300, 16, 6, 64), 25, 0.1), (*clusters(120, 8, 4, 40), 1, 0.1),
             (*clusters(60, 8, 5, 30), 60, 0.5), (*clusters(500, 32, 10, 50), 200, 0.07)]
    return cases


def _knn_diagnostic_case():
    """One query e0 and 13 training features with chosen cosine similarities, so that each common mistake
    predicts its own class (k = 6, temperature 0.1):

    class 0: one at 0.95; class 1: two at 0.6; class 2: three at 0.05; class 4: one at 0.02 but 50 long;
    class 3: six at -0.9. The right vote: class 0 (exp(9.5) outweighs 2 exp(6)); a plain majority: class 2;
    weights exp(s) without the temperature: class 1; the least similar six: class 3; unnormalised dot
    products: class 4 (its length makes it the "nearest").
    """
    sims = [(0, 0.95, 1.0), (1, 0.6, 1.0), (1, 0.6, 1.0), (2, 0.05, 1.0), (2, 0.05, 1.0), (2, 0.05, 1.0),
            (4, 0.02, 50.0)] + [(3, -0.9, 1.0)] * 6
    d = len(sims) + 1
    train = torch.zeros(len(sims), d)
    for i, (_, s, length) in enumerate(sims):
        train[i, 0], train[i, i + 1] = s, (1 - s * s) ** 0.5  # cosine s with the query e0
        train[i] *= length
    labels = torch.tensor([c for c, _, _ in sims])
    query = torch.zeros(1, d)
    query[0, 0] = 1.0
    return train, labels, query, 5, 6, 0.1


_KNN_HINTS = {
    2: "every neighbour voted with the same weight (a plain majority): weight each vote by exp(similarity / "
       "temperature), so the nearest neighbours count most",
    1: "the temperature is missing from the weights: each vote weighs exp(similarity / temperature), not "
       "exp(similarity) or the similarity itself",
    3: "you took the k least similar training features: the neighbours are the k with the largest cosine "
       "similarity (topk's default, largest=True)",
    4: "a long feature vector won the vote: normalise the features to unit length (F.normalize(x, dim=1)) on both "
       "sides, so the dot products are cosine similarities",
}


def _knn_test(answer):
    g = torch.Generator().manual_seed(0)
    for train, labels, test, c, k, t in _knn_cases(g):
        before = train.clone(), test.clone()
        got = answer(train, labels, test, c, k, t)
        if not torch.equal(train, before[0]) or not torch.equal(test, before[1]):
            raise Hint("your function changed the features it was given (an in-place division?); normalise into new "
                       "tensors: F.normalize(x, dim=1)")
        if not isinstance(got, torch.Tensor) or got.shape != (len(test),):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise Hint(f"return one predicted class per test feature, a tensor of shape ({len(test)},), got {shape} "
                       f"(scores per class? take their argmax over the classes)")
        if got.is_floating_point():
            raise Hint(f"the predictions are {got.dtype}: return class indices (argmax gives torch.long)")
        want = knn_predict_reference(train, labels, test, c, k, t)
        if torch.equal(got.long(), want):
            continue
        wrong = int((got.long() != want).sum())
        _knn_diagnose(answer)
        raise Hint(f"{wrong} of {len(test)} predictions differ from the kit's (k={k}, temperature={t}, {len(train)} "
                   f"training features): normalise both sides, take the k most similar, sum exp(similarity / "
                   f"temperature) per class, predict the largest sum")


def _knn_diagnose(answer):
    train, labels, query, c, k, t = _knn_diagnostic_case()
    try:
        pred = int(answer(train, labels, query, c, k, t).reshape(-1)[0])
    except Exception:  # noqa: BLE001 - the generic hint of the caller applies
        return
    if pred in _KNN_HINTS:
        raise Hint(_KNN_HINTS[pred])


def _knn_factory(normalise=True, largest=True, weight="exp"):
    def wrong(train_features, train_labels, test_features, num_classes, k=200, temperature=0.1):
        a, b = train_features.float(), test_features.float()
        if normalise:
            a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        sim, idx = (b @ a.T).topk(k, dim=1, largest=largest)  # (M, k)
        w = {"exp": (sim / temperature).exp(), "majority": torch.ones_like(sim), "no_t": sim.exp()}[weight]
        votes = torch.zeros(len(b), num_classes).scatter_add_(1, train_labels[idx], w)  # (M, C)
        return votes.argmax(1)

    return wrong


register(Exercise(
    name="knn_vote", notebook="02_contrastive", answer_name="my_knn_predict", difficulty=2,
    idea="the weighted kNN vote that scores frozen features: the k most cosine-similar training features vote "
         "for their class with weight exp(similarity / temperature)",
    test=_knn_test, reference=knn_predict_reference,
    mistakes=(
        Mistake("features not normalised (dot products instead of cosines)", _knn_factory(normalise=False),
                "normalise the features"),
        Mistake("a plain majority vote", _knn_factory(weight="majority"), "same weight"),
        Mistake("the temperature left out of the weights", _knn_factory(weight="no_t"), "temperature is missing"),
        Mistake("the k least similar neighbours", _knn_factory(largest=False), "least similar"),
    ),
))
