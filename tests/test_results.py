import json
import math
import os

import pytest

from sslkit.config import make_config
from sslkit.results import REQUIRED_KEYS, Results, is_complete, load_results


def test_results_file_has_every_key_and_reads_back(tmp_path):
    path = tmp_path / "sub" / "r.json"
    res = Results("00_welcome", make_config("smoke"), path)
    res.record("knn_raw_pixels", 0.16)
    res.update({"a": 1, "b": 2.5})
    data = load_results(path)
    assert set(REQUIRED_KEYS) <= set(data)
    assert data["metrics"] == {"knn_raw_pixels": 0.16, "a": 1, "b": 2.5}
    assert data["config"]["profile"] == "smoke" and data["versions"]["torch"]
    assert data["hardware"]["cpu_cores"] >= 1 and data["wall_time_s"] >= 0
    assert data["hardware"]["cpu_capability"] in {"DEFAULT", "VSX", "ZVECTOR", "SVE", "SVE256", "AVX2", "AVX512"}


def test_a_results_file_looks_finished_only_after_save(tmp_path):
    """Until the run's last step calls save(), the file says "complete": false: a run that stopped half-way (or
    one still running) keeps what it measured without passing for a finished run. Older files count as finished."""
    path = tmp_path / "r.json"
    res = Results("x", {"profile": "smoke"}, path)
    assert load_results(path)["complete"] is False
    res.update({"a": 1})
    assert not is_complete(load_results(path)) and load_results(path)["metrics"] == {"a": 1}
    assert res.save() == path and is_complete(load_results(path))
    legacy = json.loads(path.read_text())
    del legacy["complete"]
    assert is_complete(legacy)


def test_a_reference_run_another_process_is_recording_is_not_quoted(tmp_path, monkeypatch):
    """A notebook that reads the committed reference while another process re-records it (its file not complete
    yet) gets None (no comparison) rather than the half-written run; an unfinished seed file is left out too."""
    import sslkit.results as results_module

    monkeypatch.setattr(results_module, "RECORDED", tmp_path)
    monkeypatch.setattr(results_module, "_REPLACED", {})
    done = Results("02_contrastive", {"profile": "lesson", "seed": 0}, tmp_path / "02_contrastive.lesson.json")
    done.update({"knn_simclr": 0.7})
    done.save()
    running = Results("02_contrastive", {"profile": "lesson", "seed": 1},
                      tmp_path / "seeds" / "02_contrastive.lesson.seed1.json")
    running.update({"knn_simclr": 0.1})
    assert list(results_module.recorded_seeds("02_contrastive")) == [0]
    unfinished = json.loads((tmp_path / "02_contrastive.lesson.json").read_text())
    unfinished["complete"] = False  # as another process's recording leaves it half-way
    (tmp_path / "02_contrastive.lesson.json").write_text(json.dumps(unfinished))
    assert results_module.recorded_metrics("02_contrastive") is None


def test_non_finite_or_non_numeric_metrics_are_refused(tmp_path):
    res = Results("x", {"profile": "smoke"}, tmp_path / "r.json")
    with pytest.raises(ValueError, match="diverged"):
        res.record("loss", math.nan)
    with pytest.raises(TypeError, match="must be a number"):
        res.record("name", "high")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_path_fails_before_any_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(PermissionError, match="not writable.*set RESULTS_PATH"):
        Results("x", {"profile": "smoke"}, locked / "r.json")


def test_path_under_a_file_fails_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="not writable.*set RESULTS_PATH"):
        Results("x", {"profile": "smoke"}, blocker / "r.json")


def test_load_results_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        load_results(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"notebook": "x", "metrics": {}}))
    with pytest.raises(ValueError, match="lacks the keys"):
        load_results(bad)


def test_re_recording_a_reference_run_compares_with_the_run_it_replaces(tmp_path, monkeypatch):
    """A lesson re-recorded into results/ reads, as its reference, the run it replaces, not its own half-written file."""
    import sslkit.results as results_module

    monkeypatch.setattr(results_module, "RECORDED", tmp_path)
    monkeypatch.setattr(results_module, "_REPLACED", {})
    old = results_module.Results("01_pretext", {"profile": "lesson"}, tmp_path / "01_pretext.lesson.json")
    old.record("knn_jigsaw", 0.305)
    old.save()
    assert results_module.recorded_metrics("01_pretext") == {"knn_jigsaw": 0.305}
    new = results_module.Results("01_pretext", {"profile": "lesson"}, tmp_path / "01_pretext.lesson.json")
    new.record("knn_rotation", 0.6)
    assert results_module.recorded_metrics("01_pretext") == {"knn_jigsaw": 0.305}  # the run before
    assert results_module.load_results(new.path)["metrics"] == {"knn_rotation": 0.6}


def test_seed_spread_gives_the_range_over_the_recorded_seeds(tmp_path, monkeypatch):
    """The "what you just saw" cells quote how the lesson run varies with the seed: seed 0 from results/, the other
    seeds from results/seeds/; nothing when there is no second seed, or when one seed lacks the metric."""
    import sslkit.results as results_module

    monkeypatch.setattr(results_module, "RECORDED", tmp_path)
    monkeypatch.setattr(results_module, "_REPLACED", {})
    keys = {"SimCLR kNN": "knn_simclr", "MoCo kNN": "knn_moco"}
    reference = Results("02_contrastive", {"profile": "lesson", "seed": 0}, tmp_path / "02_contrastive.lesson.json")
    reference.update({"knn_simclr": 0.7135, "knn_moco": 0.4})
    reference.save()
    assert results_module.seed_spread("02_contrastive", keys) == ""  # one run: no spread
    for seed, simclr, moco in ((2, 0.69, 0.45), (1, 0.725, 0.38)):
        run = Results("02_contrastive", {"profile": "lesson", "seed": seed},
                      tmp_path / "seeds" / f"02_contrastive.lesson.seed{seed}.json")
        run.update({"knn_simclr": simclr, "knn_moco": moco})
        run.save()
    assert list(results_module.recorded_seeds("02_contrastive")) == [0, 1, 2]
    assert results_module.seed_spread("02_contrastive", keys) == \
        "the lesson run on seeds 0-2: SimCLR kNN 0.690 to 0.725, MoCo kNN 0.380 to 0.450"
    assert results_module.seed_spread("02_contrastive", {"kNN": "knn_simclr"}, digits=2) == \
        "the lesson run on seeds 0-2: kNN 0.69 to 0.72"
    assert results_module.seed_spread("02_contrastive", {"kNN": "knn_simclr", "other": "knn_byol"}) == ""
    assert results_module.seed_spread("03_non_contrastive", keys) == ""  # another notebook's seeds are not these
