"""Replay (issue 21, the classroom fast path): a notebook with REPLAY = True loads the trainings of a recorded run
instead of training them and computes every evaluation on them; these tests check that the evaluations give the
recorded numbers (at smoke from the test session's own recorded runs, at lesson from the committed replays), that
the committed files match their checksums, and that every way a replay cannot be used says what to do."""
import dataclasses
import fnmatch
import json
import re
from pathlib import Path

import pytest
import torch

import sslkit
from sslkit import replay
from sslkit.config import torch_threads
from sslkit.nbtools import notebook_parameters, run_notebook
from sslkit.train import History

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WITH_REPLAY = [p for p in NOTEBOOKS if "REPLAY" in notebook_parameters(p)]
TIMING = re.compile(r"(^|_)(s|ms)(_|$)|images_per_s|speedup|seconds|latency")  # clock readings, not results
COMMITTED = replay.REPLAY_DIR / replay.MANIFEST


# what each lesson trains in class by default: the method its exercises build; the other trainings are replayed
LIVE = {"02_contrastive": {"simclr"}, "03_non_contrastive": {"simsiam", "simsiam_no_stopgrad"}}


def test_the_long_lessons_train_their_own_method_and_replay_the_comparisons_by_default():
    """Issue 21: notebooks 02 and 03 fit a class period by training the method the lesson builds (your loss) and
    loading the others' recorded trainings; the default list names only committed trainings, and all but those."""
    assert {p.stem for p in WITH_REPLAY} == set(LIVE)
    for path in WITH_REPLAY:
        default = replay.check_mode(json.loads(notebook_parameters(path)["REPLAY"]))
        assert isinstance(default, tuple), path.name
        recorded = replay.recorded_names(path.stem, "lesson", replay.REPLAY_DIR)
        replayed = {n for n in recorded if any(fnmatch.fnmatchcase(n, p) for p in default)}
        assert replayed == set(recorded) - LIVE[path.stem], path.name


@pytest.mark.parametrize("path", WITH_REPLAY, ids=lambda p: p.name[:2])
def test_a_replayed_smoke_run_gives_the_recorded_numbers(path, smoke_runs, tmp_path):
    """The session's smoke run recorded its trainings (REPLAY = "record", conftest); the same notebook with
    REPLAY = True loads them and must record every metric as the run that trained, clock readings included (they
    are the recorded run's), and mark each training as replayed."""
    _, recorded = smoke_runs.run(path)
    again = tmp_path / "replayed.json"
    executed = run_notebook(path, tmp_path / "replayed.ipynb",
                            {"PROFILE": "smoke", "RESULTS_PATH": str(again), "REPLAY": True})
    m0, m1 = (json.loads(p.read_text())["metrics"] for p in (recorded, again))
    trainings = {k[len("train_s_"):] for k in m0 if k.startswith("train_s_")}
    assert trainings, "the notebook records no training (train_s_<name>)"
    assert {k for k in m1 if k.startswith("replayed_")} == {f"replayed_{name}" for name in trainings}
    numbers = {k for k in m0 if not TIMING.search(k)}
    assert {k: m1.get(k) for k in numbers} == {k: m0[k] for k in numbers}
    text = "\n".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if isinstance(o.get("text"), str))
    assert text.count("replayed the recorded run") == len(trainings)


def test_a_partly_replayed_smoke_run_trains_the_others_and_gives_the_recorded_numbers(smoke_runs, tmp_path):
    """REPLAY = a list: notebook 03 replays the trainings it names and trains BYOL here. Every metric equals the
    recorded run's (the same seed and machine train the same BYOL; the replays restore the random state after
    theirs), and only the named trainings are marked replayed."""
    path = next(p for p in WITH_REPLAY if p.name.startswith("03"))
    _, recorded = smoke_runs.run(path)
    m0 = json.loads(recorded.read_text())["metrics"]
    trainings = sorted(k[len("train_s_"):] for k in m0 if k.startswith("train_s_"))
    assert "byol" in trainings
    named = [n for n in trainings if n != "byol"]
    again = tmp_path / "partly.json"
    executed = run_notebook(path, tmp_path / "partly.ipynb",
                            {"PROFILE": "smoke", "RESULTS_PATH": str(again), "REPLAY": named})
    m1 = json.loads(again.read_text())["metrics"]
    assert {k for k in m1 if k.startswith("replayed_")} == {f"replayed_{n}" for n in named}
    numbers = {k for k in m0 if not TIMING.search(k)}
    assert {k: m1.get(k) for k in numbers} == {k: m0[k] for k in numbers}
    text = "\n".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if isinstance(o.get("text"), str))
    assert text.count("replayed the recorded run") == len(named) and "byol: replayed" not in text
    labels = {"byol": "BYOL", "simsiam": "SimSiam", "simsiam_no_stopgrad": "SimSiam, no stop-grad", "dino": "DINO",
              "barlowtwins": "Barlow Twins", "vicreg": "VICReg"}
    for name in trainings:  # the summary table says which trainings were replayed, and so does the verdict
        row = next(line for line in text.splitlines() if line.startswith(f"{labels[name]:22s} "))
        assert ("(replayed)" in row) == (name in named), row
    assert f"({len(named) - 1} of them replayed from the lesson run)" in text  # (the collapse run is not counted)


