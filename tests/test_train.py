"""The shared training loop: seeding, schedule, time budget, NaN guard, monitoring, supervised training."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sslkit
from sslkit.augment import flip_and_translate
from sslkit.checkpoint import latest_checkpoint
from sslkit.optim import lr_at
from sslkit.recipes import recipe
from sslkit.supervised import Supervised, fit_supervised
from sslkit.train import History, train


@pytest.fixture(scope="module")
def data():
    return sslkit.load_dataset("shapes", "train", n=96, image_size=32, seed=0)


def cfg(**kw):
    values = dict(num_epochs=2, batch_size=32, lr=1e-3, warmup_epochs=0.5, device="cpu", seed=0)
    values.update(kw)
    budget = values.pop("time_budget_s", None)
    # no time budget unless a test sets one (a budget a busy machine reaches would change a planned run's schedule)
    return dataclasses.replace(sslkit.make_config("smoke", **values), time_budget_s=budget)


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
    assert "time budget" in capsys.readouterr().out and "decayed to 0" in h.message
    assert h.wall_time_s >= 0.5  # what stopped it is the budget (a busy machine only makes it later)
    # with a constant lr the budget stops a run at full lr, and the message must not claim a decay
    h = train(supervised(), data, cfg(num_epochs=500, time_budget_s=0.5, lr_schedule="constant"), progress=False)
    assert h.stop_reason == "time budget" and "still at its constant value" in h.message
    assert "decayed" not in h.message


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
    with pytest.warns(RuntimeWarning, match=r"at step 4 \(epoch 2\)") as w:  # 3 steps per epoch
        h = train(method, data, cfg(num_epochs=5, lr=1e-2), progress=False,
                  callbacks=[lambda h: snapshots.append([p.detach().clone() for p in method.parameters()])])
    message = str(w[0].message)
    assert "last finite loss was" in message and "lower learning rate" in message and "fp32" in message
    assert h.stopped_early and h.stop_reason == "non-finite loss" and h.steps == 3
    assert all(math.isfinite(x) for x in h.losses)
    # the restored weights are those the last finite loss was computed with: after step 2's update
    for p, q in zip(method.parameters(), snapshots[1]):
        assert torch.equal(p, q)


def test_a_nan_stop_leaves_the_last_whole_checkpoint_newest(data, tmp_path):
    """After a NaN the weights go back a step while the optimizer has taken it: a checkpoint of that mix would resume
    a run that never was. The newest checkpoint stays the last epoch's (3 steps per epoch; step 5 is NaN)."""
    method, snapshots = ExplodesAt(bad_step=4), []
    with pytest.warns(RuntimeWarning, match=r"at step 5 \(epoch 2\)"):
        h = train(method, data, cfg(num_epochs=5, lr=1e-2), progress=False, run_dir=tmp_path,
                  callbacks=[lambda h: snapshots.append([p.detach().clone() for p in method.parameters()])])
    assert h.steps == 4 and h.stop_reason == "non-finite loss"
    saved = torch.load(latest_checkpoint(tmp_path), weights_only=False)
    assert saved["step"] == 3 and sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch-0001.pt"]
    for name, q in zip(dict(method.named_parameters()), snapshots[2]):
        assert torch.equal(saved["model"][name], q)  # the weights after step 3, with step 3's optimizer


def test_a_callback_sees_every_step_after_the_methods_own_update(data):
    calls = []

    class Counted(Supervised):
        def on_step_end(self, step, total_steps):  # a method's own update after a step (momentum encoders)
            calls.append(("method", step, total_steps))

    torch.manual_seed(0)
    backbone, dim = sslkit.make_backbone("resnet_tiny", width=8)
    h = train(Counted(backbone, 10, dim), data, cfg(), progress=False,
              callbacks=[lambda h: calls.append(("callback", h.steps, h.total_steps, len(h.losses), h.lrs[-1]))])
    assert h.total_steps == 6 and h.steps == 6
    assert calls[0::2] == [("method", s, 6) for s in range(1, 7)]
    assert calls[1::2] == [("callback", s, 6, s, h.lrs[s - 1]) for s in range(1, 7)]


