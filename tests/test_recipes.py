"""Recipes: one home for every lesson's training values, used by the notebooks and the shell alike."""
import json
import re
from pathlib import Path

import pytest
import torch

import sslkit
from sslkit.cli import main
from sslkit.config import PROFILE_VALUES, PROFILES, make_config
from sslkit.methods import METHODS
from sslkit.nbtools import run_notebook
from sslkit.recipes import NOTEBOOK_VALUES, RECIPES, build, recipe, recipes_for, views_of, with_own_optimizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def every_profile(monkeypatch):
    monkeypatch.delenv("SSLKIT_PROFILE", raising=False)  # the tests' conftest sets smoke


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_its_method_at_every_profile(name):
    from sslkit.optim import make_optimizer

    for profile in PROFILES:
        cfg = make_config(profile, recipe=name)
        assert cfg.recipe == name and cfg.profile == profile
        method = build(RECIPES[name]["method"], cfg)
        make_optimizer(method, cfg)  # the recipe's optimizer and schedule exist
        if "temperature" in cfg.extra:
            assert method.criterion.temperature == cfg.extra["temperature"]


def test_every_method_of_the_command_line_has_a_recipe():
    assert {r["method"] for r in RECIPES.values()} == set(METHODS)
    assert all(recipes_for(m)[0] == m for m in METHODS)


def test_every_value_is_written_once():
    """A notebook's own values never repeat what its recipes say (one home per value)."""
    for name, entry in RECIPES.items():
        own = NOTEBOOK_VALUES.get(entry["notebook"], {})
        for profile in PROFILES:
            shared = set(own.get(profile, {})) & set(entry.get(profile, {}))
            assert not shared, (name, profile, shared)


def test_precedence_caller_over_notebook_over_recipe_over_profile():
    cfg = make_config("lesson", recipe="simclr", notebook="02_contrastive")
    assert cfg.batch_size == 64 and cfg.extra["sweep_epochs"] == 6  # recipe, notebook
    assert cfg.num_train == 5_000  # the profile's (Config's default at lesson)
    assert make_config("lesson", recipe="simclr", batch_size=64, temperature=0.5).extra["temperature"] == 0.5
    assert make_config("lesson", recipe="simclr", batch_size=32).batch_size == 32


def test_bad_recipe_names_say_which_exist():
    with pytest.raises(ValueError, match="unknown recipe 'simclrr'; choose one of: barlowtwins, byol"):
        make_config("smoke", recipe="simclrr")


def test_views_follow_the_recipe_and_augment_params_fields_win():
    cfg = make_config("lesson", recipe="byol", crop_scale=(0.3, 1.0))
    views = views_of(cfg)
    assert views.image_size == 24 and views.grayscale_prob == 0.8 and views.brightness == pytest.approx(0.4)
    assert views.crop_scale == (0.3, 1.0)
    assert views_of(make_config("smoke")) is None  # no view knob: a method keeps its own


def test_simsiam_keeps_its_sgd_where_a_run_names_no_optimizer():
    cfg = with_own_optimizer("simsiam", make_config("lesson"))
    assert (cfg.extra["optimizer"], cfg.lr, cfg.weight_decay) == ("sgd", 0.12, 5e-4)
    assert with_own_optimizer("simclr", make_config("lesson")) == make_config("lesson")


