"""The evaluation toolkit against reference implementations and cases with known answers."""

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sslkit
from sslkit.data import to_float
from sslkit.evaluate import (accuracy, alignment, baselines, embed_2d, evaluate_backbone, extract_features,
                             knn_accuracy, linear_probe, plot_embedding, predict, random_init_backbone, raw_pixels,
                             std_of_l2_normalized, uniformity)

matplotlib.use("Agg")


def brute_force_knn(train_f, train_y, test_f, k, t, num_classes):
    """Weighted kNN written out: cosine similarity, top k, votes exp(sim / t) per class."""
    train_f, test_f = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    preds = []
    for q in test_f:
        sims = train_f @ q
        top = sims.topk(k).indices
        votes = torch.zeros(num_classes)
        for i in top:
            votes[train_y[i]] += math.exp(sims[i].item() / t)
        preds.append(int(votes.argmax()))
    return torch.tensor(preds)


def test_knn_matches_a_brute_force_weighted_knn():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g)
    train_y, test_y = torch.randint(5, (300,), generator=g), torch.randint(5, (60,), generator=g)
    train_f = centres[train_y] + 2.0 * torch.randn(300, 16, generator=g)
    test_f = centres[test_y] + 2.0 * torch.randn(60, 16, generator=g)
    for k, t in ((10, 0.1), (50, 0.5)):
        expected = (brute_force_knn(train_f, train_y, test_f, k, t, 5) == test_y).float().mean().item()
        assert knn_accuracy(train_f, train_y, test_f, test_y, k=k, temperature=t) == pytest.approx(expected)
    assert 0.3 < expected < 1.0  # a case that is neither trivial nor hopeless


def test_knn_clamps_k_with_a_warning():
    f, y = torch.eye(4).repeat(2, 1), torch.arange(4).repeat(2)
    with pytest.warns(UserWarning, match="using k=8"):
        assert knn_accuracy(f, y, torch.eye(4), torch.arange(4)) == 1.0


def blobs(n, d, spread, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, d, generator=g) * 2
    y = torch.randint(4, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, d, generator=g) + 5.0, y  # offset: standardisation matters


@pytest.mark.parametrize("spread", [0.3, 2.5])  # separable, and overlapping classes
def test_linear_probe_matches_sklearn_logistic_regression(spread):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = blobs(600, 20, spread, seed=0)
    idx = torch.randperm(600, generator=torch.Generator().manual_seed(1))
    x, y, xt, yt = x[idx[:400]], y[idx[:400]], x[idx[400:]], y[idx[400:]]
    wd = 1e-2
    ours = linear_probe(x, y, xt, yt, weight_decay=wd)
    scaler = StandardScaler().fit(x.numpy())
    ref = LogisticRegression(C=1 / (wd * len(x)), max_iter=5000, tol=1e-8).fit(scaler.transform(x.numpy()), y.numpy())
    expected = (ref.predict(scaler.transform(xt.numpy())) == yt.numpy()).mean()
    assert ours == pytest.approx(expected, abs=0.011)  # at most a couple of borderline test points differ
    if spread < 1:
        assert ours == 1.0


def test_linear_probe_solves_thousands_of_samples_and_features():
    """The scale of the notebooks' probes (its speed is measured by ``python -m sslkit.bench``, not here)."""
    x, y = blobs(5000, 256, 1.0, seed=2)
    assert linear_probe(x[:4000], y[:4000], x[4000:], y[4000:]) == 1.0
    assert linear_probe(x[:4000], y[:4000], x[4000:], y[4000:].roll(1)) < 0.5  # labels that do not fit: chance


def test_fit_linear_fits_the_same_weights_as_plain_autograd():
    """fit_linear's product with its own backward (probe._Product) gives the numbers autograd gives for x @ weight:
    the recorded lesson runs' linear probes, fitted before it, come out the same."""
    from sslkit.config import torch_threads
    from sslkit.probe import fit_linear

    x, y = blobs(700, 300, 2.0, seed=3)
    ours = fit_linear(x, y, max_iter=40)
    z = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    weight = torch.zeros(300, 4, requires_grad=True)
    bias = torch.zeros(4, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=40, history_size=20, tolerance_grad=1e-6,
                                  tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight + bias, y) + 0.5 * 1e-3 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch_threads(1), torch.enable_grad():
        optimizer.step(closure)
    assert torch.equal(ours.weight, weight.detach().T) and torch.equal(ours.bias, bias.detach())


