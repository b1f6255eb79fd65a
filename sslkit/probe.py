"""The linear probe: a linear classifier on frozen features, the kit's one solver for it.

The features are standardised with the training rows' mean and std, then a multinomial logistic
regression minimises mean cross-entropy + ``weight_decay``/2 * ||W||^2 (the bias unpenalised) by
full-batch L-BFGS: the objective of scikit-learn's ``LogisticRegression(C=1 / (weight_decay * N))`` on the
standardised features, which ``tests/test_evaluate.py`` and ``tests/test_finetune.py`` use as the oracle.

- ``fit_linear``: the fitted ``LinearClassifier`` (logits, class probabilities, predictions, and the
  classifier as an ``nn.Linear`` on raw features);
- ``linear_probe``: its test accuracy, the number every notebook reports (``sslkit.evaluate``);
- ``linear_head``: the classifier written into a torch layer (a fine-tuning head, a deployed model);
- ``class_scores``: probabilities with a column for every class.

>>> x = torch.tensor([[0.0], [0.1], [1.0], [1.1]]); y = torch.tensor([0, 0, 1, 1])
>>> fit_linear(x, y).predict(x).tolist()
[0, 0, 1, 1]
>>> linear_probe(x, y, torch.tensor([[0.2], [0.9]]), torch.tensor([0, 1]))
1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import torch_threads


@dataclass
class LinearClassifier:
    """A linear classifier on standardised features: ``logits = ((f - mean) / std) @ weight.T + bias``.

    ``mean``, ``std``: (D,) the training rows'; ``weight``: (C, D); ``bias``: (C,). All on the CPU.
    """

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Scores (N, C) of features (N, D) (raw, as given to ``fit_linear``), on the CPU."""
        if features.ndim != 2 or features.shape[1] != self.weight.shape[1]:
            raise ValueError(f"features {tuple(features.shape)}: the classifier was fitted on (N, "
                             f"{self.weight.shape[1]}) features; give features of the same backbone")
        x = (features.detach().float().cpu() - self.mean) / self.std
        return x @ self.weight.T + self.bias

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C), each row summing to 1 (softmax of the logits)."""
        return self.logits(features).softmax(1)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """The most likely class (N,) of each row."""
        return self.logits(features).argmax(1)

    @torch.no_grad()
    def as_linear(self, head: nn.Linear | None = None) -> nn.Linear:
        """The classifier as an ``nn.Linear`` on raw features (written into ``head`` when given).

        The standardisation folds into the layer: ``W / std`` and ``b - (W / std) @ mean``. A new
        layer is made like any ``nn.Linear`` (from torch's random state), then overwritten; a given
        ``head`` keeps its device and dtype.
        """
        if head is None:
            head = nn.Linear(self.weight.shape[1], self.num_classes)
        if head.out_features != self.num_classes or head.in_features != self.weight.shape[1]:
            raise ValueError(f"the classifier knows {self.num_classes} classes of {self.weight.shape[1]}-dim "
                             f"features, the head has {head.out_features} outputs and {head.in_features} inputs; "
                             f"fit it with num_classes={head.out_features} on features of the head's backbone")
        w = self.weight.double() / self.std.double()  # (C, D), in float64: b cancels large terms when |mean| >> std
        head.weight.copy_(w.to(head.weight))
        head.bias.copy_((self.bias.double() - w @ self.mean.double()).to(head.bias))
        return head


def _check(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None) -> int:
    if features.ndim != 2 or labels.ndim != 1:
        raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} must be (N, D) and (N,)")
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels; give one label per row")
    if not len(labels):
        raise ValueError("no rows to fit on; give at least one labeled feature row")
    if (labels < 0).any():
        raise ValueError("fit_linear needs labels, but some are -1 (unlabeled); pass only the labeled rows")
    if not torch.isfinite(features).all():
        raise ValueError("some features are NaN or Inf; the backbone has diverged (see sslkit.evaluate.predict)")
    top = int(labels.max()) + 1
    if num_classes is not None and top > num_classes:
        raise ValueError(f"a label is {top - 1} but num_classes={num_classes}; give num_classes > every label")
    return num_classes or top


class _Product(torch.autograd.Function):
    """``x @ weight``, whose backward computes the weight's gradient ``x.T @ grad`` from a contiguous copy of ``x.T``.

    The same product as autograd's (the same numbers, checked by tests/test_evaluate.py), but autograd passes the
    transposed view, which some CPUs' matrix kernels take a slow path for: 7 times slower per L-BFGS step on an AVX2
    host for the 5,000 x 3,072 raw pixels of the lesson profile."""

    @staticmethod
    def forward(ctx, x, xt, weight):
        ctx.save_for_backward(xt)
        return x @ weight

    @staticmethod
    def backward(ctx, grad):
        (xt,) = ctx.saved_tensors
        return None, None, xt @ grad


def fit_linear(features: torch.Tensor, labels: torch.Tensor, weight_decay: float = 1e-3, max_iter: int = 300,
               num_classes: int | None = None) -> LinearClassifier:
    """The linear probe on frozen features (N, D) with labels (N,): a fitted ``LinearClassifier``.

    Standardises with the rows' mean and std (std 1 for a single row), then minimises mean cross-entropy +
    ``weight_decay``/2 * ||W||^2 by full-batch L-BFGS with a strong-Wolfe line search, from zero
    weights, on the CPU with one thread: deterministic, and seconds even for 50,000 x 512.

    Args:
        weight_decay: L2 penalty on the weights (not the bias).
        max_iter: L-BFGS iterations.
        num_classes: the classifier's outputs (None: the largest label + 1). A class absent from
            ``labels`` gets a column too, with probability near 0.
    """
    num_classes = _check(features, labels, num_classes)
    x = features.detach().float().cpu()
    y = labels.long().cpu()
    mean = x.mean(0)
    # the sample std (N - 1, as sklearn's oracle in the tests is set up); one row has none, so it is left unscaled
    std = x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones_like(mean)
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)  # (D, C)
    bias = torch.zeros(num_classes, requires_grad=True)  # (C,)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    xt = x.T.contiguous()  # (D, N), for the weight's gradient (_Product)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(_Product.apply(x, xt, weight) + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    # thousands of small ops: threads only add overhead (and stall on a busy machine)
    with torch_threads(1), torch.enable_grad():
        optimizer.step(closure)
    return LinearClassifier(mean, std, weight.detach().T, bias.detach())  # (C, D), a view: logits use (D, C) as fitted


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, weight_decay: float = 1e-3, max_iter: int = 300) -> float:
    """Test accuracy of ``fit_linear`` on frozen features: the field's linear-probe number.

    Args:
        train_features: (N, D). train_labels: (N,). test_features: (M, D). test_labels: (M,).
        weight_decay: L2 penalty on the weights (not the bias).
        max_iter: L-BFGS iterations.
    """
    if not len(test_labels) or not len(test_features):
        raise ValueError(f"the test split is empty: test_features {tuple(test_features.shape)}, test_labels "
                         f"{tuple(test_labels.shape)}; give the features and labels of at least one test image "
                         f"(e.g. extract_features(backbone, load_dataset(..., 'test')))")
    if not len(train_labels):
        raise ValueError(f"the training split is empty: train_labels {tuple(train_labels.shape)}; give the "
                         f"features and labels of at least one labeled image")
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    classifier = fit_linear(train_features, train_labels, weight_decay, max_iter, num_classes)
    return (classifier.predict(test_features) == test_labels.cpu()).float().mean().item()


def linear_head(classifier: LinearClassifier, head: nn.Linear | None = None) -> nn.Linear:
    """A ``fit_linear`` classifier as an ``nn.Linear`` on the raw features (written into ``head`` when given).

    ``fit_linear`` standardises the features, ``(f - mean) / std``, then applies ``W, b``; the same
    map on raw features is ``W / std`` and ``b - (W / std) @ mean`` (``LinearClassifier.as_linear``).

    >>> x = torch.tensor([[0.0, 5.0], [0.2, 6.0], [1.0, 9.0], [1.2, 8.0]])
    >>> clf = fit_linear(x, torch.tensor([0, 0, 1, 1]))
    >>> torch.allclose(linear_head(clf)(x), clf.logits(x), atol=1e-5)
    True
    """
    return classifier.as_linear(head)


def class_scores(classifier: LinearClassifier, features: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Probabilities (N, num_classes) from a ``fit_linear`` classifier, with a column for every class.

    (A classifier fitted without ``num_classes`` on labels that miss the last classes has fewer
    columns; the missing ones are 0.)
    """
    if classifier.num_classes > num_classes:
        raise ValueError(f"the classifier knows {classifier.num_classes} classes, more than num_classes="
                         f"{num_classes}; give the dataset's number of classes")
    probs = classifier.predict_proba(features)  # (N, C)
    return F.pad(probs, (0, num_classes - classifier.num_classes))
