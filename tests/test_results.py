import json
import math
import os

import pytest

from sslkit.config import make_config
from sslkit.results import REQUIRED_KEYS, Results, load_results


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
    assert results_module.recorded_metrics("01_pretext") == {"knn_jigsaw": 0.305}
    new = results_module.Results("01_pretext", {"profile": "lesson"}, tmp_path / "01_pretext.lesson.json")
    new.record("knn_rotation", 0.6)
    assert results_module.recorded_metrics("01_pretext") == {"knn_jigsaw": 0.305}  # the run before
    assert results_module.load_results(new.path)["metrics"] == {"knn_rotation": 0.6}
