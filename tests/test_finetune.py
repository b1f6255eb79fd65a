import pytest
import torch

import sslkit
from sslkit.labels import classification_metrics, confusion_matrix, curve_metrics, format_curve, labels_per_class


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


@pytest.mark.parametrize("num_classes", [2, 4])
def test_auroc_is_sklearns_macro_one_vs_rest_when_every_class_is_present(num_classes):
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    y = torch.arange(num_classes).repeat(10)
    scores = torch.randn(len(y), num_classes, generator=g) + 1.5 * torch.eye(num_classes)[y]
    p = scores.softmax(1).numpy()
    expected = roc_auc_score(y.numpy(), p[:, 1]) if num_classes == 2 else \
        roc_auc_score(y.numpy(), p, multi_class="ovr", average="macro")
    classes = [str(k) for k in range(num_classes)]
    assert classification_metrics(y, scores, classes)["auroc_ovr"] == pytest.approx(expected, abs=1e-9)


def test_auroc_with_a_class_absent_is_the_mean_over_the_present_ones():
    """A small test split may miss a class: the AUC stays a number (sslkit.Results refuses NaN as "diverged")."""
    import warnings

    from sklearn.metrics import roc_auc_score

    y = torch.tensor([0, 1, 1, 0, 1, 0])  # class "c" absent
    scores = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's "only one class present" warning would fail here
        m = classification_metrics(y, scores, ["a", "b", "c"])
    p = scores.softmax(1).numpy()
    expected = (roc_auc_score(y.numpy() == 0, p[:, 0]) + roc_auc_score(y.numpy() == 1, p[:, 1])) / 2
    assert m["auroc_ovr"] == pytest.approx(expected) and m["recall_c"] == 0.0


def test_auroc_takes_probabilities_that_sum_to_one_within_the_kits_tolerance():
    p = torch.softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), 1)
    p = (p * 1e5).round() / 1e5 + torch.tensor([3e-5, 0, 0])  # rounded: rows sum to 1 within 1e-4, not sklearn's
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert 0 <= classification_metrics(y, p, ["a", "b", "c"])["auroc_ovr"] <= 1


def test_metrics_of_a_single_class_or_bad_labels_are_clear_errors():
    with pytest.raises(ValueError, match="at least two classes, but every label is b"):
        classification_metrics(torch.tensor([1, 1, 1]), torch.randn(3, 3), ["a", "b", "c"])
    with pytest.raises(ValueError, match="at least two classes"):
        classification_metrics(torch.zeros(0, dtype=torch.long), torch.zeros(0, 3), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"class indices 0..2 .* got -1..2"):
        classification_metrics(torch.tensor([-1, 0, 2]), torch.randn(3, 3), ["a", "b", "c"])


# ----------------------------------------------------------------------------------------------
# fine-tuning, the linear classifier with probabilities, pseudo-labels, the curve

import dataclasses  # noqa: E402

from sslkit.evaluate import accuracy, linear_probe, predict  # noqa: E402
from sslkit.finetune import (FineTune, class_scores, fine_tune, fit_linear, linear_head, pseudo_label,  # noqa: E402
                             steps_config, vit_layer_id)
from sslkit.train import make_optimizer, train  # noqa: E402


def _blobs(n_per_class=40, dim=8, num_classes=4, seed=0, spread=1.5):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * 2
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