class Recorder:
    """A callback object: the three moments train calls, and the epochs it sees."""

    def __init__(self):
        self.events = []

    def on_train_start(self, history):
        self.events.append(("start", history.steps))

    def __call__(self, history):
        self.events.append(("step", history.steps, history.epochs))

    def on_train_end(self, history):
        self.events.append(("end", history.steps, history.stop_reason))


def test_a_callback_object_is_told_of_the_start_every_step_and_the_end(data):
    rec = Recorder()
    train(supervised(), data, cfg(), progress=False, callbacks=[rec])
    assert rec.events == [("start", 0)] + [("step", s, s / 3) for s in range(1, 7)] + [("end", 6, None)]


def test_keyboard_interrupt_in_a_callback_stops_the_run_cleanly(data, tmp_path):
    rec = Recorder()
    h = train(supervised(), data, cfg(), progress=False, run_dir=tmp_path, callbacks=[_stop_at(2), rec])
    assert h.steps == 2 == len(h.losses) and h.stop_reason == "interrupted" and h.stopped_early
    assert "to resume" in h.message and Path(h.checkpoint).exists()
    assert rec.events == [("start", 0), ("step", 1, 1 / 3), ("end", 2, "interrupted")]  # later callbacks skipped


def test_train_is_a_loop_a_learner_can_read_and_methods_do_not_import_it():
    """Issue 20: train() alone stays within 120 lines; the methods never import the loop."""
    import ast
    import inspect

    import sslkit.methods

    lines, _ = inspect.getsourcelines(train)
    assert len(lines) <= 120, f"train() has {len(lines)} lines; move what is not the loop into a helper module"
    folder = Path(sslkit.methods.__file__).parent
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [f"{'.' * node.level}{node.module or ''}"]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert name not in ("..train", "sslkit.train") and not name.startswith(("..train.", "sslkit.train.")), \
                    f"{path.name} imports the training loop ({name})"


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


# ----------------------------------------------------------------------------------------------
# checkpoints and resume: an interrupted run, resumed, ends exactly where an uninterrupted one does

def simclr(seed=0):
    torch.manual_seed(seed)
    backbone, dim = sslkit.make_backbone("resnet_tiny", width=8)
    return sslkit.methods.make_method("simclr", backbone, dim, hidden_dim=32, out_dim=16)


def ssl_cfg(**kw):
    # 64 images: 4 steps per epoch
    return cfg(**{"num_epochs": 3, "batch_size": 16, "lr": 3e-3, "warmup_epochs": 1.0, **kw})


def _stop_at(step):
    def callback(history):
        if history.steps == step:
            raise KeyboardInterrupt  # what the stop button does, at a step of our choosing
    return callback


@pytest.fixture(scope="module")
def small():
    return sslkit.load_dataset("shapes", "unlabeled", n=64, seed=0)


@pytest.fixture(scope="module")
def uninterrupted(small):
    method = simclr()
    history = train(method, small, ssl_cfg(), progress=False)
    return history, method.state_dict()


@pytest.mark.parametrize("stop", [3, 4, "mid-step"])
def test_interrupted_run_resumes_to_the_same_result(small, uninterrupted, tmp_path, stop):
    """Weights, optimizer, BatchNorm statistics, the shuffled order and the random crops all continue."""
    full, weights = uninterrupted
    if stop == "mid-step":  # interrupted inside the 6th step, after its views were drawn
        method, calls = simclr(), []
        step = method.training_step

        def training_step(images, labels):
            calls.append(1)
            loss = step(images, labels)
            if len(calls) == 6:
                raise KeyboardInterrupt
            return loss
        method.training_step = training_step
        first = train(method, small, ssl_cfg(), progress=False, run_dir=tmp_path)
        assert first.steps == 5
    else:
        first = train(simclr(), small, ssl_cfg(), progress=False, run_dir=tmp_path, callbacks=[_stop_at(stop)])
        assert first.steps == stop
    assert first.stopped_early and first.stop_reason == "interrupted" and "to resume" in first.message
    assert first.checkpoint and Path(first.checkpoint).exists()

    method = simclr(seed=1)  # other initial weights and random state: all of it comes from the checkpoint
    resumed = train(method, small, ssl_cfg(), progress=False, run_dir=tmp_path)
    assert resumed.resumed_from_step == first.steps and resumed.steps == full.steps == 12
    assert resumed.losses == full.losses and resumed.lrs == full.lrs
    assert not resumed.stopped_early and resumed.epochs == 3.0
    for name, value in method.state_dict().items():
        assert torch.equal(value, weights[name]), name


