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


# ----------------------------------------------------------------------------------------------
# fine-tuning, the linear classifier with probabilities, pseudo-labels, the curve

import dataclasses  # noqa: E402

from sslkit.evaluate import linear_probe  # noqa: E402
from sslkit.finetune import (FineTune, class_scores, curve_metrics, fine_tune, fit_linear, format_curve,  # noqa: E402
                             predict, pseudo_label, steps_config)
from sslkit.train import make_optimizer, train  # noqa: E402


def _blobs(n_per_class=40, dim=8, num_classes=4, seed=0, spread=1.5):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * 2
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


def test_fit_linear_agrees_with_the_kits_linear_probe():
    """The same objective through scikit-learn and through L-BFGS in torch: the same classifier."""
    x, y = _blobs(seed=0)
    x_test, y_test = _blobs(seed=1)
    clf = fit_linear(x, y, weight_decay=1e-2)
    ours = (class_scores(clf, x_test, 4).argmax(1) == y_test).float().mean().item()
    assert ours == pytest.approx(linear_probe(x, y, x_test, y_test, weight_decay=1e-2), abs=0.02)
    probs = class_scores(clf, x_test, 4)
    assert probs.shape == (len(x_test), 4) and torch.allclose(probs.sum(1), torch.ones(len(x_test)), atol=1e-5)


def test_init_head_reproduces_the_linear_probe_on_raw_features():
    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("resnet_tiny", width=4)
    data = sslkit.load_dataset("shapes", "train", n=60, seed=0)
    features = sslkit.extract_features(backbone, data)
    clf = fit_linear(features, data.labels)
    model = FineTune(backbone, 10).init_head(clf)
    logits = predict(model, data)  # (N, C): head(backbone(x)) in eval mode
    expected = torch.from_numpy(clf.decision_function(features.numpy())).float()
    assert torch.allclose(logits, expected, atol=1e-3)


def test_the_backbone_learns_at_a_fraction_of_the_heads_rate():
    """AdamW's first step moves every weight by about lr (sign of the gradient): the backbone by lr * scale."""
    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("resnet_tiny", width=4)
    model = FineTune(backbone, 10, backbone_lr_scale=0.1, max_shift=0)
    cfg = sslkit.make_config("smoke", lr=1e-2, weight_decay=0.0, num_epochs=1, batch_size=20, warmup_epochs=0.0,
                             time_budget_s=None, lr_schedule="constant")
    assert [g["lr_scale"] for g in make_optimizer(model, cfg).param_groups] == [0.1, 1.0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, sslkit.load_dataset("shapes", "train", n=20, seed=0), cfg, progress=False)
    moved = {k: (v - before[k]).abs().max().item() for k, v in model.state_dict().items() if v.is_floating_point()
             and "running" not in k}
    assert moved["head.weight"] == pytest.approx(1e-2, rel=0.05)
    assert moved["backbone.stem.0.weight"] == pytest.approx(1e-3, rel=0.05)


def test_fine_tune_trains_a_copy_and_checks_its_input():
    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("resnet_tiny", width=4)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    data = sslkit.load_dataset("shapes", "train", n=40, seed=0)
    cfg = sslkit.make_config("smoke", batch_size=16, time_budget_s=None)
    model, history = fine_tune(backbone, data, cfg, steps=4)
    assert history.steps == 4 and predict(model, data).shape == (40, 10)
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items()), "the original is untouched"
    with pytest.raises(ValueError, match="unknown head_init 'zeros'"):
        fine_tune(backbone, data, cfg, steps=1, head_init="zeros")
    with pytest.raises(ValueError, match="fine-tuning needs labels"):
        fine_tune(backbone, sslkit.load_dataset("shapes", "unlabeled", n=8), cfg, steps=1)


def test_a_fine_tuning_runs_schedule_follows_its_steps_not_the_clock():
    # a slow step (here: a pause after the first) must not change the learning rates of the later ones while the
    # time budget, a cap, is not reached: the same seed gives the same model however fast the machine is
    import time

    data = sslkit.load_dataset("shapes", "train", n=40, seed=0)
    cfg = sslkit.make_config("smoke", batch_size=16, time_budget_s=5.0)

    def run(pause):
        torch.manual_seed(0)
        backbone, _ = sslkit.make_backbone("resnet_tiny", width=4)

        def callback(history):
            if history.steps == 1:
                time.sleep(pause)

        return fine_tune(backbone, data, cfg, steps=8, callback=callback)

    (fast, h_fast), (slow, h_slow) = run(0.0), run(1.5)  # 30% of the budget gone at step 1 of 8
    assert h_fast.steps == h_slow.steps == 8 and not h_slow.stopped_early
    assert h_fast.lrs == h_slow.lrs
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), slow.state_dict().values()))


def test_a_time_limit_stops_training_and_says_so():
    import time

    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("resnet_tiny", width=4)
    data = sslkit.load_dataset("shapes", "train", n=40, seed=0)
    cfg = sslkit.make_config("smoke", batch_size=16, time_budget_s=0.5)
    model, history = fine_tune(backbone, data, cfg, steps=50, callback=lambda h: time.sleep(0.2))
    assert 1 <= history.steps < 50 and history.stopped_early and history.stop_reason == "time limit"
    assert "time limit of 0.5 s reached" in history.message and "raise the limit" in history.message


def test_steps_config_gives_about_the_asked_number_of_steps():
    cfg = sslkit.make_config("smoke", batch_size=64)
    for n, steps in [(10, 150), (100, 150), (5000, 300)]:
        c = steps_config(cfg, n, steps)
        per_epoch = n // min(c.batch_size, n)
        assert steps <= c.num_epochs * per_epoch < steps + per_epoch
    with pytest.raises(ValueError, match="at least one optimizer step"):
        steps_config(cfg, 10, 0)


def test_pseudo_labels_are_confident_capped_per_class_and_checked():
    x, y = _blobs(n_per_class=50, seed=0, spread=0.5)
    labeled = torch.cat([torch.nonzero(y == k)[:2].squeeze(1) for k in range(4)])
    result = pseudo_label(x[labeled], y[labeled], x, threshold=0.8, per_class=10, rounds=2)
    assert len(result.added_per_round) == 2 and all(a <= 40 for a in result.added_per_round)
    assert torch.bincount(result.labels, minlength=4).max() <= 10
    assert (result.labels == y[result.indices]).float().mean() > 0.9
    with pytest.raises(ValueError, match="threshold=1.5 is a probability"):
        pseudo_label(x[labeled], y[labeled], x, threshold=1.5)
    with pytest.raises(ValueError, match="must agree"):
        pseudo_label(x[labeled], y[labeled], x[:, :3])


def test_curve_metrics_and_table():
    curve = {"ssl_finetune": {1: [0.2, 0.3, 0.4], "all": [0.9]}, "scratch": {1: [0.1, 0.1, 0.1], "all": [0.8]}}
    m = curve_metrics(curve)
    assert m["acc_ssl_finetune_1"] == pytest.approx(0.3) and m["acc_ssl_finetune_1_std"] == pytest.approx(0.1)
    assert "acc_ssl_finetune_all_std" not in m and m["acc_scratch_all"] == 0.8
    table = format_curve(curve).splitlines()
    assert table[0].split() == ["labels", "per", "class", "1", "all"] and "0.300 ± 0.100" in table[2]
