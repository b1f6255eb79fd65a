"""Label efficiency: how far a few labels go on top of self-supervised features.

Three ways to turn a pre-trained backbone into a classifier, from cheapest to most expensive
(the evaluation protocols of SimCLR, Chen et al. 2020, sections 4 and 6):

- **kNN** on frozen features (``sslkit.evaluate.knn_accuracy``): no training at all;
- **linear probe** on frozen features (``fit_linear``): a logistic regression on the features;
- **fine-tuning** (``fine_tune``): the whole network and a new linear head trained on the labels,
  the backbone at a smaller learning rate than the head (``FineTune.param_groups``), so a few
  labels adjust the pre-trained features instead of overwriting them. The same recipe on a
  randomly initialised backbone is the supervised-from-scratch baseline.

Then what practitioners report about a classifier (``classification_metrics``: accuracy,
macro-F1, per-class precision and recall, one-vs-rest AUC-ROC; ``confusion_matrix``), the
labeled subsets of a label-efficiency curve (``labels_per_class``), and semi-supervised
pseudo-labelling on frozen features (``pseudo_label``; Lee 2013).

>>> import torch
>>> y = torch.tensor([0, 0, 1, 1])
>>> scores = torch.tensor([[2.0, 0.0], [1.0, 0.5], [0.0, 1.0], [0.8, 0.2]])
>>> m = classification_metrics(y, scores, ["cat", "dog"])
>>> m["accuracy"], m["recall_dog"], m["auroc_ovr"]
(0.75, 0.5, 0.75)
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .augment import AugmentParams, augment
from .config import Config
from .data import ImageData, to_float
from .train import History, Supervised, train

# ----------------------------------------------------------------------------------------------
# metrics


def classification_metrics(labels: torch.Tensor, scores: torch.Tensor, classes: list[str]) -> dict:
    """Flat metrics for a results file, from true labels (N,) and class scores (N, C).

    ``scores`` may be logits or probabilities: accuracy, F1, precision and recall use the argmax;
    AUC-ROC (one-vs-rest, macro-averaged) uses the softmax. Per-class values are named
    ``precision_<class>`` and ``recall_<class>``.
    """
    from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

    if scores.ndim != 2 or len(scores) != len(labels) or scores.shape[1] != len(classes):
        raise ValueError(f"scores must be (N, C) = ({len(labels)}, {len(classes)}) for {len(labels)} labels and "
                         f"{len(classes)} classes; got {tuple(scores.shape)}")
    y = labels.cpu().numpy()
    probs = scores.float().softmax(dim=1) if (scores.min() < 0 or (scores.sum(1) - 1).abs().max() > 1e-4) \
        else scores.float()
    pred = probs.argmax(1).cpu().numpy()
    k = list(range(len(classes)))
    precision, recall, _, _ = precision_recall_fscore_support(y, pred, labels=k, zero_division=0)
    out = {"accuracy": float((pred == y).mean()),
           "macro_f1": float(f1_score(y, pred, labels=k, average="macro", zero_division=0))}
    p = probs.cpu().numpy()
    if len(classes) == 2:
        out["auroc_ovr"] = float(roc_auc_score(y, p[:, 1]))
    else:
        out["auroc_ovr"] = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=k))
    for name, pr, rc in zip(classes, precision, recall):
        out[f"precision_{name}"] = float(pr)
        out[f"recall_{name}"] = float(rc)
    return out


def confusion_matrix(labels: torch.Tensor, scores: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts: row = true class, column = predicted class.

    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([[1., 0.], [1., 0.], [0., 1.]]), 2)
    tensor([[1, 0],
            [1, 1]])
    """
    pred = scores.argmax(1)
    return torch.bincount(labels.long() * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


def labels_per_class(data: ImageData, counts=(1, 5, 10, 50), seeds=(0, 1, 2)) -> dict:
    """The labeled subsets of a label-efficiency curve: {(n, seed): ImageData with n per class}.

    Fails early, with the counts per class, when a count is larger than a class has.
    """
    smallest = min(data.class_counts().values())
    too_many = [n for n in counts if n > smallest]
    if too_many:
        raise ValueError(f"asked for {too_many} labels per class but the smallest class of the {data.split!r} split "
                         f"has {smallest} (counts: {data.class_counts()}); use counts up to {smallest}")
    return {(n, s): data.per_class(n, seed=s) for n in counts for s in seeds}


# ----------------------------------------------------------------------------------------------
# fine-tuning: the whole network, the backbone at a lower learning rate than the head


class FineTune(Supervised):
    """A backbone and a linear head trained together on labels (cross-entropy on augmented images).

    The head is new and the backbone pre-trained; with one learning rate for both, the head's
    large early gradients would wreck the features before the head has learned anything. So the
    backbone trains at ``backbone_lr_scale`` times the head's learning rate: ``param_groups``
    gives ``sslkit.train.make_optimizer`` two groups, and the training loop multiplies each
    group's scheduled lr by its ``lr_scale``. Better still, start the head from a linear probe
    (``init_head``; "LP-FT", Kumar et al. 2022): then fine-tuning begins from a working
    classifier and only has to improve the features, not survive a random head.

    Args:
        backbone: (B, 3, H, W) normalised images -> (B, D) features; trained in place.
        num_classes: outputs of the head.
        feature_dim: D (None: ``backbone.feature_dim``).
        backbone_lr_scale: the backbone's lr as a fraction of the head's (1.0: one lr for all,
            the from-scratch recipe; 0.0: a frozen backbone, a linear probe trained by SGD).
        augment: the random views to train on (``AugmentParams``: crops, colour jitter, ...);
            None: horizontal flips and shifts of up to ``max_shift`` pixels only.
        max_shift: shifts in pixels when ``augment`` is None.

    >>> import sslkit
    >>> backbone, dim = sslkit.make_backbone("resnet_tiny", width=8)
    >>> model = FineTune(backbone, 10, backbone_lr_scale=0.1)
    >>> [g["lr_scale"] for g in model.param_groups()]
    [0.1, 1.0]
    >>> model(torch.zeros(2, 3, 32, 32)).shape  # logits (B, num_classes)
    torch.Size([2, 10])
    """

    def __init__(self, backbone: nn.Module, num_classes: int, feature_dim: int | None = None,
                 backbone_lr_scale: float = 0.1, augment: AugmentParams | None = None, max_shift: int = 4):
        super().__init__(backbone, num_classes, feature_dim, max_shift)
        if backbone_lr_scale < 0:
            raise ValueError(f"backbone_lr_scale={backbone_lr_scale} must be >= 0 (a fraction of the head's lr, "
                             f"e.g. 0.1)")
        self.backbone_lr_scale, self.augment = backbone_lr_scale, augment

    def param_groups(self) -> list[dict]:
        """Two torch parameter groups: the backbone (at ``backbone_lr_scale``), then the head (at 1)."""
        return [{"params": list(self.backbone.parameters()), "lr_scale": self.backbone_lr_scale},
                {"params": list(self.head.parameters()), "lr_scale": 1.0}]

    def training_step(self, images, labels):
        if self.augment is None:
            return super().training_step(images, labels)
        if (labels < 0).any():
            raise ValueError("fine-tuning needs labels, but this batch has unlabeled images (label -1)")
        return F.cross_entropy(self(augment(images, self.augment)), labels)  # views: (B, 3, S, S) floats

    @torch.no_grad()
    def init_head(self, classifier) -> "FineTune":
        """Start the head from a ``fit_linear`` classifier (a linear probe on this backbone's features).

        ``fit_linear`` standardises the features, ``(f - mean) / scale``, then applies ``W, b``; the
        same map on raw features is ``W / scale`` and ``b - (W / scale) @ mean``.
        """
        scaler, logistic = classifier[0], classifier[-1]
        if len(logistic.classes_) != self.head.out_features:
            raise ValueError(f"the classifier knows {len(logistic.classes_)} classes, the head has "
                             f"{self.head.out_features}; fit it on labels of every class")
        w = torch.as_tensor(logistic.coef_ / scaler.scale_, dtype=torch.float32)  # (C, D)
        b = torch.as_tensor(logistic.intercept_, dtype=torch.float32) - w @ torch.as_tensor(scaler.mean_,
                                                                                           dtype=torch.float32)
        self.head.weight.copy_(w.to(self.head.weight.device))
        self.head.bias.copy_(b.to(self.head.bias.device))
        return self


def steps_config(cfg: Config, num_images: int, steps: int) -> Config:
    """A copy of ``cfg`` whose epochs give about ``steps`` optimizer steps on ``num_images`` images.

    A label-efficiency curve trains on 10 to 50,000 images: a fixed number of *epochs* would give
    the smallest sets a handful of steps and the largest hours, so each run gets a number of
    *steps* instead (batch ``min(cfg.batch_size, num_images)``, warm-up over the first 10%).

    >>> import sslkit
    >>> c = steps_config(sslkit.make_config("smoke", batch_size=64), num_images=100, steps=30)
    >>> c.num_epochs, c.batch_size  # 1 step per epoch of 100 images at batch 64 (the rest is dropped)
    (30, 64)
    """
    if steps < 1:
        raise ValueError(f"steps={steps}: give at least one optimizer step")
    batch_size = min(cfg.batch_size, num_images)
    per_epoch = num_images // batch_size
    num_epochs = math.ceil(steps / per_epoch)
    return dataclasses.replace(cfg, num_epochs=num_epochs, warmup_epochs=0.1 * num_epochs, extra=dict(cfg.extra))


def fine_tune(backbone: nn.Module, labeled: ImageData, cfg: Config, steps: int = 300,
              backbone_lr_scale: float = 0.1, head_init: str = "linear", augment: AugmentParams | None = None,
              copy_backbone: bool = True, **kwargs) -> tuple[FineTune, History]:
    """Fine-tune ``backbone`` with a new linear head on ``labeled`` for about ``steps`` steps.

    Uses ``cfg``'s lr (the head's; the backbone gets ``backbone_lr_scale`` of it), weight decay,
    batch size (capped at the number of images), device and seed. ``cfg.time_budget_s`` is a cap
    per run: the schedule follows the steps, so the same seed gives the same model on any machine
    fast enough to finish within it.

    Args:
        backbone: pre-trained (or freshly initialised, for the from-scratch baseline).
        labeled: the labeled training images.
        head_init: "linear": start the head from a linear probe on the backbone's frozen features
            (LP-FT); "random": from random weights (the usual from-scratch start).
        augment: the views to train on (see ``FineTune``); None: flips and shifts.
        copy_backbone: train a copy, leaving ``backbone`` as it was (so one pre-trained backbone
            serves every run of a curve); False trains it in place.
        kwargs: go to ``sslkit.train.train`` (``progress``, ``monitor``, ``live_plot``).
    Returns ``(model, history)``; ``model(x)`` gives logits (B, C), ``predict(model, data)`` all of them.
    """
    from .evaluate import extract_features

    if (labeled.labels < 0).any():
        raise ValueError(f"fine-tuning needs labels but {labeled!r} has unlabeled images (label -1); use a "
                         f"labeled split ('train'), e.g. data.per_class(10)")
    if head_init not in ("linear", "random"):
        raise ValueError(f"unknown head_init {head_init!r}; choose 'linear' (from a linear probe) or 'random'")
    kwargs.setdefault("progress", False)
    torch.manual_seed(cfg.seed)  # the head's random init
    net = copy.deepcopy(backbone) if copy_backbone else backbone
    model = FineTune(net, labeled.num_classes, backbone_lr_scale=backbone_lr_scale, augment=augment)
    if head_init == "linear":
        model.init_head(fit_linear(extract_features(net, labeled), labeled.labels))
    planned = dataclasses.replace(steps_config(cfg, len(labeled), steps), time_budget_s=None)
    history = train(model, labeled, planned, time_limit_s=cfg.time_budget_s, **kwargs)
    return model, history


@torch.no_grad()
def predict(model: nn.Module, data: ImageData | torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits (N, C) of a classifier over uint8 images, in eval mode, on the CPU.

    >>> predict(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)), torch.zeros(5, 3, 2, 2,
    ...         dtype=torch.uint8)).shape
    torch.Size([5, 3])
    """
    images = data.images if isinstance(data, ImageData) else data
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [model(to_float(images[i:i + batch_size].to(device))).float().cpu()
               for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# frozen features: a linear classifier with probabilities, and pseudo-labelling on top of it


def fit_linear(features: torch.Tensor, labels: torch.Tensor, weight_decay: float = 1e-3, max_iter: int = 1000):
    """A linear classifier on frozen features: standardise, then multinomial logistic regression.

    The objective of ``sslkit.evaluate.linear_probe`` (mean cross-entropy + ``weight_decay``/2 *
    ||W||^2), through scikit-learn, because pseudo-labelling needs the class *probabilities*
    (``.predict_proba``), not only the accuracy. ``tests/test_finetune.py`` checks that both agree.
    Returns a fitted scikit-learn pipeline: ``.predict_proba(features.numpy())`` -> (N, C).

    >>> x = torch.tensor([[0.0], [0.1], [1.0], [1.1]]); y = torch.tensor([0, 0, 1, 1])
    >>> fit_linear(x, y).predict(x.numpy()).tolist()
    [0, 0, 1, 1]
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels; give one label per row")
    if (labels < 0).any():
        raise ValueError("fit_linear needs labels, but some are -1 (unlabeled); pass only the labeled rows")
    c = 1.0 / (weight_decay * len(features))  # sklearn: C * sum of losses + ||W||^2 / 2
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    return clf.fit(features.float().numpy(), labels.numpy())