def test_byol_recipe_takes_the_step_of_the_summed_loss_exactly():
    """BYOL averages its two loss halves (as lightly's example); its recipe's SGD at twice the lr and half the weight
    decay then takes the very steps that the summed loss took at (lr, weight decay), bit for bit."""
    from sslkit.optim import make_optimizer, set_lr

    cfg = make_config("smoke", recipe="byol")
    halved = dict(lr=cfg.lr / 2, weight_decay=cfg.weight_decay * 2)
    images = sslkit.load_dataset("shapes", "train", n=16, seed=0).images
    weights = []
    for scale, values in ((2.0, halved), (1.0, {})):
        c = make_config("smoke", recipe="byol", **values)
        method = build("byol", c)
        opt = make_optimizer(method, c)
        set_lr(opt, c.lr)
        for step in range(2):
            torch.manual_seed(step)
            opt.zero_grad()
            (scale * method.training_step(images, None)).backward()
            opt.step()
        weights.append([p.detach().clone() for p in method.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


def test_the_command_line_trains_the_recipe_and_records_it(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["byol", "--profile", "smoke", "--max-steps", "1", "--time-budget", "600", "--results", str(out),
                 "--quiet"]) == 0
    config = json.loads(out.read_text())["config"]
    assert config["recipe"] == "byol" and config["lr"] == recipe("byol", "smoke")["lr"]
    assert config["extra"]["optimizer"] == "sgd" and config["extra"]["predictor_lr_scale"] == 4
    assert main(["byol", "--profile", "smoke", "--recipe", "simsiam", "--max-steps", "1", "--results", str(out),
                 "--quiet"]) == 0
    assert json.loads(out.read_text())["config"]["recipe"] == "simsiam"
    with pytest.raises(SystemExit) as e:
        main(["byol", "--recipe", "byoll", "--results", str(tmp_path / "no.json")])
    assert e.value.code == 2 and "unknown recipe 'byoll' (did you mean byol?)" in capsys.readouterr().err
    assert not (tmp_path / "no.json").exists()


def test_the_command_line_trains_what_notebook_02_trains(smoke_runs, tmp_path):
    """The same seed gives the same final loss in notebook 02 (its smoke run, default parameters) and in
    ``python -m sslkit.train simclr --profile smoke`` with no other flag: both train the recipe's planned epochs."""
    _, results = smoke_runs.run(ROOT / "notebooks" / "02_contrastive.ipynb")
    metrics = json.loads(results.read_text())["metrics"]
    out = tmp_path / "cli.json"
    assert main(["simclr", "--profile", "smoke", "--results", str(out), "--quiet"]) == 0
    shell = json.loads(out.read_text())["metrics"]
    assert shell["steps"] == metrics["steps_simclr"] >= 1
    assert shell["final_loss"] == pytest.approx(metrics["loss_simclr"], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("notebook", sorted({r["notebook"] for r in RECIPES.values()}))
def test_the_notebooks_that_teach_a_recipe_train_it(notebook, smoke_runs):
    """Each such notebook's run records the recipe(s) it trained, and their values reached its config."""
    _, results = smoke_runs.run(ROOT / "notebooks" / f"{notebook}.ipynb")
    config = json.loads(results.read_text())["config"]
    trained = config.get("recipes") or {config["recipe"]: config}
    assert trained and all(RECIPES[name]["notebook"] == notebook for name in trained), trained
    for name, cfg in trained.items():
        values = recipe(name, "smoke")
        for key, value in values.items():
            got = cfg[key] if key in cfg else cfg["extra"].get(key)
            assert got == (list(value) if isinstance(value, tuple) else value), (name, key)


def test_every_lesson_training_is_planned_not_timed():
    """Issue 21: no recipe, notebook value or profile stops a smoke or lesson training at a time budget (a budget
    makes the numbers depend on the machine's speed); a notebook's TIME_BUDGET_S is only an opt-in cap."""
    for profile in ("smoke", "lesson"):
        assert "time_budget_s" not in PROFILE_VALUES[profile]
        assert make_config(profile).time_budget_s is None
        for name, entry in RECIPES.items():
            assert "time_budget_s" not in entry[profile], (name, profile)
            assert make_config(profile, recipe=name).time_budget_s is None
        for notebook, values in NOTEBOOK_VALUES.items():
            timed = [k for k in values.get(profile, {}) if "budget" in k]
            assert not timed, (notebook, profile, timed)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_same_seed_trains_bit_identical_numbers(name):
    """Two runs of a recipe at smoke with the same seed: the same loss at every step, the same weights."""
    from sslkit.pretext import PRETEXT_TASKS, make_pretext
    from sslkit.train import train

    cfg = make_config("smoke", recipe=name, num_unlabeled=128, batch_size=32, num_epochs=1)
    data = sslkit.load_split(cfg, "unlabeled")
    runs = []
    for _ in range(2):
        if name in PRETEXT_TASKS:
            torch.manual_seed(cfg.seed)
            method = make_pretext(name, *sslkit.make_backbone(cfg.backbone, **sslkit.backbone_overrides(cfg)))
        else:
            method = build(RECIPES[name]["method"], cfg)
        history = train(method, data, cfg, progress=False)
        runs.append((history.losses, [p.detach().clone() for p in method.parameters()]))
    (losses0, weights0), (losses1, weights1) = runs
    assert len(losses0) == 4 and losses0 == losses1
    assert all(torch.equal(a, b) for a, b in zip(weights0, weights1))


TIMING = re.compile(r"(^|_)(s|ms)(_|$)|images_per_s|speedup|seconds|latency")  # clock readings, not results


def test_two_smoke_runs_of_a_notebook_give_identical_numbers(smoke_runs, tmp_path, monkeypatch):
    """Issue 21: notebook 02 run twice at smoke with its default parameters (no TIME_BUDGET_S override) records the
    same metrics, every one but the clock readings (seconds, images per second). The second run finds no recorded
    smoke trainings (an empty replay folder), so its default REPLAY list trains every one of them again."""
    notebook = ROOT / "notebooks" / "02_contrastive.ipynb"
    _, first = smoke_runs.run(notebook)
    monkeypatch.setenv("SSLKIT_REPLAY_DIR", str(tmp_path / "no_replays"))  # the kernel inherits it
    second = tmp_path / "again.json"
    run_notebook(notebook, tmp_path / "again.ipynb", {"PROFILE": "smoke", "RESULTS_PATH": str(second)})
    m0, m1 = (json.loads(p.read_text())["metrics"] for p in (first, second))
    numbers = {k for k in m0 if not TIMING.search(k)}
    assert {"knn_simclr", "loss_simclr", "knn_moco", "steps_simclr"} <= numbers and set(m1) == set(m0)
    assert {k: m1[k] for k in numbers} == {k: m0[k] for k in numbers}
    assert not any(k.startswith("cut_short_") for k in m0)
