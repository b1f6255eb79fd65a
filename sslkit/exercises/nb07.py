"""Exercises of notebook 07 (fine-tuning and label efficiency)."""

from __future__ import annotations

import random

import numpy as np
import torch

from . import Exercise, Hint, Mistake, as_indices, register


# ---------------------------------------------------------------------------------------------
# A labeled subset with n images of each class, drawn with a seed (the points of a label-efficiency curve)


def label_subset_reference(labels, n, seed, num_classes):
    """The kit's draw (``ImageData.per_class``, what ``sslkit.labels.labels_per_class`` uses): the indices into
    ``labels`` (N,) of ``n`` images of each of the ``num_classes`` classes, sorted; ValueError when a class has
    fewer than ``n``."""
    from sslkit.data import ImageData

    labels = torch.as_tensor(labels).long()
    index = torch.arange(len(labels))
    # each "image" is one pixel holding its own index (3 bytes), so the subset tells which images it drew
    pixels = torch.stack([index % 256, index // 256 % 256, index // 65536 % 256], dim=1).to(torch.uint8)
    data = ImageData(pixels[:, :, None, None], labels, [str(k) for k in range(num_classes)], "labels", "train")
    picked = data.per_class(n, seed=seed).images[:, :, 0, 0].long()  # (n * num_classes, 3)
    return picked[:, 0] + 256 * picked[:, 1] + 65536 * picked[:, 2]


def _labels(sizes, g):
    """(N,) labels with sizes[k] images of class k, in a random order."""
    labels = torch.cat([torch.full((s,), k) for k, s in enumerate(sizes)])
    return labels[torch.randperm(len(labels), generator=g)]


def _random_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def _same_states(a, b):
    return torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def _as_indices(got, what):
    return as_indices(got, "indices into labels (positions of the chosen images)", what)


def _label_subset_test(answer):
    g = torch.Generator().manual_seed(0)
    sizes, n = (12, 20, 7, 15), 3
    labels = _labels(sizes, g)
    c = len(sizes)
    what = f"labels of {len(labels)} images in {c} classes, n={n}"

    before = _random_states()
    got = _as_indices(answer(labels, n, 0, c), what)
    if not _same_states(before, _random_states()):
        raise Hint("your function changed the global random state (torch.manual_seed, np.random.seed, or a draw "
                   "without a generator): the notebook's later draws would change with it. Draw with a generator of your own, "
                   "g = torch.Generator().manual_seed(seed), passed as torch.randperm(..., generator=g)")
    if len(got) and (got.min() < 0 or got.max() >= len(labels)):
        raise Hint(f"your indices go from {got.min().item()} to {got.max().item()}; they must be positions in "
                   f"labels, 0 to {len(labels) - 1}")
    if len(set(got.tolist())) != len(got):
        raise Hint("an image is chosen twice: draw without replacement, torch.randperm(len(idx), generator=g)[:n] "
                   "of the class's indices idx, not torch.randint")
    counts = torch.bincount(labels[got], minlength=c).tolist()
    if sum(counts) == n and n * c != n:
        raise Hint(f"you drew {n} images in total (counts per class {counts}); draw n images of each class: "
                   f"{n * c} here, {n} of every class")
    if counts != [n] * c:
        raise Hint(f"labels[your indices] should hold {n} images of each class, it holds {counts} per class; for "
                   f"each class k take idx = (labels == k).nonzero().squeeze(1) and keep n of those indices")

    again = _as_indices(answer(labels, n, 0, c), what)
    if sorted(again.tolist()) != sorted(got.tolist()):
        raise Hint("the same seed gave two different draws: the subset must be reproducible; draw with "
                   "g = torch.Generator().manual_seed(seed)")
    draws = [sorted(_as_indices(answer(labels, n, seed, c), what).tolist()) for seed in (1, 2, 3)]
    if all(d == sorted(got.tolist()) for d in draws):
        first = sorted(i for k in range(c) for i in (labels == k).nonzero().squeeze(1)[:n].tolist())
        if draws[0] == first:
            raise Hint("you take the first n images of each class: draw them at random (a random permutation of "
                       "each class's indices, from a generator seeded with seed), so that each seed gives another "
                       "subset and the curve's spread over seeds means something")
        raise Hint("every seed gives the same images: seed your generator with the seed argument "
                   "(torch.Generator().manual_seed(seed)), not with a constant")
    # every image of a class can be drawn: over many seeds each one is picked at least once
    small = _labels((5, 6, 5), g)
    seen = set()
    for seed in range(40):
        seen.update(_as_indices(answer(small, 2, seed, 3), "labels of 16 images in 3 classes, n=2").tolist())
    if len(seen) != len(small):
        raise Hint(f"over 40 seeds only {len(seen)} of the {len(small)} images were ever chosen: every image of a "
                   f"class must have the same chance; permute all of the class's indices, then keep the first n")

    # edge cases: a class with exactly n images is enough; a class with fewer, or none, is an error
    exact = _labels((3, 8, 5), g)
    try:
        got = _as_indices(answer(exact, 3, 0, 3), "a class with exactly n=3 images")
    except ValueError as e:
        raise Hint(f"class 0 has exactly n=3 images, which is enough, but your function raised ValueError ({e}): "
                   f"fail only when a class has fewer than n") from None
    if torch.bincount(exact[got], minlength=3).tolist() != [3, 3, 3]:
        raise Hint("class 0 has exactly n=3 images: the subset must hold all three, and 3 of each other class")
    for sizes, short, why in (((10, 2, 9), 1, "has only 2 images"), ((10, 9, 0), 2, "has no image at all")):
        labels = _labels(sizes, g)
        try:
            got = answer(labels, 3, 0, len(sizes))
        except ValueError:
            continue
        except Exception as e:  # noqa: BLE001 - the learner's own error, named in the hint
            raise Hint(f"class {short} {why}, fewer than n=3: raise a ValueError that says which class and how many "
                       f"images it has (your function raised {type(e).__name__}: {e})") from None
        counts = torch.bincount(labels[_as_indices(got, why)], minlength=len(sizes)).tolist()
        extra = (" (loop over range(num_classes): a class with no image does not appear in labels.unique())"
                 if sizes[short] == 0 else "")
        raise Hint(f"class {short} {why}, fewer than n=3, and your function returned a subset anyway (counts "
                   f"{counts}): raise a ValueError that says which class and how many images it has, so that a "
                   f"curve never compares subsets of different sizes{extra}")


def _subset_factory(per_class=True, random_draw=True, fixed_seed=None, check=True, global_rng=False):
    def wrong(labels, n, seed, num_classes):
        g = torch.Generator().manual_seed(seed if fixed_seed is None else fixed_seed)
        if global_rng:
            torch.manual_seed(seed)
        draw = (lambda m: torch.randperm(m)) if global_rng else (lambda m: torch.randperm(m, generator=g))
        if not per_class:
            return draw(len(labels))[:n]
        picks = []
        for k in range(num_classes):
            idx = (labels == k).nonzero().squeeze(1)
            if check and len(idx) < n:
                raise ValueError(f"class {k} has {len(idx)} images, fewer than {n}")
            picks.append(idx[draw(len(idx))[:n]] if random_draw else idx[:n])
        return torch.cat(picks)

    return wrong


def _subset_not_returned(labels, n, seed, num_classes):
    """The right subset computed, but no return statement: the function returns None."""
    _subset_factory()(labels, n, seed, num_classes)


register(Exercise(
    name="label_subset", notebook="07_finetune", answer_name="my_label_subset", difficulty=2,
    idea="a labeled subset for a label-efficiency curve: n random images of each class, reproducible from a seed",
    test=_label_subset_test, reference=label_subset_reference,
    mistakes=(
        Mistake("n images in total instead of n per class", _subset_factory(per_class=False), "in total"),
        Mistake("the first n images of each class (not random)", _subset_factory(random_draw=False),
                "first n images"),
        Mistake("the same images for every seed", _subset_factory(fixed_seed=0), "every seed gives the same"),
        Mistake("no error when a class has fewer than n images", _subset_factory(check=False),
                "returned a subset anyway"),
        Mistake("torch.manual_seed: the global random state changed", _subset_factory(global_rng=True),
                "global random state"),
        Mistake("the subset computed but not returned (None)", _subset_not_returned, "not NoneType"),
    ),
))


# ---------------------------------------------------------------------------------------------
# Macro-F1: the F1 score of each class, averaged with the same weight for every class


def macro_f1_reference(labels, predictions, num_classes):
    """sklearn's macro-F1 over the classes 0..num_classes-1 (``classification_metrics``' ``macro_f1``): a class
    never predicted, or never present, has F1 0 and counts in the mean."""
    from sklearn.metrics import f1_score

    return float(f1_score(torch.as_tensor(labels).numpy(), torch.as_tensor(predictions).numpy(),
                          labels=list(range(num_classes)), average="macro", zero_division=0))


def _per_class(labels, predictions, c):
    """(tp, fp, fn) per class as float tensors."""
    k = torch.arange(c)[:, None]
    tp = ((predictions == k) & (labels == k)).sum(1).float()
    fp = ((predictions == k) & (labels != k)).sum(1).float()
    fn = ((predictions != k) & (labels == k)).sum(1).float()
    return tp, fp, fn


def _divide(a, b):
    return torch.where(b > 0, a / b.clamp_min(1e-12), torch.zeros_like(a))


def _f1_variants(labels, predictions, c):
    """The values of the common wrong formulations, by name."""
    tp, fp, fn = _per_class(labels, predictions, c)
    precision, recall = _divide(tp, tp + fp), _divide(tp, tp + fn)
    f1 = _divide(2 * precision * recall, precision + recall)
    support = torch.bincount(labels, minlength=c).float()
    predicted = torch.bincount(predictions, minlength=c) > 0
    mp, mr = precision.mean(), recall.mean()
    return {
        "accuracy": (labels == predictions).float().mean().item(),
        "unseen": f1[(support > 0) | predicted].mean().item(),  # (before "dropped": the same value where both are)
        "dropped": f1[predicted].mean().item(),
        "absent": f1[support > 0].mean().item(),
        "weighted": (f1 * support).sum().item() / support.sum().item(),
        "arithmetic": ((precision + recall) / 2).mean().item(),
        "of_means": (2 * mp * mr / (mp + mr)).item() if mp + mr > 0 else 0.0,
    }


F1_HINTS = {
    "accuracy": "that is the accuracy (micro-F1, with one label per image): compute precision, recall and F1 for "
                "each class, then average the classes with the same weight (macro)",
    "dropped": "a class that is never predicted was dropped from the mean: its precision is 0/0 and its F1 is 0 "
               "(sklearn's zero_division=0), and it still counts; divide by num_classes",
    "unseen": "a class that is neither in the labels nor predicted was left out of the mean (as sklearn's f1_score "
              "does without labels=): macro-F1 is the mean of all num_classes scores, that class's F1 being 0; "
              "loop over range(num_classes) and divide by num_classes",
    "absent": "a class absent from the labels (but predicted) was dropped from the mean, as a loop over "
              "labels.unique() does: its recall is 0/0 and its F1 is 0 (sklearn's zero_division=0), and it still "
              "counts; loop over range(num_classes) and divide by num_classes",
    "weighted": "your mean is weighted by each class's number of images (sklearn's average='weighted'): macro-F1 "
                "gives every class the same weight",
    "arithmetic": "per class you averaged precision and recall as (P + R) / 2: F1 is their harmonic mean, "
                  "2PR / (P + R)",
    "of_means": "you took the F1 of the averaged precision and recall: macro-F1 is the mean of the per-class F1 "
                "scores",
}


def _f1_cases(g):
    # 5 classes of unequal size; class 4 is never predicted, class 0 is over-predicted
    labels = torch.tensor([0] * 20 + [1] * 12 + [2] * 8 + [3] * 6 + [4] * 4)
    predictions = labels.clone()
    predictions[labels == 4] = torch.tensor([0, 0, 1, 3])
    wrong = torch.randperm(46, generator=g)[:10]
    predictions[wrong] = torch.randint(0, 4, (10,), generator=g)
    yield labels, predictions, 5, "5 classes, class 4 never predicted"
    for c, n in ((10, 200), (3, 30), (2, 17)):  # random ones, mostly right
        labels = torch.randint(0, c, (n,), generator=g)
        noise = torch.rand(n, generator=g) < 0.3
        yield labels, torch.where(noise, torch.randint(0, c, (n,), generator=g), labels), c, f"{c} classes, N={n}"
    labels = torch.randint(0, 4, (24,), generator=g)
    yield labels, labels.clone(), 4, "every prediction right"
    # classes of different sizes and different F1 (0.75 and 2/3), so that dropping the absent class 2 (0.708) and
    # weighting by the classes' sizes (0.722) give different values
    yield torch.tensor([0, 0, 0, 0, 1, 1]), torch.tensor([0, 0, 0, 2, 1, 0]), 3, \
        "class 2 predicted but absent from the labels"
    # a class neither in the labels nor predicted (4) still counts, with F1 0: a mean over the classes that occur
    # (sklearn's f1_score without labels=) gives 0.367 here, the macro-F1 over num_classes=5 0.293 (class 2 is never
    # predicted and class 3 never in the labels, so that dropping either gives yet other values)
    yield torch.tensor([0, 0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 3, 1, 1, 1, 0]), 5, \
        "class 4 neither in the labels nor predicted"


def _macro_f1_test(answer):
    g = torch.Generator().manual_seed(0)
    for labels, predictions, c, what in _f1_cases(g):
        got = answer(labels.clone(), predictions.clone(), c)
        if isinstance(got, torch.Tensor):
            if got.numel() != 1:
                raise Hint(f"return one number (the mean over the classes), not a tensor of shape {tuple(got.shape)}")
            got = got.item()
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise Hint(f"return one number, not {type(got).__name__}") from None
        want = macro_f1_reference(labels, predictions, c)
        if abs(got - want) <= 1e-5:
            continue
        if got != got:  # nan
            raise Hint(f"your macro-F1 is nan ({what}): a class never predicted has precision 0/0 and a class absent "
                       f"from the labels recall 0/0; count those as 0 (sklearn's zero_division=0), and its F1 as 0")
        for name, value in _f1_variants(labels, predictions, c).items():
            if abs(got - value) <= 1e-5:
                raise Hint(F1_HINTS[name])
        raise Hint(f"for {what} your macro-F1 is {got:.4f}, sklearn's f1_score(average='macro') {want:.4f}; check "
                   f"precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R) for each class")


def _f1_factory(variant):
    def wrong(labels, predictions, num_classes):
        return _f1_variants(labels, predictions, num_classes)[variant]

    return wrong


def _f1_over_labels_present(labels, predictions, num_classes):
    """A loop over labels.unique(): a class that is predicted but absent from the labels is left out."""
    f1 = []
    for k in labels.unique():
        tp = ((predictions == k) & (labels == k)).sum().item()
        fp = ((predictions == k) & (labels != k)).sum().item()
        fn = ((predictions != k) & (labels == k)).sum().item()
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(f1) / len(f1)


def _f1_nanmean(labels, predictions, num_classes):
    """Precision and recall without a guard for 0/0, then a mean that skips the nan classes."""
    tp, fp, fn = _per_class(labels, predictions, num_classes)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return (2 * precision * recall / (precision + recall)).nanmean().item()


register(Exercise(
    name="macro_f1", notebook="07_finetune", answer_name="my_macro_f1", difficulty=2,
    idea="macro-F1: the harmonic mean of precision and recall per class, averaged over the classes with equal weight",
    test=_macro_f1_test, reference=macro_f1_reference,
    mistakes=(
        Mistake("the accuracy (micro-F1) instead of macro", _f1_factory("accuracy"), "that is the accuracy"),
        Mistake("a class absent from the predictions dropped from the mean", _f1_factory("dropped"),
                "never predicted was dropped"),
        Mistake("precision 0/0 left as nan and skipped by nanmean", _f1_nanmean, "never predicted was dropped"),
        Mistake("a loop over labels.unique(): a class predicted but absent from the labels dropped",
                _f1_over_labels_present, "absent from the labels (but predicted) was dropped"),
        Mistake("weighted by the classes' sizes", _f1_factory("weighted"), "weighted by each class"),
        Mistake("(P + R) / 2 instead of the harmonic mean", _f1_factory("arithmetic"), "harmonic mean"),
        Mistake("the F1 of the macro precision and recall", _f1_factory("of_means"), "F1 of the averaged"),
    ),
))