def test_alignment_and_uniformity_on_known_cases():
    d = 8
    # a regular simplex: d + 1 unit vectors with pairwise squared distance 2 (1 + 1/d)
    simplex = torch.eye(d + 1) - 1 / (d + 1)
    simplex = F.normalize(simplex, dim=1)
    assert uniformity(simplex) == pytest.approx(-2 * 2 * (1 + 1 / d), abs=1e-5)
    assert uniformity(simplex, t=1.0) == pytest.approx(-2 * (1 + 1 / d), abs=1e-5)
    assert uniformity(torch.ones(10, 3) * 4) == pytest.approx(0.0, abs=1e-6)  # collapse
    # half the points at one pole, half at the other: pairs at 0 (within) or 4 (across)
    poles = torch.tensor([[1.0, 0.0]] * 2 + [[-1.0, 0.0]] * 2)
    # 6 pairs: 2 within (distance 0), 4 across (squared distance 4)
    assert uniformity(poles) == pytest.approx(math.log((2 + 4 * math.exp(-8)) / 6), abs=1e-6)
    z = torch.randn(50, 16)
    assert alignment(z, 3 * z) == pytest.approx(0.0, abs=1e-6)  # scale does not matter
    z1 = F.normalize(torch.randn(50, 16), dim=1)
    z2 = F.normalize(torch.randn(50, 16), dim=1)
    expected = (z1 - z2).norm(dim=1).pow(2).mean().item()
    assert alignment(z1, z2) == pytest.approx(expected, rel=1e-5)
    assert alignment(z1, z2, alpha=1) == pytest.approx((z1 - z2).norm(dim=1).mean().item(), rel=1e-5)
    orth = torch.eye(4)  # orthogonal pairs: squared distance exactly 2
    assert alignment(orth, orth.roll(1, 0)) == pytest.approx(2.0)


def test_std_of_l2_normalized_detects_collapse():
    torch.manual_seed(0)
    d = 64
    assert std_of_l2_normalized(torch.randn(5000, d)) == pytest.approx(1 / math.sqrt(d), rel=0.05)
    assert std_of_l2_normalized(torch.randn(1, d).repeat(100, 1)) == pytest.approx(0.0, abs=1e-6)


def test_pca_embedding_matches_sklearn_up_to_sign():
    from sklearn.decomposition import PCA
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=g) * torch.linspace(5, 0.5, 10)  # distinct variances
    ours = embed_2d(x, "pca")
    ref = torch.from_numpy(PCA(2).fit_transform(x.numpy())).float()
    for c in range(2):
        assert abs(torch.corrcoef(torch.stack([ours[:, c], ref[:, c]]))[0, 1]) > 0.999


def test_tsne_and_plot_embedding():
    x, y = blobs(120, 8, 0.3, seed=3)
    xy = embed_2d(x, "tsne")
    assert xy.shape == (120, 2) and torch.isfinite(xy).all()
    ax = plot_embedding(x, y, classes=list("abcd"), method="pca", max_points=50)
    assert sum(len(c.get_offsets()) for c in ax.collections) == 50
    with pytest.raises(ValueError, match="pca, tsne"):
        embed_2d(x, "umap")


class NaNAfter(nn.Module):
    def __init__(self, bad_from):
        super().__init__()
        self.lin, self.bad_from, self.seen = nn.Linear(3, 2), bad_from, 0

    def forward(self, x):
        out = self.lin(x.mean((2, 3)))
        self.seen += len(x)
        return out * float("nan") if self.seen > self.bad_from else out


