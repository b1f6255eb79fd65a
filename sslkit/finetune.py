"""Label efficiency: how far a few labels go on top of self-supervised features.

The practitioners' metrics for a classifier (``classification_metrics``: accuracy, macro-F1,
per-class precision and recall, one-vs-rest AUC-ROC, the confusion matrix), through scikit-learn,
and the labeled subsets a label-efficiency curve needs (``labels_per_class``).

>>> import torch
>>> y = torch.tensor([0, 0, 1, 1])
>>> scores = torch.tensor([[2.0, 0.0], [1.0, 0.5], [0.0, 1.0], [0.8, 0.2]])
>>> m = classification_metrics(y, scores, ["cat", "dog"])
>>> m["accuracy"], m["recall_dog"], m["auroc_ovr"]
(0.75, 0.5, 0.75)
"""

from __future__ import annotations

import torch

from .data import ImageData


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
