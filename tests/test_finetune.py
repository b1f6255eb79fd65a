import pytest
import torch

import sslkit
from sslkit.finetune import classification_metrics, confusion_matrix, labels_per_class


def test_metrics_match_a_hand_count():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    scores = torch.eye(3)[torch.tensor([0, 0, 1, 1, 1, 2])] * 5  # one class-0 image called class 1
    m = classification_metrics(y, scores, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["recall_a"] == pytest.approx(2 / 3) and m["precision_b"] == pytest.approx(2 / 3)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 2 * (2 / 3) * 1 / (2 / 3 + 1), 1.0]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert confusion_matrix(y, scores, 3).tolist() == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]


def test_auroc_is_one_for_perfect_ranking_and_half_for_constant_scores():
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert classification_metrics(y, torch.eye(3)[y], ["a", "b", "c"])["auroc_ovr"] == 1.0
    assert classification_metrics(y, torch.zeros(6, 3), ["a", "b", "c"])["auroc_ovr"] == 0.5


def test_shape_errors_and_too_many_labels_are_clear():
    with pytest.raises(ValueError, match=r"scores must be \(N, C\) = \(2, 3\)"):
        classification_metrics(torch.tensor([0, 1]), torch.zeros(2, 2), ["a", "b", "c"])
    data = sslkit.load_dataset("shapes", "train", n=100, seed=0)  # 10 per class
    subsets = labels_per_class(data, counts=(1, 5), seeds=(0, 1))
    assert len(subsets[(5, 1)]) == 50 and subsets[(1, 0)].class_counts() == {c: 1 for c in data.classes}
    with pytest.raises(ValueError, match="smallest class .* has 10"):
        labels_per_class(data, counts=(1, 50))