def test_a_replay_list_replays_what_it_names_and_refuses_a_name_never_recorded(tmp_path):
    cfg = sslkit.make_config("smoke")
    for name in ("a", "b"):
        replay.record("demo", name, torch.nn.Linear(3, 2), cfg, History(losses=[1.0], steps=1, total_steps=1,
                                                                         epochs=1.0, wall_time_s=1.0),
                      keep=None, folder=tmp_path)
    assert replay.recorded_names("demo", "smoke", tmp_path) == ["a", "b"]
    trained = []

    def fit(name):
        trained.append(name)
        return History(losses=[2.0], steps=1, total_steps=1, epochs=1.0, wall_time_s=1.0)

    got = {n: replay.train_or_replay("demo", n, torch.nn.Linear(3, 2), cfg, lambda n=n: fit(n), ["a"], keep=None,
                                     folder=tmp_path) for n in ("a", "b")}
    assert trained == ["b"] and got["a"].replayed and not got["b"].replayed
    with pytest.raises(replay.ReplayError, match=r"REPLAY names 'c', but demo has no recorded training of that name "
                                                 r"at the smoke profile; it has: a, b"):
        replay.train_or_replay("demo", "a", torch.nn.Linear(3, 2), cfg, lambda: fit("a"), ["a", "c"], keep=None,
                               folder=tmp_path)
    assert trained == ["b"]  # nothing trained before the error


def test_a_replay_list_trains_what_its_recording_cannot_stand_for_and_says_why(tmp_path, capsys):
    """A notebook's default list must not stop a learner who changes a knob or the seed, nor a profile with no
    recording (CI's smoke runs): those trainings run here, each with a line that says why; a pattern replays every
    training it matches."""
    cfg = sslkit.make_config("smoke")
    for name in ("simclr_t0.1", "simclr_t0.2", "moco"):
        replay.record("demo", name, torch.nn.Linear(3, 2), cfg, History(losses=[1.0], steps=1, total_steps=1,
                                                                         epochs=1.0, wall_time_s=1.0),
                      keep=None, folder=tmp_path)
    trained = []

    def fit(name):
        trained.append(name)
        return History(losses=[2.0], steps=1, total_steps=1, epochs=1.0, wall_time_s=1.0)

    def go(name, config):
        return replay.train_or_replay("demo", name, torch.nn.Linear(3, 2), config, lambda: fit(name),
                                      ["simclr_*"], keep=None, folder=tmp_path)

    assert go("simclr_t0.1", cfg).replayed and go("simclr_t0.2", cfg).replayed and not go("moco", cfg).replayed
    assert trained == ["moco"] and "moco" not in capsys.readouterr().out  # not named: trained without a word
    assert not go("simclr_t0.1", sslkit.make_config("smoke", seed=1)).replayed
    assert "simclr_t0.1: REPLAY names it, but its recorded run was trained with other values than yours (seed: " \
           "recorded 0, yours 1): training it here" in capsys.readouterr().out
    assert not go("simclr_t0.1", dataclasses.replace(cfg, profile="lesson")).replayed  # ($SSLKIT_PROFILE pins smoke)
    assert "no run of it is recorded at the lesson profile" in capsys.readouterr().out
    assert trained == ["moco", "simclr_t0.1", "simclr_t0.1"]


