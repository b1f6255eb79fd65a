"""Evaluation: did self-supervision learn anything useful?

The field's standard answers, the same way in every notebook:

- ``predict``: run a model over a dataset (eval mode, no grad, batched), the kit's one such loop;
  ``extract_features``: a frozen backbone's features through it; ``accuracy`` of logits.
- ``knn_accuracy``: weighted kNN on L2-normalised features through lightly's ``knn_predict``
  (Wu et al. 2018; k=200 and temperature 0.1 as in lightly's benchmarks).
- ``linear_probe``: a linear classifier trained on frozen, precomputed, standardised features
  (full-batch L-BFGS: seconds, not minutes; defined in ``sslkit.probe``, with the classifier itself).
- baselines: ``raw_pixels`` and ``random_init_backbone`` (``baselines`` evaluates both).
- diagnostics: ``std_of_l2_normalized`` (lightly; about 1/sqrt(d) when healthy, near 0 when the
  representation has collapsed), ``alignment`` and ``uniformity`` (Wang & Isola 2020).
- ``embed_2d`` / ``plot_embedding``: PCA or t-SNE of the features, coloured by class.
- ``evaluate_backbone``: all of the above in one call, as a dict ready for ``Results.update``.

>>> import torch
>>> bank = torch.eye(4).repeat(5, 1)              # 20 features, 4 directions
>>> labels = torch.arange(4).repeat(5)            # the direction is the class
>>> knn_accuracy(bank, labels, torch.eye(4), torch.arange(4), k=5)
1.0
>>> linear_probe(bank, labels, torch.eye(4), torch.arange(4))
1.0
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageData, to_float
from .probe import linear_probe  # one of the evaluations, and imported from here by the notebooks


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, data: ImageData | torch.Tensor, batch_size: int = 512, name: str | None = None,
            fn=None) -> torch.Tensor:
    """Outputs (N, ...) of ``model`` over a dataset: eval mode, no gradients, in batches, float32 on the CPU.

    The one batched prediction loop of the kit: features of a backbone (``extract_features``),
    logits of a classifier, embeddings of augmented views. ``data`` is an ``ImageData``, uint8
    images (N, C, H, W) (normalised here with ``to_float``) or float images already normalised.
    Batches run on the model's device; every submodule's train/eval mode is restored afterwards. ``fn``: call
    this instead of ``model`` (e.g. ``vit.cls_attention``). Raises ``FloatingPointError`` naming
    the model (``name``) and the first bad batch when an output is NaN or Inf.

    >>> predict(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)), torch.zeros(5, 3, 2, 2,
    ...         dtype=torch.uint8)).shape
    torch.Size([5, 3])
    """
    images = data.images if isinstance(data, ImageData) else data
    device = _device_of(model)
    fn = fn or model
    out = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            y = fn(to_float(x) if x.dtype == torch.uint8 else x).float()
            if not torch.isfinite(y).all():
                raise FloatingPointError(
                    f"{name or type(model).__name__} produced NaN or Inf outputs in batch {start // batch_size} "
                    f"(images {start}..{start + len(x) - 1}); the weights have diverged: retrain with a "
                    f"lower learning rate or in fp32")
            out.append(y.cpu())
    return torch.cat(out)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model`` in eval mode inside the block; after it every submodule's own train/eval mode as it was
    (``model.train(was_training)`` would give them all the top module's: a frozen BatchNorm would train again)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def extract_features(backbone: nn.Module, data: ImageData | torch.Tensor, batch_size: int = 512,
                     name: str | None = None) -> torch.Tensor:
    """Features (N, D) of a frozen backbone, on the CPU, in the order of ``data`` (``predict``, flattened).

    Runs in eval mode without gradients, in batches, on the backbone's device; the train/eval mode of each of
    the backbone's modules is restored afterwards. ``data`` is an ``ImageData`` or a uint8 tensor (N, 3, H, W).
    Raises ``FloatingPointError`` naming the model and the first bad batch when
    a feature is NaN or Inf.
    """
    return predict(backbone, data, batch_size, name).flatten(1)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose highest score is the label: logits (N, C), labels (N,).

    >>> accuracy(torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]), torch.tensor([0, 1, 1]))
    0.6666666666666666
    """
    return (logits.argmax(1) == labels).sum().item() / len(labels)


