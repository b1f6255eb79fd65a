import os
import random

import pytest
import torch
from torch import nn

from sslkit.checkpoint import (CheckpointError, checkpoints_in, latest_checkpoint, load_checkpoint, load_or_train,
                               model_path, save_checkpoint, save_model)


def _model():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _train_one_step(model, opt):
    loss = model(torch.randn(16, 4)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path):
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    _train_one_step(model, opt)
    sched.step()
    path = save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, epoch=1, step=1,
                           config={"method": "simclr"})
    expected_next = (torch.rand(3), random.random())

    torch.manual_seed(123)
    model2 = _model()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, 1, gamma=0.5)
    state = load_checkpoint(path, model2, opt2, sched2)
    assert state["epoch"] == 1 and state["config"] == {"method": "simclr"}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert torch.equal(torch.rand(3), expected_next[0]) and random.random() == expected_next[1]
    # the same next step from both
    torch.manual_seed(7)
    _train_one_step(model, opt)
    torch.manual_seed(7)
    _train_one_step(model2, opt2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))


def test_keep_last_n(tmp_path):
    model = _model()
    for epoch in range(1, 6):
        save_checkpoint(tmp_path, model=model, epoch=epoch, keep_last=2)
    assert [p.name for p in checkpoints_in(tmp_path)] == ["epoch-0004.pt", "epoch-0005.pt"]
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_file_is_a_clear_error_and_the_previous_one_is_used(tmp_path):
    model = _model()
    save_checkpoint(tmp_path, model=model, epoch=1)
    good = checkpoints_in(tmp_path)[0]
    bad = tmp_path / "epoch-0002.pt"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt or truncated.*epoch-0001.pt"):
        load_checkpoint(bad, model)
    assert latest_checkpoint(tmp_path) == good


def test_junk_empty_and_foreign_files_are_corrupt_checkpoints_and_never_push_out_a_new_one(tmp_path):
    """Text, an empty file or a bare tensor named like a checkpoint: a CheckpointError (the unpickler's KeyError or
    IndexError used to escape), skipped by latest_checkpoint; pruning keeps the file it just wrote."""
    (tmp_path / "epoch-0007.pt").write_text("junk")
    (tmp_path / "epoch-0008.pt").write_bytes(b"")
    torch.save(torch.zeros(2), tmp_path / "epoch-0009.pt")
    for name in ("epoch-0007.pt", "epoch-0008.pt", "epoch-0009.pt"):
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            load_checkpoint(tmp_path / name, _model())
    assert latest_checkpoint(tmp_path) is None
    written = save_checkpoint(tmp_path, model=_model(), epoch=1, keep_last=1)
    assert written.exists() and latest_checkpoint(tmp_path) == written


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    path = tmp_path / "epoch-0001.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="weights-only loading refuses"):
        load_checkpoint(path, _model())


def test_another_architecture_names_keys_and_shapes(tmp_path):
    save_checkpoint(tmp_path, model=_model(), epoch=1, config={"method": "byol", "backbone": "resnet_tiny"})
    other = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2), nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match=r"another model \(method=byol, backbone=resnet_tiny\).*"
                                              r"missing keys \['3.bias', '3.weight'\].*0.weight: checkpoint \(8, 4\) vs model \(16, 4\)"):
        load_checkpoint(checkpoints_in(tmp_path)[0], other)


def test_full_disk_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = _model()
    first = save_checkpoint(tmp_path, model=model, epoch=1)
    before = first.read_bytes()

    def disk_full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoints.*intact"):
        save_checkpoint(tmp_path, model=model, epoch=2)
    assert first.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-0001.pt"]


def test_a_given_random_state_is_the_one_saved(tmp_path):
    """train() saves the state from the start of an interrupted step, not the one the step left behind."""
    from sslkit.checkpoint import rng_state, set_rng_state
    torch.manual_seed(0)
    before = rng_state()
    expected = torch.rand(3)  # what the interrupted step drew
    path = save_checkpoint(tmp_path, model=_model(), epoch=1, rng=before)
    torch.rand(5)
    load_checkpoint(path)
    assert torch.equal(torch.rand(3), expected)
    set_rng_state(before)
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------------------------
# load_or_train: notebooks 06, 07 and 09 start from notebook 02's backbone, or train their own


class _Trainer:
    """A train_fn that counts its calls and returns a fresh model."""

    def __init__(self, make):
        self.make, self.calls = make, 0

    def __call__(self):
        self.calls += 1
        return self.make()


def _smoke_cfg():
    import sslkit
    return sslkit.make_config("smoke")