def test_nan_features_name_the_model_and_the_first_bad_batch():
    images = torch.zeros(40, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(FloatingPointError, match=r"rotation-model .*batch 2 \(images 20\.\.29\)"):
        extract_features(NaNAfter(bad_from=25), images, batch_size=10, name="rotation-model")


@pytest.fixture(scope="module")
def splits():
    return (sslkit.load_dataset("shapes", "train", n=100, seed=0), sslkit.load_dataset("shapes", "test", n=40, seed=0))


def test_evaluate_backbone_returns_prefixed_metrics_for_results(splits, tmp_path):
    train, test = splits
    backbone = random_init_backbone("resnet_tiny", seed=0)
    m = evaluate_backbone(backbone, train, test, prefix="demo", k=20)
    assert set(m) == {"knn_demo", "linear_demo", "std_demo", "uniformity_demo", "alignment_demo"}
    assert all(math.isfinite(v) for v in m.values())
    assert 0 <= m["knn_demo"] <= 1 and 0 <= m["linear_demo"] <= 1
    assert m == evaluate_backbone(backbone, train, test, prefix="demo", k=20)  # deterministic
    res = sslkit.Results("test", {"profile": "smoke"}, tmp_path / "r.json")
    res.update(m)
    assert sslkit.load_results(tmp_path / "r.json")["metrics"] == m
    assert set(evaluate_backbone(backbone, train, test, k=20)) == {"knn", "linear", "std", "uniformity", "alignment"}


def test_too_few_labels_per_class_gives_the_counts(splits):
    train, test = splits
    with pytest.raises(ValueError, match=r"asked for 50 labeled images per class.*circle"):
        evaluate_backbone(random_init_backbone("resnet_tiny"), train, test, per_class=50)
    m = evaluate_backbone(random_init_backbone("resnet_tiny"), train, test, per_class=5, k=10)
    assert 0 <= m["knn"] <= 1


def test_unlabeled_split_is_refused(splits):
    unlabeled = sslkit.load_dataset("shapes", "unlabeled", n=20, seed=0)
    with pytest.raises(ValueError, match="labeled split"):
        evaluate_backbone(random_init_backbone("resnet_tiny"), unlabeled, splits[1])


def test_baselines_and_random_init_are_seeded(splits):
    train, test = splits
    m = baselines(train, test, backbone="resnet_tiny", k=20)
    assert {"knn_raw_pixels", "linear_raw_pixels", "knn_random_init", "linear_random_init"} <= set(m)
    assert raw_pixels(train).shape == (100, 3 * 32 * 32)
    a, b = random_init_backbone("resnet_tiny", seed=3), random_init_backbone("resnet_tiny", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = random_init_backbone("resnet_tiny", seed=4)
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_predict_is_the_model_in_eval_mode_over_batches_and_restores_its_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Dropout(0.5), torch.nn.LazyLinear(5))
    images = torch.randint(0, 256, (23, 3, 8, 8), dtype=torch.uint8)
    model(to_float(images[:2]))  # materialise the lazy layer; the model stays in train mode
    out = predict(model, images, batch_size=5)
    assert model.training  # restored
    expected = model.eval()(to_float(images)).detach()  # eval: BatchNorm's running statistics, no dropout
    assert out.shape == (23, 5) and torch.allclose(out, expected, atol=1e-5)
    floats = to_float(images)  # already normalised: used as they are
    assert torch.allclose(predict(model, floats, batch_size=7), expected, atol=1e-5)
    means = predict(model, images, batch_size=5, fn=lambda x: x.mean((1, 2, 3)))  # fn instead of the model
    assert torch.allclose(means, to_float(images).mean((1, 2, 3)), atol=1e-6)
    assert accuracy(torch.eye(3)[[0, 1, 1]], torch.tensor([0, 1, 2])) == 2 / 3


def test_predict_restores_each_submodules_own_mode():
    """A model training with frozen BatchNorm layers (in eval mode) keeps them frozen after ``predict`` and
    ``extract_features``: each submodule's mode is restored, not the top module's spread over all of them."""
    backbone, _ = sslkit.make_backbone("resnet_tiny", width=8)
    backbone.train()
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms[::2]:
        m.eval()
    before = {name: m.training for name, m in backbone.named_modules()}
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    extract_features(backbone, images)
    assert {name: m.training for name, m in backbone.named_modules()} == before
    predict(backbone, images, fn=lambda x: backbone(x) * 0)  # a caller's fn: the same restoring
    assert {name: m.training for name, m in backbone.named_modules()} == before
    assert len(norms) > 1 and before[""] and not norms[0].training and norms[1].training
