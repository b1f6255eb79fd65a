"""python -m sslkit.record: the runs it plans, the order that lets a notebook load what another saved, its refusals.

The notebook runs themselves are papermill's (tests/test_notebooks.py runs every notebook); here ``run_notebook`` is
replaced by a stand-in that notes each call and writes what the notebook would (its results file, a checkpoint).
"""

import json
import shutil
from pathlib import Path

import pytest

from sslkit import nbtools, record

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A project folder with the real notebooks and nothing recorded."""
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks",
                    ignore=shutil.ignore_patterns("checkpoints", "results", "runs", ".ipynb_checkpoints"))
    monkeypatch.setattr(record, "ROOT", tmp_path)
    monkeypatch.setattr(record, "host", lambda: {"cpu_capability": "TEST", "matmul_gflops": 1.0, "load_1min": 0.0})
    return tmp_path


@pytest.fixture
def calls(monkeypatch):
    """The runs main() starts: each writes its results file and, for 02 and 04, the model it saves."""
    made = []

    def run_notebook(path, output_path, parameters, cwd, timeout):
        made.append((Path(path).stem, parameters.get("SEED", 0), parameters.get("REPLAY"), Path(cwd)))
        assert not (Path(cwd) / "stale.txt").exists(), "a seed's copy of notebooks/ was not made fresh"
        saves = {"02_contrastive": "simclr_backbone", "04_masked": "mae_vit"}.get(Path(path).stem)
        if saves:
            (Path(cwd) / "checkpoints").mkdir(exist_ok=True)
            (Path(cwd) / "checkpoints" / f"{saves}.{parameters['PROFILE']}.pt").write_text("weights")
        (Path(cwd) / parameters["RESULTS_PATH"]).write_text(json.dumps({"complete": True}))  # papermill's --cwd
        Path(output_path).write_text("{}")

    monkeypatch.setattr(nbtools, "run_notebook", run_notebook)
    return made


def test_other_seeds_run_first_each_in_a_fresh_copy_then_seed_0_with_its_replays(root, calls, capsys):
    stale = root / ".record" / "seed1" / "notebooks"
    stale.mkdir(parents=True)
    (stale / "stale.txt").write_text("a checkpoint of an earlier recording")
    assert record.main(["07", "02_contrastive", "--seeds", "0", "1", "--profile", "smoke"]) == 0
    # 02 (a REPLAY switch): another seed trains everything; seed 0 trains and saves the replays, then runs as a
    # class does (the notebook's own REPLAY: None here, no parameter passed), then replays everything
    assert [c[:3] for c in calls] == [("02_contrastive", 1, False), ("07_finetune", 1, None),
                                      ("02_contrastive", 0, "record"), ("02_contrastive", 0, None),
                                      ("02_contrastive", 0, True), ("07_finetune", 0, None)]
    assert {c[3] for c in calls} == {root / ".record" / "seed1" / "notebooks", root / "notebooks"}
    for name in ("seeds/02_contrastive.smoke.seed1.json", "seeds/07_finetune.smoke.seed1.json",
                 "replay/02_contrastive.smoke.trained.json", "02_contrastive.smoke.json",
                 "replay/02_contrastive.smoke.replayed.json", "07_finetune.smoke.json"):
        assert (root / "results" / name).exists(), name
    assert (root / "results" / "executed" / "07_finetune.smoke.ipynb").exists()
    assert "host:" in capsys.readouterr().out


def test_dry_run_prints_the_papermill_commands_and_runs_nothing(root, calls, capsys):
    assert record.main(["09", "02", "--seeds", "2", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6 and not calls and not (root / "results").exists()
    # results paths relative to the notebook's folder, as a stored run must name them on any clone (sslkit.book)
    assert out[0].endswith("-p PROFILE lesson -p SEED 2 -p REPLAY False -p RESULTS_PATH "
                           "../../../results/seeds/02_contrastive.lesson.seed2.json")
    assert "--cwd .record/seed2/notebooks" in out[1] and "09_deploy" in out[1]
    assert "-p REPLAY record -p RESULTS_PATH ../results/replay/02_contrastive.lesson.trained.json" in out[2]
    assert out[3].endswith("-p PROFILE lesson -p RESULTS_PATH ../results/02_contrastive.lesson.json")
    assert "-p REPLAY True" in out[4] and "09_deploy" in out[5]


def test_keep_replays_runs_the_lesson_with_the_committed_replays_and_refuses_without_them(root, calls, capsys):
    assert record.main(["02", "--keep-replays"]) == 2
    assert "02_contrastive has no replays at the lesson profile" in capsys.readouterr().err and not calls
    saved = root / "results" / "replay"
    saved.mkdir(parents=True)
    (saved / "02_contrastive.moco.lesson.pt").write_text("weights")
    assert record.main(["02", "--keep-replays", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "REPLAY" not in out[0] and "-p REPLAY True" in out[1]


@pytest.mark.parametrize("argv, says", [
    (["06", "--seeds", "1"], "06_gradcam with seed 1 loads what 02_contrastive and 04_masked saved with that seed"),
    (["07"], "07_finetune with seed 0 loads what 02_contrastive saved"),  # no seed-0 checkpoint here yet
    (["2x"], "no notebook '2x'; choose from: 00_welcome,"),
    (["02", "--seeds", "1", "1"], "give distinct whole numbers >= 0"),
    (["02", "--profile", "huge"], "unknown profile 'huge'"),
    (["02", "--seeds", "-1"], "give distinct whole numbers >= 0"),
])
def test_what_cannot_be_recorded_is_refused_with_how_to_fix_it(root, calls, capsys, argv, says):
    assert record.main(argv) == 2
    assert says in capsys.readouterr().err and not calls


def test_a_seed_0_notebook_loads_the_checkpoint_an_earlier_recording_left(root, calls):
    (root / "notebooks" / "checkpoints").mkdir()
    (root / "notebooks" / "checkpoints" / "simclr_backbone.lesson.pt").write_text("weights")
    assert record.main(["07"]) == 0
    assert [c[:2] for c in calls] == [("07_finetune", 0)]


def test_a_busy_machine_is_refused_unless_allowed(root, calls, capsys, monkeypatch):
    monkeypatch.setattr(record, "host", lambda: {"cpu_capability": "TEST", "matmul_gflops": 1.0, "load_1min": 3.5})
    assert record.main(["02", "--profile", "smoke"]) == 2
    assert "load average is 3.5" in capsys.readouterr().err and not calls
    assert record.main(["02", "--profile", "smoke", "--allow-busy"]) == 0 and len(calls) == 3


def test_the_first_failure_stops_the_runs_after_it(root, monkeypatch, capsys):
    started = []

    def fails(path, output_path, parameters, cwd, timeout):
        started.append(Path(path).stem)
        raise nbtools.NotebookError("02_contrastive.ipynb: cell 7 failed")

    monkeypatch.setattr(nbtools, "run_notebook", fails)
    assert record.main(["02", "07", "--seeds", "1", "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert started == ["02_contrastive"] and "02_contrastive seed 1 failed; the runs after it were not started" in err
    assert "cell 7 failed" in err


def test_host_reports_what_a_recordings_times_depend_on():
    from sslkit.results import hardware
    h = record.host()
    assert h["cpu_capability"] == hardware()["cpu_capability"] and h["torch_threads"] >= 1
    assert h["matmul_gflops"] > 0 and h["load_1min"] >= 0