@pytest.mark.skipif(not COMMITTED.exists(), reason="no replay is committed yet (results/replay/MANIFEST.json)")
def test_the_committed_replays_match_their_checksums():
    manifest = json.loads(COMMITTED.read_text())
    files = {p.name for p in replay.REPLAY_DIR.glob("*.pt")}
    assert files == set(manifest), "every committed replay is listed in MANIFEST.json, and only those"
    for name, entry in manifest.items():
        path = replay.REPLAY_DIR / name
        assert path.stat().st_size == entry["bytes"] and replay.sha256(path) == entry["sha256"], name


def _committed_lesson_replays():
    if not COMMITTED.exists():
        return []
    return sorted(n for n in json.loads(COMMITTED.read_text()) if n.endswith(".lesson.pt"))


@pytest.mark.parametrize("name", _committed_lesson_replays())
def test_a_committed_lesson_replay_gives_the_recorded_evaluation(name):
    """The weights of a committed replay, loaded into the network its recipe builds, give the kNN accuracy and
    linear probe that the run which trained them wrote into results/replay/<notebook>.lesson.trained.json."""
    from sslkit.evaluate import evaluate_backbone
    from sslkit.recipes import RECIPES, build

    notebook, rest = name[:-len(".pt")].split(".", 1)
    run, profile = rest.rsplit(".", 1)  # a run's name may hold a dot (simclr_t0.05)
    state = torch.load(replay.REPLAY_DIR / name, map_location="cpu", weights_only=True)
    saved = json.loads(state["config"])
    cfg = sslkit.Config(**{k: v for k, v in saved.items() if k != "extra"}, extra=saved["extra"])  # as recorded
    method = build(RECIPES[cfg.recipe]["method"], cfg)
    history = replay.load(notebook, run, method, cfg, folder=replay.REPLAY_DIR)  # not the session's smoke folder
    run_file = json.loads((replay.REPLAY_DIR / f"{notebook}.{profile}.trained.json").read_text())  # what saved them
    recorded = run_file["metrics"]
    assert history.steps == recorded[f"steps_{run}"]
    train_data, test_data = sslkit.load_split(cfg, "train"), sslkit.load_split(cfg, "test")
    # bit for bit on the recording's kind of CPU, evaluated with the recording's torch threads (make test's workers
    # run with fewer); on a CPU whose torch kernels use other vector instructions (AVX2 against the recordings'
    # AVX-512: docs/test_suite.md) the probe's optimisation rounds differently and 1 or 2 of the 2,000 test images
    # change sides; files from before cpu_capability was recorded count as another kind of CPU here
    same_cpu = run_file["hardware"].get("cpu_capability") == torch.backends.cpu.get_cpu_capability()
    with torch_threads(run_file["hardware"]["torch_threads"] if same_cpu else None):
        metrics = evaluate_backbone(method.backbone, train_data, test_data, prefix=run, seed=cfg.seed)
    assert metrics[f"knn_{run}"] == recorded[f"knn_{run}"]
    if f"linear_{run}" in recorded:  # (notebook 02's batch-size runs record their kNN only)
        assert abs(metrics[f"linear_{run}"] - recorded[f"linear_{run}"]) <= (0 if same_cpu else 3 / len(test_data))


# ---------------------------------------------------------------------------------------------------------------
# what a replay refuses, and how it says so


def _recorded(tmp_path, **cfg_values):
    cfg = sslkit.make_config("smoke", **cfg_values)
    net = torch.nn.Linear(3, 2)
    history = History(losses=[1.0, 0.5], steps=2, total_steps=2, epochs=1.0, wall_time_s=1.0)
    replay.record("demo", "net", net, cfg, history, keep=None, log={"curve": [1, 2]}, folder=tmp_path)
    return cfg, net


def test_a_replay_restores_weights_log_and_random_state(tmp_path):
    torch.manual_seed(5)
    cfg, net = _recorded(tmp_path)
    after = torch.rand(3)  # what the cells after the recorded training drew
    torch.manual_seed(99)
    other, log = torch.nn.Linear(3, 2), {}
    history = replay.load("demo", "net", other, cfg, log=log, folder=tmp_path)
    assert history.replayed and history.losses == [1.0, 0.5] and log == {"curve": [1, 2]}
    assert torch.equal(other.weight, net.weight) and torch.equal(torch.rand(3), after)