def _lightly_knn_predict():
    """lightly's ``knn_predict``, loaded from its own file: ``import lightly.utils.benchmarking`` first runs that
    package's ``__init__``, which imports PyTorch Lightning for lightly's benchmark modules (2 s, in every kernel
    and every test process that evaluates); ``knn.py`` itself needs only torch."""
    import importlib.util
    import sys

    name = "lightly.utils.benchmarking.knn"
    if name not in sys.modules:  # not yet imported the usual way: load the one file, under a name of our own
        name = "_sslkit_lightly_knn"
        if name not in sys.modules:
            import lightly
            spec = importlib.util.spec_from_file_location(
                name, Path(lightly.__file__).parent / "utils" / "benchmarking" / "knn.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[name] = module
    return sys.modules[name].knn_predict


@torch.no_grad()
def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 200, temperature: float = 0.1,
                 batch_size: int = 1024) -> float:
    """Top-1 accuracy of a weighted kNN classifier (lightly's ``knn_predict``).

    Features are L2-normalised; each test sample's k most similar training samples vote for
    their class with weight exp(similarity / temperature).

    Args:
        train_features: (N, D) the feature bank. train_labels: (N,) class indices.
        test_features: (M, D) queries. test_labels: (M,) their classes.
        k: neighbours; clamped (with a warning) to N when the bank is smaller.
        temperature: lower values trust the nearest neighbours more.
    """
    knn_predict = _lightly_knn_predict()
    if k > len(train_features):
        warnings.warn(f"k={k} is larger than the feature bank ({len(train_features)} samples); "
                      f"using k={len(train_features)}", stacklevel=2)
        k = len(train_features)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    bank = F.normalize(train_features.float(), dim=1).T.contiguous()  # (D, N)
    labels = train_labels.long()
    correct = 0
    for start in range(0, len(test_features), batch_size):
        q = F.normalize(test_features[start:start + batch_size].float(), dim=1)
        pred = knn_predict(q, bank, labels, num_classes=num_classes, knn_k=k, knn_t=temperature)[:, 0]
        correct += (pred == test_labels[start:start + batch_size]).sum().item()
    return correct / len(test_features)


def _check_labeled(data: ImageData, role: str):
    if (data.labels < 0).any():
        raise ValueError(f"the {role} data ({data!r}) has unlabeled images (label -1); evaluation needs a labeled "
                         f"split such as load_dataset(..., 'train', ...) or 'test'")


# ----------------------------------------------------------------------------------------------
# representation diagnostics


def std_of_l2_normalized(features: torch.Tensor) -> float:
    """Mean over dimensions of the std of L2-normalised features (lightly; Chen & He 2021).

    About 1/sqrt(D) for features spread like an isotropic Gaussian; 0 when every image maps to
    the same vector (collapse).

    >>> std_of_l2_normalized(torch.ones(8, 4))
    0.0
    """
    from lightly.utils.debug import std_of_l2_normalized as lightly_std
    return lightly_std(features.float()).item()


def alignment(z0: torch.Tensor, z1: torch.Tensor, alpha: float = 2.0) -> float:
    """Alignment of positive pairs (Wang & Isola 2020): E ||f(x) - f(y)||^alpha over pairs.

    ``z0[i]`` and ``z1[i]`` (N, D) are features of two views of image i; they are L2-normalised
    first. 0 when both views map to the same point; at most 2^alpha. Lower is better.

    >>> alignment(torch.eye(3), torch.eye(3))
    0.0
    >>> alignment(torch.eye(3), -torch.eye(3))  # antipodal: distance 2, squared 4
    4.0
    """
    z0, z1 = F.normalize(z0.float(), dim=1), F.normalize(z1.float(), dim=1)
    return (z0 - z1).norm(dim=1).pow(alpha).mean().item()