@pytest.mark.parametrize("spread", [0.5, 1.5, 3.0])  # separable, overlapping, mostly noise
def test_fit_linear_matches_sklearn_logistic_regression(spread):
    """scikit-learn's StandardScaler + LogisticRegression(C=1 / (weight_decay * N)) as the oracle: the same
    objective, so the same class probabilities, predictions and test accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = _blobs(n_per_class=80, seed=0, spread=spread)
    x = x * torch.linspace(0.1, 10, x.shape[1]) + 3.0  # features of different scales and offsets
    x, y, x_test, y_test = x[::2], y[::2], x[1::2], y[1::2]  # 40 per class to fit, 40 to test
    wd = 1e-2
    clf = fit_linear(x, y, weight_decay=wd)
    scaler = StandardScaler().fit(x.numpy())
    scaler.scale_ = x.std(0).double().numpy()  # the kit standardises with the sample std (N - 1), as torch.std
    ref = LogisticRegression(C=1 / (wd * len(x)), max_iter=10000, tol=1e-10).fit(scaler.transform(x.numpy()), y.numpy())
    expected = torch.from_numpy(ref.predict_proba(scaler.transform(x_test.numpy()))).float()
    probs = class_scores(clf, x_test, 4)
    assert probs.shape == (len(x_test), 4) and torch.allclose(probs.sum(1), torch.ones(len(x_test)), atol=1e-5)
    torch.testing.assert_close(probs, expected, atol=2e-3, rtol=0)
    assert torch.equal(clf.predict(x_test), probs.argmax(1))
    ours = (probs.argmax(1) == y_test).float().mean().item()
    assert ours == pytest.approx((expected.argmax(1) == y_test).float().mean().item(), abs=1 / len(y_test))
    assert ours == linear_probe(x, y, x_test, y_test, weight_decay=wd)  # the accuracy the notebooks report


def test_a_class_missing_from_the_labels_gets_a_column_near_zero():
    x, y = _blobs(num_classes=4)
    keep = y != 1  # classes 0, 2, 3
    clf = fit_linear(x[keep], y[keep], num_classes=5)
    probs = class_scores(clf, x, 5)
    assert clf.num_classes == 5 and probs[:, [1, 4]].max() < 1e-3
    assert class_scores(fit_linear(x[y < 2], y[y < 2]), x, 4)[:, 2:].abs().max() == 0  # fitted on 2 of 4: zeros
    with pytest.raises(ValueError, match="knows 5 classes, more than num_classes=4"):
        class_scores(clf, x, 4)


def test_linear_head_gives_the_classifiers_logits_on_raw_features():
    x, y = _blobs(num_classes=3, dim=6)
    x = x * torch.tensor([0.01, 1.0, 100.0, 1.0, 5.0, 0.2]) - 50.0  # the standardisation matters
    clf = fit_linear(x, y)
    expected = clf.logits(x)
    scale = expected.abs().max().item()
    with torch.no_grad():
        torch.testing.assert_close(linear_head(clf)(x), expected, atol=1e-3 * scale, rtol=0)  # float32 rounding
        into = torch.nn.Linear(6, 3).double()
        assert linear_head(clf, into) is into and into.weight.dtype == torch.float64  # written in place, dtype kept
        torch.testing.assert_close(into(x.double()).float(), expected, atol=1e-5 * scale, rtol=0)


def test_init_head_reproduces_the_linear_probe_on_raw_features():
    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("resnet_tiny", width=8)
    data = sslkit.load_dataset("shapes", "train", n=60, seed=0)
    features = sslkit.extract_features(backbone, data)
    clf = fit_linear(features, data.labels)
    model = FineTune(backbone, 10).init_head(clf)
    logits = predict(model, data)  # (N, C): head(backbone(x)) in eval mode
    assert torch.allclose(logits, clf.logits(features), atol=1e-3)


def test_the_backbone_learns_at_a_fraction_of_the_heads_rate():
    """AdamW's first step moves every weight by about lr (sign of the gradient): the backbone by lr * scale."""
    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("resnet_tiny", width=8)
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


def test_linear_head_works_for_two_classes_and_needs_a_head_of_their_number():
    """Every class gets its own weight row, so two classes give a head with two outputs (scikit-learn fits one)."""
    x, y = _blobs(num_classes=2)
    clf = fit_linear(x, y)
    assert linear_head(clf).out_features == 2 and torch.equal(linear_head(clf)(x).argmax(1), clf.predict(x))
    x, y = _blobs(num_classes=4)
    with pytest.raises(ValueError, match="knows 4 classes .* the head has 3 outputs"):
        linear_head(fit_linear(x, y), torch.nn.Linear(x.shape[1], 3))


def test_fit_linear_says_what_is_wrong_with_its_input():
    x, y = _blobs(num_classes=3)
    with pytest.raises(ValueError, match="120 feature rows but 119 labels"):
        fit_linear(x, y[:-1])
    with pytest.raises(ValueError, match="some are -1 .* pass only the labeled rows"):
        fit_linear(x, torch.where(y == 2, -1, y))
    with pytest.raises(ValueError, match="a label is 2 but num_classes=2"):
        fit_linear(x, y, num_classes=2)
    with pytest.raises(ValueError, match="fitted on \\(N, 8\\) features"):
        fit_linear(x, y).logits(x[:, :4])