def test_an_interrupted_moco_run_resumes_with_its_queue(small, tmp_path):
    """MoCo's queue of keys is part of its state: a resumed run goes on with the keys it had queued, not a fresh
    random queue (lightly keeps the queue out of state_dict; sslkit's MoCo puts it back in)."""
    def moco():
        torch.manual_seed(0)
        backbone, dim = sslkit.make_backbone("resnet_tiny", width=8)
        return sslkit.methods.make_method("moco", backbone, dim, hidden_dim=32, out_dim=16, queue_size=64)

    full = train(moco(), small, ssl_cfg(), progress=False)
    first = train(moco(), small, ssl_cfg(), progress=False, run_dir=tmp_path, callbacks=[_stop_at(4)])
    assert first.steps == 4
    resumed = train(method := moco(), small, ssl_cfg(), progress=False, run_dir=tmp_path)
    assert resumed.resumed_from_step == 4 and resumed.losses == full.losses
    assert int(method.criterion.memory_bank.bank_ptr) == 12 * 16 % 64


def test_finished_run_rerun_changes_nothing_and_max_steps_is_a_planned_stop(small, tmp_path):
    history = train(simclr(), small, ssl_cfg(), progress=False, run_dir=tmp_path, max_steps=5)
    assert history.steps == 5 and history.stop_reason == "max steps"
    history = train(simclr(), small, ssl_cfg(), progress=False, run_dir=tmp_path)
    assert history.steps == 12 and history.resumed_from_step == 5
    again = train(method := simclr(), small, ssl_cfg(), progress=False, run_dir=tmp_path)
    assert again.steps == 12 and again.losses == history.losses and not again.stopped_early
    assert [p.name for p in sorted(tmp_path.glob("epoch-*.pt"))] == ["epoch-0001.pt", "epoch-0002.pt", "epoch-0003.pt"]


def test_resume_refuses_another_config_or_method(small, tmp_path):
    from sslkit.checkpoint import CheckpointError
    train(simclr(), small, ssl_cfg(), progress=False, run_dir=tmp_path, max_steps=2)
    with pytest.raises(CheckpointError, match=r"another config: lr: 0.003 there, 0.001 now.*new run_dir"):
        train(simclr(), small, ssl_cfg(lr=1e-3), progress=False, run_dir=tmp_path)
    with pytest.raises(CheckpointError, match="method: 'SimCLR' there, 'Supervised' now"):
        train(supervised(), small, ssl_cfg(), progress=False, run_dir=tmp_path)
    # what may change: the device, compile, channels_last, keep_last
    h = train(simclr(), small, ssl_cfg(channels_last=True, keep_last=1), progress=False, run_dir=tmp_path)
    assert h.resumed_from_step == 2 and h.steps == 12 and len(list(tmp_path.glob("epoch-*.pt"))) == 1


def test_sigterm_saves_and_stops_cleanly(small, tmp_path):
    import os
    import signal

    def callback(history):
        if history.steps == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # a job scheduler's notice
    h = train(simclr(), small, ssl_cfg(), progress=False, run_dir=tmp_path, callbacks=[callback])
    assert h.stop_reason == "SIGTERM" and h.steps == 2 and h.checkpoint.endswith("epoch-0001.pt")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


