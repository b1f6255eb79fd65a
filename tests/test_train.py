"""The shared training loop: seeding, schedule, time budget, NaN guard, monitoring, supervised training."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sslkit
from sslkit.train import History, Supervised, fit_supervised, flip_and_translate, lr_at, train


@pytest.fixture(scope="module")
def data():
    return sslkit.load_dataset("shapes", "train", n=96, image_size=32, seed=0)


def cfg(**kw):
    values = dict(num_epochs=2, batch_size=32, lr=1e-3, warmup_epochs=0.5, time_budget_s=None, device="cpu", seed=0)
    values.update(kw)
    return sslkit.make_config("smoke", **values)


def supervised(seed=0):
    torch.manual_seed(seed)
    backbone, dim = sslkit.make_backbone("resnet_tiny", width=8)
    return Supervised(backbone, 10, dim)


def test_same_seed_same_numbers_and_other_seed_other_numbers(data):
    h1, m1 = train(a := supervised(), data, cfg(), progress=False), a
    h2, m2 = train(b := supervised(), data, cfg(), progress=False), b
    assert h1.losses == h2.losses
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    h3 = train(supervised(), data, cfg(seed=1), progress=False)
    assert h3.losses != h1.losses


def test_history_counts_steps_epochs_and_lr_schedule(data):
    h = train(supervised(), data, cfg(num_epochs=3, warmup_epochs=1.0), progress=False)
    assert isinstance(h, History)
    assert h.steps == 9 == len(h.losses) == len(h.lrs)  # 96 // 32 = 3 steps per epoch
    assert h.epochs == 3.0 and not h.stopped_early and h.stop_reason is None
    assert h.lrs[0] == 0.0  # warm-up starts at 0
    assert max(h.lrs) == pytest.approx(1e-3, rel=0.01) and h.lrs.index(max(h.lrs)) == 3  # end of warm-up
    assert h.lrs[-1] < 0.1 * max(h.lrs)  # cosine decay towards 0
    assert h.wall_time_s > 0 and h.images_per_s > 0


def test_lr_schedule_matches_its_formula():
    assert lr_at(0.0, 2.0, 0.1) == 0.0
    assert lr_at(0.05, 2.0, 0.1) == pytest.approx(1.0)
    assert lr_at(0.1, 2.0, 0.1) == pytest.approx(2.0)
    p = 0.4
    assert lr_at(p, 2.0, 0.1) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * (p - 0.1) / 0.9)))
    assert lr_at(1.0, 2.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(0.5, 2.0, 0.0) == pytest.approx(1.0)  # no warm-up


def test_time_budget_stops_cleanly_and_says_so(data, capsys):
    h = train(supervised(), data, cfg(num_epochs=500, time_budget_s=0.5), progress=False)
    assert h.stopped_early and h.stop_reason == "time budget"
    assert 0 < h.steps < 500 * 3
    assert "time budget" in capsys.readouterr().out
    assert h.wall_time_s < 5


class ExplodesAt(nn.Module):
    """A method whose loss is finite for ``bad_step`` steps, then NaN."""

    def __init__(self, bad_step):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
        self.bad_step, self.calls = bad_step, 0

    def training_step(self, images, labels):
        self.calls += 1
        loss = self.backbone(sslkit.to_float(images)).pow(2).mean()
        return loss * float("nan") if self.calls > self.bad_step else loss


def test_nan_loss_stops_restores_last_good_weights_and_explains(data):
    method = ExplodesAt(bad_step=3)
    snapshots = []
    method.on_step_end = lambda step, total: snapshots.append([p.detach().clone() for p in method.parameters()])
    with pytest.warns(RuntimeWarning, match="step 3") as w:
        h = train(method, data, cfg(num_epochs=5, lr=1e-2), progress=False)
    message = str(w[0].message)
    assert "last finite loss was" in message and "lower learning rate" in message and "fp32" in message
    assert h.stopped_early and h.stop_reason == "non-finite loss" and h.steps == 3
    assert all(math.isfinite(x) for x in h.losses)
    # the restored weights are those the last finite loss was computed with: after step 2's update
    for p, q in zip(method.parameters(), snapshots[1]):
        assert torch.equal(p, q)


def test_on_step_end_sees_every_step_and_the_total(data):
    calls = []
    method = supervised()
    method.on_step_end = lambda step, total: calls.append((step, total))
    train(method, data, cfg(), progress=False)
    assert calls == [(s, 6) for s in range(1, 7)]


def test_monitor_records_knn_before_each_epoch_and_at_the_end(data):
    bank = sslkit.load_dataset("shapes", "train", n=50, seed=1)
    test = sslkit.load_dataset("shapes", "test", n=20, seed=1)
    with pytest.warns(UserWarning, match="k=200"):  # a tiny bank: k is clamped
        h = train(supervised(), data, cfg(num_epochs=2), monitor=(bank, test), progress=False)
    assert h.knn_epochs == [0.0, 1.0, 2.0]
    assert len(h.knn) == 3 and all(0 <= a <= 1 for a in h.knn)


def test_live_plot_is_harmless_without_a_notebook(data):
    h = train(supervised(), data, cfg(num_epochs=1), live_plot=True, plot_every=1, progress=True)
    assert h.steps == 3


def test_flip_and_translate_is_a_flip_then_a_shifted_crop_of_the_reflect_padded_image():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = flip_and_translate(x, max_shift=2, generator=g)
    assert out.dtype == x.dtype and out.shape == x.shape
    for i in range(len(x)):
        found = False
        for candidate in (x[i], x[i].flip(-1)):
            padded = F.pad(candidate[None].float(), (2, 2, 2, 2), mode="reflect")[0]
            for dy in range(5):
                for dx in range(5):
                    found |= torch.equal(padded[:, dy:dy + 8, dx:dx + 8], out[i].float())
        assert found, f"image {i} is not a flipped/shifted crop"
    flips = flip_and_translate(x, max_shift=0, generator=torch.Generator().manual_seed(1))
    flipped = [torch.equal(flips[i], x[i].flip(-1)) for i in range(len(x))]
    assert all(torch.equal(flips[i], x[i]) or flipped[i] for i in range(len(x)))
    assert 0 < sum(flipped) < len(x)


def test_supervised_learns_and_refuses_unlabeled_data(data):
    backbone, dim = sslkit.make_backbone("resnet_tiny", width=8)
    h = fit_supervised(backbone, data, cfg(num_epochs=6, lr=3e-3), progress=False)
    assert sum(h.losses[-3:]) / 3 < sum(h.losses[:3]) / 3
    unlabeled = sslkit.load_dataset("shapes", "unlabeled", n=32, seed=0)
    with pytest.raises(ValueError, match="needs labels"):
        fit_supervised(backbone, unlabeled, cfg(), progress=False)
