"""Label efficiency: the labeled subsets of a curve, what a classifier scores on them, and the curve.

How far a few labels go on top of self-supervised features is measured as a curve: accuracy against
labels per class, from 1 to all, on several random draws of the labeled images (``labels_per_class``),
one line per protocol (kNN, linear probe, fine-tuning from ``sslkit.finetune``), each point the mean
and spread over the draws (``curve_metrics``, ``format_curve``, ``plot_curve``). Beside accuracy, what
practitioners report about a classifier (``classification_metrics``: accuracy, macro-F1, per-class
precision and recall, one-vs-rest AUC-ROC; ``confusion_matrix``).

>>> import torch
>>> y = torch.tensor([0, 0, 1, 1])
>>> scores = torch.tensor([[2.0, 0.0], [1.0, 0.5], [0.0, 1.0], [0.8, 0.2]])
>>> m = classification_metrics(y, scores, ["cat", "dog"])
>>> m["accuracy"], m["recall_dog"], m["auroc_ovr"]
(0.75, 0.5, 0.75)
"""

from __future__ import annotations

import statistics

import torch

from .data import ImageData

# ----------------------------------------------------------------------------------------------
# the labeled subsets


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
# metrics


def classification_metrics(labels: torch.Tensor, scores: torch.Tensor, classes: list[str]) -> dict:
    """Flat metrics for a results file, from true labels (N,) and class scores (N, C).

    ``scores`` may be logits or probabilities: accuracy, F1, precision and recall use the argmax;
    AUC-ROC uses the probabilities (the softmax of logits). ``auroc_ovr`` is one-vs-rest, macro-averaged
    over the classes present in ``labels``: the mean over those classes k of ``roc_auc_score(labels == k,
    probs[:, k])``. Where every class is present that is sklearn's ``roc_auc_score(..., multi_class="ovr",
    average="macro")`` (and with two classes, the AUC of class 1's score); a class absent from a small test
    split has no AUC of its own and is left out, so the metric stays defined. Needs at least two classes
    present. Per-class values are named ``precision_<class>`` and ``recall_<class>``.

    >>> m = classification_metrics(torch.tensor([0, 1, 0, 1]), torch.tensor([[2., 0, 0], [0, 2, 0], [1, 0, 0],
    ...                                                                         [1, 2, 0]]), ["a", "b", "c"])
    >>> m["auroc_ovr"], m["recall_c"]  # "c" is absent: the mean of a's AUC and b's
    (1.0, 0.0)
    """
    from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

    if scores.ndim != 2 or len(scores) != len(labels) or scores.shape[1] != len(classes):
        raise ValueError(f"scores must be (N, C) = ({len(labels)}, {len(classes)}) for {len(labels)} labels and "
                         f"{len(classes)} classes; got {tuple(scores.shape)}")
    y = labels.cpu().numpy()
    if len(y) and not 0 <= y.min() <= y.max() < len(classes):
        raise ValueError(f"labels must be class indices 0..{len(classes) - 1} for {len(classes)} classes; got "
                         f"{y.min()}..{y.max()} (-1 marks unlabeled images: pass only labeled test images)")
    present = sorted(set(y.tolist()))
    if len(present) < 2:
        raise ValueError(f"AUC-ROC needs test images of at least two classes, but every label is "
                         f"{', '.join(classes[c] for c in present) or 'missing (no labels)'}; evaluate on a test "
                         f"split with several classes (e.g. load_dataset(..., 'test') or data.per_class(n))")
    probs = scores.float().softmax(dim=1) if (scores.min() < 0 or (scores.sum(1) - 1).abs().max() > 1e-4) \
        else scores.float()
    pred = probs.argmax(1).cpu().numpy()
    k = list(range(len(classes)))
    precision, recall, _, _ = precision_recall_fscore_support(y, pred, labels=k, zero_division=0)
    out = {"accuracy": float((pred == y).mean()),
           "macro_f1": float(f1_score(y, pred, labels=k, average="macro", zero_division=0))}
    p = probs.cpu().numpy()
    # one-vs-rest per class present, then the mean: sklearn's multi-class AUC would be NaN with a class absent,
    # and it refuses probabilities whose rows sum to 1 only within 1e-4 (the test above)
    out["auroc_ovr"] = float(sum(roc_auc_score(y == c, p[:, c]) for c in present) / len(present))
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