def test_load_or_train_loads_a_fitting_checkpoint_and_says_so(tmp_path, capsys):
    cfg, saved = _smoke_cfg(), _model()
    save_model("net", saved, cfg, {"knn": 0.71234, "train_s": 12.0}, folder=tmp_path)
    trainer = _Trainer(_model)
    model, state = load_or_train("net", _model(), cfg, trainer, what="notebook 02's net", folder=tmp_path)
    assert trainer.calls == 0 and state["metrics"] == {"knn": 0.71234, "train_s": 12.0}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values()))
    out = capsys.readouterr().out
    assert f"notebook 02's net: loaded {model_path('net', 'smoke', tmp_path)}" in out
    assert "{'knn': 0.712, 'train_s': 12.0}" in out and "training" not in out


def test_load_or_train_says_when_the_checkpoint_was_trained_with_another_seed(tmp_path, capsys):
    """A run with SEED = 1 that loads a backbone trained with seed 0 gives other numbers than the recorded seed-1 run:
    it loads (the checkpoint fits) and says so, with how to train it with this seed."""
    import dataclasses

    save_model("net", _model(), _smoke_cfg(), folder=tmp_path)
    load_or_train("net", _model(), _smoke_cfg(), _Trainer(_model), folder=tmp_path)
    assert "seed" not in capsys.readouterr().out  # the same seed: nothing to say
    other = dataclasses.replace(_smoke_cfg(), seed=_smoke_cfg().seed + 1)
    _, state = load_or_train("net", _model(), other, _Trainer(_model), folder=tmp_path)
    assert state is not None
    out = capsys.readouterr().out
    assert f"net: trained with seed {_smoke_cfg().seed}, this run's seed is {other.seed}; to train it with this seed, " \
           f"delete {model_path('net', 'smoke', tmp_path)} or train it here: USE_CHECKPOINTS = False in notebook 06, " \
           "SSL_CHECKPOINT = None in 07 and 09" in out


def test_load_or_train_says_when_the_weights_come_from_a_variant_of_the_saving_notebook(tmp_path, capsys):
    """A "what to try next" run of notebook 02 (NUM_EPOCHS = 5) overwrites the backbone that 06, 07 and 09 load: they
    load it (it fits) and say which settings differ from 02's defaults, so its numbers are not taken for the lesson's."""
    import sslkit

    knobs = {"num_epochs": None, "min_crop": None, "lr": None}  # a parameters cell: None is the recipe's value
    lesson = sslkit.make_config("smoke", recipe="simclr", notebook="02_contrastive", **knobs)
    save_model("net", _model(), lesson, folder=tmp_path, notebook="02_contrastive")
    load_or_train("net", _model(), _smoke_cfg(), _Trainer(_model), folder=tmp_path)
    assert "changed" not in capsys.readouterr().out  # the notebook's defaults: nothing to say
    variant = sslkit.make_config("smoke", recipe="simclr", notebook="02_contrastive", **{**knobs, "num_epochs": 5,
                                                                                          "min_crop": 0.3})
    save_model("net", _model(), variant, folder=tmp_path, notebook="02_contrastive")
    _, state = load_or_train("net", _model(), _smoke_cfg(), _Trainer(_model), folder=tmp_path, what="02's SimCLR")
    assert state is not None and state["changed"] == {"num_epochs": [5, 1], "min_crop": [0.3, 0.7]}
    out = capsys.readouterr().out
    assert ("02's SimCLR: 02_contrastive saved it from a run with changed settings: num_epochs=5 (default 1), "
            "min_crop=0.3 (default 0.7)") in out and "run 02_contrastive again with its defaults" in out


def test_load_or_train_trains_when_the_checkpoint_is_missing_or_switched_off(tmp_path, capsys):
    cfg = _smoke_cfg()
    trainer = _Trainer(lambda: nn.Linear(4, 2))
    model, state = load_or_train("net", _model(), cfg, trainer, folder=tmp_path)
    assert state is None and trainer.calls == 1 and isinstance(model, nn.Linear)  # train_fn's model
    assert f"net: no checkpoint {model_path('net', 'smoke', tmp_path)} for the smoke profile; training it here " \
           f"instead" in capsys.readouterr().out
    save_model("net", _model(), cfg, folder=tmp_path)
    model, state = load_or_train("net", _model(), cfg, trainer, use_checkpoint=False, folder=tmp_path)
    assert state is None and trainer.calls == 2
    assert "not loading checkpoints (use_checkpoint is off); training it here instead" in capsys.readouterr().out


def test_load_or_train_trains_when_the_checkpoint_is_from_another_architecture(tmp_path, capsys):
    cfg = _smoke_cfg()
    save_model("net", _model(), cfg, folder=tmp_path)
    wider = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    trainer = _Trainer(lambda: wider)
    model, state = load_or_train("net", wider, cfg, trainer, folder=tmp_path)
    assert state is None and trainer.calls == 1
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing was loaded into it
    out = capsys.readouterr().out
    assert "net: cannot use the checkpoint:" in out and "was saved from another model" in out
    assert "0.weight: checkpoint (8, 4) vs model (16, 4)" in out and out.rstrip().endswith("-> training it here instead")
