"""The committed results (results/) back the README and the notebooks' claims; check them against the targets.

These files come from real runs (`python -m sslkit.bench NAME > results/bench/NAME.json`, notebooks at the lesson
profile); a test here fails when a re-run misses a target or a file goes missing.
"""
import json
from pathlib import Path

import pytest

from sslkit.results import load_results

RESULTS = Path(__file__).parents[1] / "results"


def _bench(name):
    path = RESULTS / "bench" / f"{name}.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `python -m sslkit.bench {name} > {path.relative_to(RESULTS.parent)}`")
    return json.loads(path.read_text())


def test_dataset_generation_speed():
    assert _bench("generate")["generate_10k_s"] <= 5.0


def test_dataset_calibration():
    b = _bench("dataset")  # its own generation time is informational: it may run on a busy machine
    assert b["knn_raw_pixels"] <= 0.25 and b["knn_random_init"] <= 0.25
    assert b["knn_supervised"] >= 0.95


def test_welcome_lesson_results():
    r = load_results(RESULTS / "00_welcome.lesson.json")
    assert r["profile"] == "lesson"
    assert r["metrics"]["knn_raw_pixels"] <= 0.25