def test_a_changed_replay_file_is_refused_with_its_fix(tmp_path):
    cfg, _ = _recorded(tmp_path)
    path = replay.replay_path("demo", "net", "smoke", tmp_path)
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(replay.ReplayError, match=r"does not match the sha256.*REPLAY = False"):
        replay.load("demo", "net", torch.nn.Linear(3, 2), cfg, folder=tmp_path)


def test_a_missing_replay_says_which_profile_has_one(tmp_path):
    cfg = sslkit.make_config("smoke")
    with pytest.raises(replay.ReplayError, match=r"no recorded training to replay at the smoke profile.*lesson"):
        replay.load("demo", "net", torch.nn.Linear(3, 2), cfg, folder=tmp_path)


def test_a_replay_recorded_with_other_values_names_them(tmp_path):
    _recorded(tmp_path, lr=0.1)
    with pytest.raises(replay.ReplayError, match=r"lr: recorded 0.1, yours 0.2"):
        replay.load("demo", "net", torch.nn.Linear(3, 2), sslkit.make_config("smoke", lr=0.2), folder=tmp_path)


def test_a_replay_of_another_network_names_the_mismatch(tmp_path):
    cfg, _ = _recorded(tmp_path)
    with pytest.raises(replay.ReplayError, match=r"shape mismatches"):
        replay.load("demo", "net", torch.nn.Linear(4, 2), cfg, folder=tmp_path)


@pytest.mark.parametrize("value", ["yes", 1, 0, "True", [], [1], ["byol", ""]])
def test_the_replay_switch_takes_three_values_or_a_list_of_names(value):
    with pytest.raises(ValueError, match=r"choose False \(train\), True .*, a list of their names .* or \"record\""):
        replay.check_mode(value)
    assert [replay.check_mode(v) for v in (None, False, True, "record", ["byol"], ("a", "b"))] == [
        False, False, True, "record", ("byol",), ("a", "b")]


# ---------------------------------------------------------------------------------------------------------------
# the classroom run: a notebook replayed at the lesson profile, alone on the recording machine


def _header(notebook: str) -> str:
    """The first cell of ``notebooks/<notebook>.ipynb``, its white space folded to single spaces."""
    nb = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())
    return re.sub(r"\s+", " ", "".join(nb["cells"][0]["source"]))


REPLAYED_RUNS = sorted(replay.REPLAY_DIR.glob("*.lesson.replayed.json"))


@pytest.mark.parametrize("path", REPLAYED_RUNS, ids=lambda p: p.name[:2])
def test_a_replayed_lesson_run_gave_the_recorded_lesson_numbers(path):
    """results/replay/NN.lesson.replayed.json is the notebook run at the lesson profile with REPLAY = True: every
    metric but the clock readings equals the recorded lesson run's, each training was replayed, and the header's
    Time paragraph gives its time ("with REPLAY = True ... about N minutes", within 0.7-1.3x)."""
    notebook = path.name.split(".")[0]
    replayed = json.loads(path.read_text())
    recorded = json.loads((ROOT / "results" / f"{notebook}.lesson.json").read_text())["metrics"]
    numbers = {k for k in recorded if not TIMING.search(k)}
    assert {k: replayed["metrics"].get(k) for k in numbers} == {k: recorded[k] for k in numbers}
    trainings = {k[len("train_s_"):] for k in recorded if k.startswith("train_s_")}
    assert {k for k in replayed["metrics"] if k.startswith("replayed_")} == {f"replayed_{n}" for n in trainings}
    header = _header(notebook)
    said = re.search(r"with `REPLAY = True`[^.]*?about (\d+(?:\.\d+)?) (minutes?|s)\b", header)
    assert said, f"{notebook}: the header's Time paragraph does not say how long the replayed lesson takes"
    seconds = float(said.group(1)) * (60 if said.group(2).startswith("minute") else 1)
    assert 0.7 * seconds <= replayed["wall_time_s"] <= 1.3 * seconds, (said.group(0), replayed["wall_time_s"])


TRAINED_RUNS = sorted(replay.REPLAY_DIR.glob("*.lesson.trained.json"))