def test_speed_options_train_and_bad_values_are_clear(small):
    for knobs in (dict(precision="bf16"), dict(accumulate=2), dict(channels_last=False),
                  dict(lr_scaling="sqrt", base_batch_size=64)):
        h = train(simclr(), small, ssl_cfg(num_epochs=1, **knobs), progress=False)
        assert h.steps == 4 and all(math.isfinite(x) for x in h.losses), knobs
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose one of: fp32, bf16, fp16"):
        train(simclr(), small, ssl_cfg(precision="fp8"), progress=False)
    with pytest.raises(ValueError, match="not a multiple of accumulate=3"):
        train(simclr(), small, ssl_cfg(accumulate=3), progress=False)
    with pytest.raises(ValueError, match="unknown lr_scaling 'cube'"):
        train(simclr(), small, ssl_cfg(lr_scaling="cube"), progress=False)


def test_accumulation_sums_the_gradients_of_the_chunks(data):
    """Without BatchNorm coupling the samples, 2 chunks of 16 give the update of 1 batch of 32."""
    def model():
        torch.manual_seed(0)
        backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8))
        backbone.feature_dim = 8
        return Supervised(backbone, 10, max_shift=0)
    runs = []
    for k in (1, 2):
        m = model()
        torch.manual_seed(0)
        h = train(m, data, cfg(num_epochs=1, optimizer="sgd", accumulate=k), progress=False)
        runs.append((h.losses, [p.detach().clone() for p in m.parameters()]))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-5)
    for a, b in zip(runs[0][1], runs[1][1]):
        assert torch.allclose(a, b, atol=1e-6)


def test_out_of_memory_says_what_to_try(small, tmp_path):
    class Greedy(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Linear(2, 2)

        def training_step(self, images, labels):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(torch.OutOfMemoryError, match=r"batch_size=16 .*accumulate=2.*precision='bf16'.*"
                                                     r"channels_last=True.*Tried to allocate"):
        train(Greedy(), small, ssl_cfg(), progress=False, run_dir=tmp_path)
    assert list(tmp_path.glob("epoch-0000.pt"))  # the state before the failing step is saved


def test_compile_falls_back_to_eager_with_a_warning(small, monkeypatch):
    def broken_compile(self, *args, **kwargs):  # what a platform without a working compiler does at the first call
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler found")
        self._compiled_call_impl = fail
    monkeypatch.setattr(nn.Module, "compile", broken_compile)
    with pytest.warns(RuntimeWarning, match="torch.compile failed here .*no C\\+\\+ compiler.*without compiling"):
        h = train(m := simclr(), small, ssl_cfg(num_epochs=1, compile=True), progress=False)
    assert h.steps == 4 and all(c._compiled_call_impl is None for c in m.children())
    reference = train(simclr(), small, ssl_cfg(num_epochs=1), progress=False)
    assert h.losses == reference.losses  # the failed first attempt did not use up random numbers


def test_a_constant_lr_schedule_keeps_the_peak_after_the_warm_up(small):
    """The lesson recipes of BYOL, SimSiam, DINO and Barlow Twins keep a constant lr after the warm-up
    (``lr_schedule``); VICReg keeps the cosine decay."""
    schedules = {m: recipe(m, "lesson").get("lr_schedule", "cosine") for m in ("byol", "simsiam", "dino", "barlowtwins",
                                                                              "vicreg")}
    assert schedules == {"byol": "constant", "simsiam": "constant", "dino": "constant", "barlowtwins": "constant",
                         "vicreg": "cosine"}
    shared = ssl_cfg()
    own = ssl_cfg(lr_schedule="constant")
    flat = train(simclr(), small, own, progress=False).lrs
    decayed = train(simclr(), small, shared, progress=False).lrs
    assert flat[:4] == decayed[:4]  # the same warm-up (one epoch: 4 steps)
    assert flat[4:] == pytest.approx([shared.lr] * 8) and decayed[-1] < 0.5 * shared.lr