def uniformity(z: torch.Tensor, t: float = 2.0, max_samples: int = 4096, seed: int = 0) -> float:
    """Uniformity (Wang & Isola 2020): log E exp(-t ||f(x) - f(y)||^2) over pairs of distinct samples.

    Features are L2-normalised first. 0 when all samples coincide (collapse); more negative is
    more uniform over the sphere (at best about -t * 2 in high dimensions, where random unit
    vectors are nearly orthogonal). At most ``max_samples`` samples are used (drawn with ``seed``).

    >>> uniformity(torch.ones(5, 3))  # collapsed
    0.0
    >>> uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))  # two antipodal points: -2 * 4
    -8.0
    """
    z = F.normalize(z.float(), dim=1)
    if len(z) > max_samples:
        z = z[torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))[:max_samples]]
    return torch.pdist(z, p=2).pow(2).mul(-t).exp().mean().log().item()


# ----------------------------------------------------------------------------------------------
# 2-D embeddings


def embed_2d(features: torch.Tensor, method: str = "pca", seed: int = 0) -> torch.Tensor:
    """(N, D) features -> (N, 2) coordinates, by PCA (``torch.pca_lowrank``) or t-SNE (scikit-learn).

    >>> embed_2d(torch.randn(50, 8)).shape
    torch.Size([50, 2])
    """
    x = features.float()
    if method == "pca":
        x = x - x.mean(0)
        _, _, v = torch.pca_lowrank(x, q=min(6, *x.shape), center=False, niter=6)  # v: (D, q)
        return x @ v[:, :2]
    if method == "tsne":
        from sklearn.manifold import TSNE
        perplexity = min(30.0, (len(x) - 1) / 3)
        out = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x.numpy())
        return torch.from_numpy(out).float()
    raise ValueError(f"unknown embedding method {method!r}; choose one of: pca, tsne")


def plot_embedding(features: torch.Tensor, labels: torch.Tensor, classes=None, method: str = "pca", ax=None,
                   max_points: int = 2000, seed: int = 0, title: str | None = None):
    """Scatter plot of a 2-D embedding of ``features`` coloured by class; returns the axes.

    At most ``max_points`` samples are drawn (chosen with ``seed``); t-SNE on 2,000 points takes
    about 10 s on a laptop CPU, PCA milliseconds.
    """
    import matplotlib.pyplot as plt

    if len(features) > max_points:
        idx = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:max_points]
        features, labels = features[idx], labels[idx]
    xy = embed_2d(features, method, seed)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    cmap = plt.get_cmap("tab10" if int(labels.max()) < 10 else "tab20")
    for k in labels.unique().tolist():
        m = labels == k
        name = classes[k] if classes is not None else str(k)
        ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(k % cmap.N), label=name)
    ax.set(title=title or method.upper(), xticks=[], yticks=[])
    ax.legend(markerscale=3, fontsize=7, loc="best", frameon=False)
    return ax


# ----------------------------------------------------------------------------------------------
# baselines and the one-call evaluation


def raw_pixels(data: ImageData | torch.Tensor) -> torch.Tensor:
    """The "no learning" baseline: normalised pixels flattened into (N, 3*H*W) features."""
    images = data.images if isinstance(data, ImageData) else data
    return to_float(images).flatten(1)


def random_init_backbone(name: str, seed: int = 0, **overrides) -> nn.Module:
    """A backbone of architecture ``name`` with random weights drawn with ``seed`` (never trained)."""
    from .models import make_backbone
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        backbone, _ = make_backbone(name, **overrides)
    finally:
        torch.random.set_rng_state(state)
    return backbone


def _key(metric: str, prefix: str) -> str:
    return f"{metric}_{prefix}" if prefix else metric