@pytest.mark.parametrize("path", TRAINED_RUNS, ids=lambda p: p.name[:2])
def test_the_lesson_run_gives_the_numbers_of_the_run_that_trained_everything(path):
    """results/NN.lesson.json is the notebook as a class runs it (its own method trained, the comparisons replayed);
    results/replay/NN.lesson.trained.json is the same seed with every training trained (REPLAY = "record", the run
    that saved the replays). Every number agrees: the live training gave its recorded one bit for bit (same seed,
    same kind of CPU), and the replayed ones are those trainings. The lesson run marks exactly the comparisons as
    replayed, and the run that trained everything took longer."""
    notebook = path.name.split(".")[0]
    trained = json.loads(path.read_text())
    lesson = json.loads((ROOT / "results" / f"{notebook}.lesson.json").read_text())
    assert trained["config"]["seed"] == lesson["config"]["seed"] == 0
    assert trained["hardware"]["cpu_capability"] == lesson["hardware"]["cpu_capability"]
    numbers = {k for k in trained["metrics"] if not TIMING.search(k)}
    assert {k: lesson["metrics"].get(k) for k in numbers} == {k: trained["metrics"][k] for k in numbers}
    trainings = {k[len("train_s_"):] for k in trained["metrics"] if k.startswith("train_s_")}
    assert not any(k.startswith("replayed_") for k in trained["metrics"])
    assert {n for n in trainings if lesson["metrics"].get(f"replayed_{n}")} == trainings - LIVE[notebook]
    assert lesson["wall_time_s"] < trained["wall_time_s"]
    header = _header(notebook)
    said = re.search(r"`REPLAY = False` trains [^.]*?about (\d+) minutes", header)
    assert said, f"{notebook}: the header's Time paragraph does not say how long training everything takes"
    assert 0.7 * float(said.group(1)) <= trained["wall_time_s"] / 60 <= 1.3 * float(said.group(1)), said.group(0)


@pytest.mark.parametrize("path", WITH_REPLAY, ids=lambda p: p.name[:2])
def test_each_replay_says_the_training_time_of_the_recorded_run(path):
    """A replayed training prints how long it trained where it was recorded: the ``train_s_<name>`` of the run that
    trained every training and saved the replays (``replay.retime`` sets it), which the lesson run then quotes for
    each training it replayed."""
    recorded = json.loads((replay.REPLAY_DIR / f"{path.stem}.lesson.trained.json").read_text())["metrics"]
    lesson = json.loads((ROOT / "results" / f"{path.stem}.lesson.json").read_text())["metrics"]
    for name in replay.recorded_names(path.stem, "lesson"):
        history = json.loads(torch.load(replay.replay_path(path.stem, name, "lesson"), weights_only=True)["history"])
        assert history["steps"] == recorded[f"steps_{name}"], name
        assert history["wall_time_s"] == pytest.approx(recorded[f"train_s_{name}"], abs=0.05), name
        if lesson.get(f"replayed_{name}"):
            assert lesson[f"train_s_{name}"] == pytest.approx(history["wall_time_s"], abs=0.05), name


def test_every_notebook_with_a_replay_switch_has_its_lesson_replays_committed():
    if not COMMITTED.exists():
        pytest.fail("results/replay/MANIFEST.json is missing: REPLAY = True would fail at the lesson profile")
    committed = set(json.loads(COMMITTED.read_text()))
    for path in WITH_REPLAY:
        recorded = json.loads((ROOT / "results" / f"{path.stem}.lesson.json").read_text())["metrics"]
        trainings = {k[len("train_s_"):] for k in recorded if k.startswith("train_s_")}
        missing = sorted(n for n in trainings if f"{path.stem}.{n}.lesson.pt" not in committed)
        assert not missing, f"{path.name}: no committed replay of {missing}"


def test_retime_gives_a_replay_the_recorded_runs_clock_only_for_the_same_steps(tmp_path):
    cfg, _ = _recorded(tmp_path)  # wall_time_s 1.0 s, 2 steps
    results = tmp_path / "demo.smoke.json"
    results.write_text(json.dumps({"metrics": {"train_s_net": 0.5, "steps_net": 2}}))
    assert replay.retime("demo", "smoke", results, folder=tmp_path) == ["net"]
    history = replay.load("demo", "net", torch.nn.Linear(3, 2), cfg, folder=tmp_path)  # the checksum was renewed
    assert history.wall_time_s == 0.5 and history.losses == [1.0, 0.5]
    results.write_text(json.dumps({"metrics": {"train_s_net": 0.5, "steps_net": 3}}))
    with pytest.raises(replay.ReplayError, match="took 2 steps"):
        replay.retime("demo", "smoke", results, folder=tmp_path)