def class_scores(classifier, features: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Probabilities (N, num_classes) from a ``fit_linear`` classifier, with a column for every class.

    (A classifier fitted on labels that miss a class has fewer columns; the missing ones are 0.)
    """
    probs = torch.from_numpy(classifier.predict_proba(features.float().numpy())).float()
    out = torch.zeros(len(features), num_classes)
    out[:, torch.as_tensor(classifier.classes_, dtype=torch.long)] = probs
    return out


@dataclass
class PseudoLabels:
    """What ``pseudo_label`` did: the final classifier and the pool images it labelled, per round."""

    classifier: object  # the fitted classifier after the last round (``class_scores`` reads it)
    indices: torch.Tensor  # (K,) indices into the pool of the images that got a pseudo-label
    labels: torch.Tensor  # (K,) their pseudo-labels
    added_per_round: list  # how many pool images were labelled in each round


def pseudo_label(train_features: torch.Tensor, train_labels: torch.Tensor, pool_features: torch.Tensor,
                 threshold: float = 0.9, per_class: int | None = None, rounds: int = 3,
                 weight_decay: float = 1e-3) -> PseudoLabels:
    """Self-training with pseudo-labels (Lee 2013) on frozen features.

    Each round fits ``fit_linear`` on the labeled rows plus the pseudo-labelled ones, predicts the
    unlabeled ``pool``, and gives a pseudo-label to every pool image whose top probability is at
    least ``threshold``, keeping at most ``per_class`` of the most confident per class (so one
    easy class cannot flood the labeled set). Good features make confident predictions mostly
    right; if the classifier is confidently wrong, the errors are learned as truth (confirmation
    bias), which is why the threshold is high.

    Args:
        train_features, train_labels: (N, D), (N,) the labeled rows.
        pool_features: (M, D) unlabeled rows (their labels are never looked at).
        threshold: minimum softmax probability for a pseudo-label.
        per_class: at most this many pseudo-labels per class and round (None: no cap).
        rounds: fit-label-refit rounds.

    >>> g = torch.Generator().manual_seed(0)
    >>> centres = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    >>> pool_y = torch.arange(2).repeat(50)
    >>> pool = centres[pool_y] + torch.randn(100, 2, generator=g)
    >>> result = pseudo_label(centres, torch.tensor([0, 1]), pool, threshold=0.9, rounds=2)
    >>> bool((result.labels == pool_y[result.indices]).float().mean() > 0.9), len(result.indices) > 50
    (True, True)
    """
    if len(train_features) != len(train_labels) or train_features.shape[1:] != pool_features.shape[1:]:
        raise ValueError(f"train_features {tuple(train_features.shape)}, train_labels {tuple(train_labels.shape)} and "
                         f"pool_features {tuple(pool_features.shape)} must agree: (N, D), (N,), (M, D)")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold} is a probability: choose one in (0, 1], e.g. 0.9")
    num_classes = int(train_labels.max()) + 1
    indices, labels, added = torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), []
    classifier = fit_linear(train_features, train_labels, weight_decay)
    for _ in range(rounds):
        probs = class_scores(classifier, pool_features, num_classes)  # (M, C)
        confidence, guess = probs.max(1)  # (M,), (M,)
        picked = []
        for k in range(num_classes):
            idx = ((guess == k) & (confidence >= threshold)).nonzero().squeeze(1)
            idx = idx[confidence[idx].argsort(descending=True)][:per_class]  # the most confident first
            picked.append(idx)
        indices = torch.cat(picked).sort().values
        labels = guess[indices]
        added.append(len(indices))
        if not len(indices):
            break
        classifier = fit_linear(torch.cat([train_features, pool_features[indices]]),
                                torch.cat([train_labels, labels]), weight_decay)
    return PseudoLabels(classifier, indices, labels, added)


# ----------------------------------------------------------------------------------------------
# the label-efficiency curve: {protocol: {labels per class: [accuracy of each seed]}}


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value).

    >>> [round(v, 4) for v in mean_std([0.5, 0.7])]
    [0.6, 0.1414]
    """
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def curve_metrics(curve: dict) -> dict:
    """Flat metrics for a results file: ``acc_<protocol>_<n>`` (mean over seeds) and ``..._std``.

    >>> {k: round(v, 4) for k, v in curve_metrics({"scratch": {10: [0.2, 0.4], "all": [0.9]}}).items()}
    {'acc_scratch_10': 0.3, 'acc_scratch_10_std': 0.1414, 'acc_scratch_all': 0.9}
    """
    out = {}
    for protocol, points in curve.items():
        for n, accs in points.items():
            mean, std = mean_std(accs)
            out[f"acc_{protocol}_{n}"] = mean
            if len(accs) > 1:
                out[f"acc_{protocol}_{n}_std"] = std
    return out


def format_curve(curve: dict) -> str:
    """A plain-text table: one row per protocol, one column per label count, "mean ± std (seeds)"."""
    counts = list(dict.fromkeys(n for points in curve.values() for n in points))
    header = ["labels per class"] + [str(n) for n in counts]
    rows = [header]
    for protocol, points in curve.items():
        cells = [protocol]
        for n in counts:
            if n not in points:
                cells.append("")
                continue
            mean, std = mean_std(points[n])
            cells.append(f"{mean:.3f}" + (f" ± {std:.3f}" if len(points[n]) > 1 else ""))
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_curve(curve: dict, num_all: int | None = None, ax=None, title: str = "label efficiency"):
    """Accuracy against labels per class (log scale), one line per protocol, the band = ± 1 std.

    The "all" point is drawn at ``num_all`` labels per class (the labeled split's size / classes).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for protocol, points in curve.items():
        xs, means, stds = [], [], []
        for n, accs in points.items():
            x = num_all if n == "all" else n
            if x is None:
                continue
            mean, std = mean_std(accs)
            xs.append(x), means.append(mean), stds.append(std)
        order = sorted(range(len(xs)), key=xs.__getitem__)
        xs, means, stds = [xs[i] for i in order], [means[i] for i in order], [stds[i] for i in order]
        line, = ax.plot(xs, means, "o-", label=protocol)
        ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                        color=line.get_color(), alpha=0.2)
    ax.set(xscale="log", xlabel="labels per class" + (f" (all = {num_all})" if num_all else ""),
           ylabel="test accuracy", title=title)
    ax.legend(fontsize=8)
    return ax