def evaluate_features(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                      test_labels: torch.Tensor, prefix: str = "", k: int = 200, temperature: float = 0.1) -> dict:
    """kNN and linear-probe accuracy, std of L2-normalised features and uniformity (of the test features).

    Keys are ``knn``, ``linear``, ``std``, ``uniformity``, each followed by ``_<prefix>`` when given.
    """
    return {_key("knn", prefix): knn_accuracy(train_features, train_labels, test_features, test_labels, k, temperature),
            _key("linear", prefix): linear_probe(train_features, train_labels, test_features, test_labels),
            _key("std", prefix): std_of_l2_normalized(test_features),
            _key("uniformity", prefix): uniformity(test_features)}


def evaluate_backbone(backbone: nn.Module, train_data: ImageData, test_data: ImageData, prefix: str = "",
                      per_class: int | None = None, k: int = 200, temperature: float = 0.1, seed: int = 0,
                      name: str | None = None) -> dict:
    """Evaluate a frozen backbone: a dict of metrics ready for ``Results.update``.

    Args:
        backbone: maps images (B, 3, H, W) to features (B, D); used in eval mode, then restored.
        train_data: labeled images: the kNN bank and the linear probe's training set.
        test_data: labeled images to score.
        prefix: appended to every key, e.g. "rotation" -> ``knn_rotation``, ``linear_rotation``.
        per_class: use only this many labeled training images per class (raises ValueError with
            the counts when a class has fewer).
        k, temperature: the kNN classifier's settings.
        seed: for the labeled subset and the augmented views of the alignment.
        name: the model's name in error messages.

    Returns keys ``knn``, ``linear``, ``std`` (of L2-normalised test features), ``uniformity`` and
    ``alignment`` (test images vs a flipped and shifted view of them), suffixed with ``_<prefix>``.

    >>> from sslkit.data import load_dataset
    >>> train, test = load_dataset("shapes", "train", n=60), load_dataset("shapes", "test", n=20)
    >>> metrics = evaluate_backbone(random_init_backbone("resnet_tiny"), train, test, prefix="random_init", k=10)
    >>> sorted(metrics)
    ['alignment_random_init', 'knn_random_init', 'linear_random_init', 'std_random_init', 'uniformity_random_init']
    """
    from .augment import flip_and_translate

    _check_labeled(train_data, "training")
    _check_labeled(test_data, "test")
    if per_class is not None:
        train_data = train_data.per_class(per_class, seed=seed)
    name = name or prefix or None
    train_f = extract_features(backbone, train_data, name=name)
    test_f = extract_features(backbone, test_data, name=name)
    metrics = evaluate_features(train_f, train_data.labels, test_f, test_data.labels, prefix, k, temperature)
    views = flip_and_translate(test_data.images, max_shift=4, generator=torch.Generator().manual_seed(seed))
    metrics[_key("alignment", prefix)] = alignment(test_f, extract_features(backbone, views, name=name))
    return metrics


def baselines(train_data: ImageData, test_data: ImageData, backbone: str = "resnet_small", seed: int = 0,
              k: int = 200, temperature: float = 0.1, **overrides) -> dict:
    """The two reference points every method must beat, evaluated like a trained backbone.

    ``*_raw_pixels``: the normalised pixels themselves; ``*_random_init``: an untrained backbone of
    architecture ``backbone`` (random weights from ``seed``; ``overrides`` such as ``width=8`` go to
    ``make_backbone``, so the baseline has the trained model's exact architecture). Returns knn,
    linear, std, uniformity (and alignment for the backbone) with those suffixes.
    """
    _check_labeled(train_data, "training")
    _check_labeled(test_data, "test")
    metrics = evaluate_features(raw_pixels(train_data), train_data.labels, raw_pixels(test_data), test_data.labels,
                                "raw_pixels", k, temperature)
    metrics.update(evaluate_backbone(random_init_backbone(backbone, seed, **overrides), train_data, test_data, "random_init",
                                     k=k, temperature=temperature, seed=seed))
    return metrics