def test_a_frozen_backbone_is_a_linear_probe_trained_by_sgd():
    """backbone_lr_scale=0: only the head moves (weights; BatchNorm statistics still follow the data)."""
    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("resnet_tiny", width=8)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    data = sslkit.load_dataset("shapes", "train", n=40, seed=0)
    cfg = sslkit.make_config("smoke", batch_size=20, time_budget_s=None, weight_decay=0.05)
    model, _ = fine_tune(backbone, data, cfg, steps=4, backbone_lr_scale=0.0, head_init="random")
    head = FineTune(backbone, 10).head
    assert all(torch.equal(v, before[k]) for k, v in model.backbone.state_dict().items() if "running" not in k
               and "num_batches" not in k)
    assert not torch.equal(model.head.weight, head.weight)


# ----------------------------------------------------------------------------------------------
# a ViT: layer-wise learning-rate decay (MAE's fine-tuning)

SMALL_VIT = dict(hidden_dim=32, num_layers=2, num_heads=2)


def test_vit_layer_ids_follow_the_depth():
    backbone, _ = sslkit.make_backbone("vit_tiny", **SMALL_VIT)  # 2 blocks
    ids = {n: vit_layer_id(n, 2) for n, _ in backbone.named_parameters()}
    assert ids["encoder.vit.conv_proj.weight"] == ids["encoder.vit.class_token"] == 0
    assert ids["encoder.vit.encoder.layers.encoder_layer_0.mlp.0.weight"] == 1
    assert ids["encoder.vit.encoder.layers.encoder_layer_1.ln_2.bias"] == 2
    assert ids["encoder.vit.encoder.ln.weight"] == 3


def test_layer_decay_slows_a_vit_block_by_block(monkeypatch):
    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("vit_tiny", **SMALL_VIT)
    model = FineTune(backbone, 10, backbone_lr_scale=0.5, layer_decay=0.5)
    groups = model.param_groups()
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert len(scale) == sum(p.requires_grad for p in model.parameters())
    assert scale[id(model.head.weight)] == 1.0
    assert scale[id(backbone.vit.encoder.ln.weight)] == 0.5  # the top of the backbone
    assert scale[id(backbone.vit.encoder.layers[1].mlp[0].weight)] == 0.25
    assert scale[id(backbone.vit.encoder.layers[0].mlp[0].weight)] == 0.125
    assert scale[id(backbone.vit.conv_proj.weight)] == 0.0625  # the patch embedding moves least
    no_decay = {id(p) for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}
    assert id(model.head.bias) in no_decay and id(backbone.vit.encoder.ln.weight) in no_decay
    assert id(model.head.weight) not in no_decay and id(backbone.vit.conv_proj.weight) not in no_decay
    # the loop applies the scales: after a step, each group's lr is the scheduled lr times its scale
    cfg = sslkit.make_config("smoke", num_epochs=1, batch_size=8, time_budget_s=None, lr=1e-3,
                             lr_schedule="constant")
    data = sslkit.load_dataset("shapes", "train", n=8, seed=0)
    captured, real = {}, sslkit.train.make_optimizer
    monkeypatch.setattr(sslkit.train, "make_optimizer", lambda m, c: captured.setdefault("opt", real(m, c)))
    train(model, data, cfg, progress=False)
    assert sorted({round(g["lr"] / 1e-3, 6) for g in captured["opt"].param_groups}) == [0.0625, 0.125, 0.25, 0.5, 1.0]
    plain = FineTune(sslkit.make_backbone("vit_tiny", **SMALL_VIT)[0], 10, backbone_lr_scale=1.0, layer_decay=1.0)
    assert {g["lr_scale"] for g in plain.param_groups()} == {1.0}  # from scratch: one rate
    with pytest.raises(ValueError, match=r"layer_decay=0 must be in \(0, 1\]"):
        FineTune(backbone, 10, layer_decay=0)
    with pytest.raises(ValueError, match="layer_decay slows a ViT block by block, but the backbone is a SmallResNet"):
        FineTune(sslkit.make_backbone("resnet_tiny", width=8)[0], 10, layer_decay=0.75)


def test_fine_tuning_a_vit_with_layer_decay_trains_every_block_and_scores_it():
    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("vit_tiny", pool="mean", **SMALL_VIT)
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    labeled = sslkit.load_dataset("shapes", "train", n=40, seed=0)
    test = sslkit.load_dataset("shapes", "test", n=30, seed=0)
    cfg = sslkit.make_config("smoke", batch_size=20, time_budget_s=None)
    model, history = fine_tune(backbone, labeled, cfg, steps=2, backbone_lr_scale=0.5, layer_decay=0.75,
                               head_init="random", copy_backbone=False)
    assert history.steps == 2 and model.backbone is backbone
    unchanged = [n for n, p in backbone.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == ["encoder.mask_token", "encoder.vit.encoder.pos_embedding"]  # unused; fixed sine-cosine
    logits = predict(model, test)
    assert accuracy(logits, test.labels) == pytest.approx(
        (model.eval()(sslkit.to_float(test.images)).argmax(1) == test.labels).float().mean().item())


def test_fine_tune_trains_a_copy_and_checks_its_input():
    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("resnet_tiny", width=8)
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


def test_a_fine_tuning_runs_schedule_follows_its_steps_not_the_clock(monkeypatch):
    # a slow step (here: 30 s of a 100-s budget gone after the first, on a clock the test moves) must not change the
    # learning rates of the later ones while the time budget, a cap, is not reached: the same seed gives the same
    # model however fast the machine is. The clock is moved, not slept on, so a busy machine cannot reach the cap.
    import time
    import types

    data = sslkit.load_dataset("shapes", "train", n=40, seed=0)
    cfg = sslkit.make_config("smoke", batch_size=16, time_budget_s=100.0)
    skipped = [0.0]
    monkeypatch.setattr("sslkit.train.time", types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + skipped[0]))

    def run(pause):
        torch.manual_seed(0)
        backbone, _ = sslkit.make_backbone("resnet_tiny", width=8)

        def callback(history):
            if history.steps == 1:
                skipped[0] += pause

        return fine_tune(backbone, data, cfg, steps=8, callbacks=[callback])

    (fast, h_fast), (slow, h_slow) = run(0.0), run(30.0)  # 30% of the budget gone at step 1 of 8
    assert h_slow.wall_time_s >= 30 and h_fast.wall_time_s < 30  # the moved clock reached the loop
    assert h_fast.steps == h_slow.steps == 8 and not h_slow.stopped_early
    assert h_fast.lrs == h_slow.lrs
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), slow.state_dict().values()))


def test_a_time_limit_stops_training_and_says_so():
    import time

    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("resnet_tiny", width=8)
    data = sslkit.load_dataset("shapes", "train", n=40, seed=0)
    cfg = sslkit.make_config("smoke", batch_size=16, time_budget_s=0.5)
    model, history = fine_tune(backbone, data, cfg, steps=50, callbacks=[lambda h: time.sleep(0.2)])
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


def test_fit_linear_on_a_single_row_is_finite_and_predicts_its_label():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    clf = fit_linear(x, torch.tensor([1]), num_classes=2)
    assert torch.equal(clf.std, torch.ones(3))  # no spread to standardise by: left unscaled
    assert torch.isfinite(clf.weight).all() and torch.isfinite(linear_head(clf).weight).all()
    assert clf.predict(x).tolist() == [1]


def test_empty_inputs_are_clear_errors():
    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("resnet_tiny", width=8)
    empty = sslkit.load_dataset("shapes", "train", n=20, seed=0).subset([])
    cfg = sslkit.make_config("smoke")
    for head_init in ("linear", "random"):
        with pytest.raises(ValueError, match="the labeled set is empty.*per_class"):
            fine_tune(backbone, empty, cfg, steps=2, head_init=head_init)
    with pytest.raises(ValueError, match="the labeled rows are empty.*give at least one"):
        pseudo_label(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.randn(5, 4))
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="the test split is empty.*at least one test image"):
        linear_probe(x, y, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="the training split is empty"):
        linear_probe(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), x, y)
