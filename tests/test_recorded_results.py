"""The committed results (results/) back the README and the notebooks' claims; check them against the targets.

These files come from real runs (`python -m sslkit.bench NAME > results/bench/NAME.json`, notebooks at the lesson
profile); a test here fails when a re-run misses a target or a file goes missing.
"""
import json
import re
from pathlib import Path

import pytest

from sslkit.results import is_complete, load_results

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


def test_batched_augmentation_speed():
    b = _bench("augment")  # issue 4: the batched views at least 5x lightly's SimCLRTransform on PIL images
    assert b["ratio"] >= 5.0 and b["image_size"] == 32 and b["views_per_image"] == 2


def test_ssl_epoch_speed():
    b = _bench("ssl_epoch")  # issue 4: a SimCLR epoch at least 2x lightly's DataLoader path
    assert b["ratio"] >= 2.0 and b["lightly_num_workers"] == 2


def test_eval_benchmark_recorded():
    b = _bench("eval")  # issue 3: features, kNN and linear probe on 10,000 + 2,000 images (informational time)
    assert b["num_train"] == 10_000 and b["num_test"] == 2_000 and b["knn_random_init"] <= 0.25
    assert b["raw_pixels_dim"] == 3 * 32 * 32 and b["linear_raw_pixels"] <= 0.3  # the lessons' baseline, timed too


def test_welcome_lesson_results():
    r = load_results(RESULTS / "00_welcome.lesson.json")
    assert r["profile"] == "lesson"
    assert r["metrics"]["knn_raw_pixels"] <= 0.25


def _lesson(name):
    path = RESULTS / f"{name}.lesson.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: run notebooks/{name}.ipynb at the lesson profile with RESULTS_PATH={path}")
    r = load_results(path)
    assert r["profile"] == "lesson"
    return r["metrics"], r["wall_time_s"]


SEEDS = RESULTS / "seeds"  # the same lesson run with other seeds: <notebook>.lesson.seed<N>.json


def _seed_runs(name):
    """The metrics of every recorded run of notebook ``name`` at lesson: seed 0 (``results/``) and the other seeds
    recorded in ``results/seeds/`` (issue 21: every headline target holds for each seed)."""
    runs = {0: _lesson(name)[0]}
    for path in sorted(SEEDS.glob(f"{name}.lesson.seed*.json")):
        r = load_results(path)
        seed = int(re.search(r"seed(\d+)\.json$", path.name).group(1))
        assert r["profile"] == "lesson" and r["config"]["seed"] == seed, path
        runs[seed] = r["metrics"]
    return runs


def test_every_recorded_lesson_run_trained_its_plan():
    """Issue 21: the recorded runs are planned in epochs; no time budget cut any of their trainings short; each
    recording ran to its end."""
    paths = sorted(RESULTS.glob("[0-9][0-9]_*.lesson.json")) + sorted(SEEDS.glob("*.json"))
    for path in paths:
        r = load_results(path)
        assert "cut_short" not in r and not any(k.startswith("cut_short_") for k in r["metrics"]), path
        assert not r["config"].get("time_budget_s"), path
        assert is_complete(r), f"{path}: a recording that had not finished (\"complete\": false) was committed"


def test_pretext_lesson_results():
    m, wall = _lesson("01_pretext")  # seed 0, the run the text quotes
    assert m["knn_raw_pixels"] <= 0.25 and m["knn_random_init"] <= 0.25
    for task in ("rotation", "jigsaw"):  # issue 3's target: both pretext tasks 15 points over both baselines
        assert m[f"knn_{task}"] >= max(m["knn_raw_pixels"], m["knn_random_init"]) + 0.15, task
    assert wall <= 300


def test_pretext_targets_hold_on_every_recorded_seed():
    runs = _seed_runs("01_pretext")
    assert set(runs) == {0, 1, 2}
    for seed, m in runs.items():
        assert m["knn_raw_pixels"] <= 0.25 and m["knn_random_init"] <= 0.25
        # issue 3's target: both pretext tasks 15 points over both baselines, on every recorded seed
        for task in ("rotation", "jigsaw"):
            assert m[f"knn_{task}"] >= max(m["knn_raw_pixels"], m["knn_random_init"]) + 0.15, (seed, task)
            assert m[f"epochs_{task}"] == 6, (seed, task)


def test_contrastive_lesson_results():
    m, _ = _lesson("02_contrastive")
    assert m["knn_raw_pixels"] <= 0.25 and m["knn_random_init"] <= 0.25
    # issue 21's targets: SimCLR at least 0.72 in its 40 epochs (the header: about 8 minutes); MoCo within 10 points
    assert m["knn_simclr"] >= 0.72 and m["knn_moco"] > max(m["knn_raw_pixels"], m["knn_random_init"])
    assert m["knn_simclr_no_color_jitter"] < m["knn_simclr"]  # the colour shortcut costs accuracy
    assert m["knn_moco"] >= m["knn_simclr"] - 0.10  # section 5: with the symmetric loss MoCo keeps up with SimCLR
    assert m["epochs_simclr"] == m["epochs_moco"] == 40 and m["train_s_simclr"] <= 600


def test_non_contrastive_lesson_results():
    """What notebook 03's header says of its committed run: issue 4's +30 points over both baselines, met by every
    method of 03."""
    m, _ = _lesson("03_non_contrastive")
    base = max(m["knn_raw_pixels"], m["knn_random_init"])
    assert base <= 0.25
    methods = ("byol", "simsiam", "dino", "barlowtwins", "vicreg")
    for key in ("knn_simsiam_no_stopgrad", "std_simsiam", "std_simsiam_no_stopgrad", *(f"knn_{k}" for k in methods)):
        assert key in m
    assert min(m[f"knn_{k}"] for k in methods) >= base + 0.30
    # SimSiam's predictions (128-d) stay spread with the stop-gradient and collapse without it (std x sqrt(d))
    assert m["std_prediction_simsiam"] * 128**0.5 > 0.5 and m["std_prediction_simsiam_no_stopgrad"] * 128**0.5 < 0.2
    assert m["knn_simsiam_no_stopgrad"] <= base < m["knn_simsiam"]  # kNN falls to the baselines without it
    # planned, not timed: every method its 40 epochs, the run without the stop-gradient its 10 (it only has to show
    # the collapse); no time budget cut any run short
    assert all(m[f"epochs_{k}"] == 40 for k in methods)
    assert m["epochs_simsiam_no_stopgrad"] == 10 and not any(k.startswith("cut_short_") for k in m)
    # the header quotes the committed run: its numbers must be the recorded ones
    header = " ".join(json.loads((RESULTS.parent / "notebooks" / "03_non_contrastive.ipynb").read_text())["cells"][0]["source"])
    quoted = re.search(r"SimSiam reaches kNN ([\d.]+) \(linear probe ([\d.]+)\), BYOL ([\d.]+) \(([\d.]+)\), VICReg "
                       r"([\d.]+), Barlow\s+Twins ([\d.]+) and\s+DINO ([\d.]+)", header)
    assert quoted, "notebook 03's header no longer quotes the committed run's kNN accuracies"
    recorded = (m["knn_simsiam"], m["linear_simsiam"], m["knn_byol"], m["linear_byol"], m["knn_vicreg"],
                m["knn_barlowtwins"], m["knn_dino"])
    assert [float(q) for q in quoted.groups()] == pytest.approx(recorded, abs=0.0051)
    collapse = re.search(r"std x sqrt\(d\) ([\d.]+)\), without it they collapse to a\s+constant \(([\d.]+)\)", header)
    assert collapse and [float(q) for q in collapse.groups()] == pytest.approx(
        [m["std_prediction_simsiam"] * 128**0.5, m["std_prediction_simsiam_no_stopgrad"] * 128**0.5], abs=0.0051)


# Issue 21's headline targets, checked on every recorded seed (results/ is seed 0, results/seeds/ the others)
def _base(m):
    return max(m["knn_raw_pixels"], m["knn_random_init"])


SEED_TARGETS = {
    "02_contrastive": lambda m: m["knn_simclr"] >= _base(m) + 0.30 and m["knn_simclr_no_color_jitter"] < m["knn_simclr"]
    and m["knn_moco"] > _base(m),
    "03_non_contrastive": lambda m: all(m[f"knn_{k}"] >= _base(m) + 0.30
                                        for k in ("byol", "simsiam", "dino", "barlowtwins", "vicreg"))
    and m["std_prediction_simsiam"] * 128**0.5 > 0.5 and m["std_prediction_simsiam_no_stopgrad"] * 128**0.5 < 0.2,
    "04_masked": lambda m: m["finetune_mae_10pct"] >= m["finetune_scratch_10pct"] + 0.10,
    "06_gradcam": lambda m: m["cam_in_mask_ssl"] >= 1.5 * m["cam_in_mask_random_init"],
    "07_finetune": lambda m: m["acc_ssl_finetune_10"] >= m["acc_scratch_10"] + 0.20,
}


# measured misses of issue 21's targets on a recorded seed, each a strict xfail that must go once the recipes meet
# the target on every seed; none since BYOL trains in batches of 64 (2026-12-07)
MISSED_ON_A_SEED: dict[str, str] = {}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=MISSED_ON_A_SEED[n]))
                                  if n in MISSED_ON_A_SEED else n for n in sorted(SEED_TARGETS)])
def test_targets_hold_on_every_recorded_seed(name):
    """Every recorded seed of a lesson meets the targets issue 21 lists for it (02: SimCLR far over the baselines, the
    colour-jitter ablation lower, MoCo over the baselines; 03: each method 30 points over both baselines, SimSiam
    spread with the stop-gradient and collapsed without; 04: MAE fine-tuned 10 points over scratch; 06: SimCLR's
    CAM energy in the mask 1.5x random init's; 07: 20 points over scratch with 10 labels per class). 02's 0.72 and
    MoCo within 10 points are checked apart, below."""
    runs = _seed_runs(name)
    failed = [seed for seed, m in runs.items() if not SEED_TARGETS[name](m)]
    assert not failed, f"{name}: the targets fail on seeds {failed}"


def test_contrastive_issue_21_targets_on_every_recorded_seed():
    """Issue 21: notebook 02's SimCLR at least 0.72 kNN and MoCo v2 within 10 points of it, on every recorded seed."""
    for seed, m in _seed_runs("02_contrastive").items():
        assert m["knn_simclr"] >= 0.72 and m["knn_moco"] >= m["knn_simclr"] - 0.10, seed


def test_every_training_lesson_is_recorded_on_seeds_0_to_2():
    for name in ("01_pretext", *SEED_TARGETS):
        assert set(_seed_runs(name)) == {0, 1, 2}, name


def test_gradcam_lesson_results():
    m, wall = _lesson("06_gradcam")
    assert m["cam_in_mask_ssl"] >= 1.5 * m["cam_in_mask_random_init"]
    assert m["gradcam_max_abs_diff_vs_library"] <= 1e-5
    assert wall <= 300


def test_finetune_lesson_results():
    m, wall = _lesson("07_finetune")
    assert m["acc_ssl_finetune_10"] >= m["acc_scratch_10"] + 0.20
    assert wall <= 300


def test_masked_lesson_results():
    m, _ = _lesson("04_masked")
    assert m["finetune_mae_10pct"] >= m["finetune_scratch_10pct"] + 0.10
    assert m["finetune_mae_10pct"] > m["linear_mae"]  # MAE: weak linear probe, strong fine-tuning
    assert m["epochs_mae"] == 14 and m["train_s_mae"] <= 360  # its plan: 14 epochs, about 5 minutes on 2 cores


def test_scaling_lesson_results():
    m, _ = _lesson("05_scaling")
    assert m["resume_identical"] == 1.0 and m["resume_max_abs_weight_diff"] == 0.0
    assert m["ddp_world_size"] == 2
    # the header quotes the committed run's ratios: they must be the recorded ones
    header = " ".join(json.loads((RESULTS.parent / "notebooks" / "05_scaling.ipynb").read_text())["cells"][0]["source"])
    quoted = re.search(r"bf16 ([\d.]+)x the speed at ([\d.]+)x the memory, the\s+DataLoader loop ([\d.]+)x", header)
    assert quoted, "notebook 05's header no longer quotes the committed run's ratios"
    recorded = (m["speedup_bf16"], m["memory_ratio_bf16"], m["speedup_lightly_dataloader"])
    assert [float(q) for q in quoted.groups()] == [round(r, 2) for r in recorded], (quoted.groups(), recorded)


def test_your_data_lesson_results():
    m, _ = _lesson("08_your_data")
    assert m["notebook_s"] <= 300
    assert sum(k.startswith("sweep_") and k.endswith("_knn") for k in m) == 4
    assert m["prepared_same_as_folder"] == 1 and m["prepared_images"] == m["folder_train_images"] + m["folder_test_images"]


def test_prepared_data_benchmark():
    """Issue 24's targets (2 CPU cores): prepared data trains at >= 0.9x the in-memory throughput (batch 256, 32 px),
    a 3 GB prepared set trains in under 1.5 GB of the process's own memory, and 2 processes prepare >= 1,000 images/s."""
    b = _bench("data")
    assert b["batch_size"] == 256 and b["image_size"] == 32
    assert b["train_ratio"] >= 0.9, b["train_images_per_s_all"]
    assert b["big_set_gb"] >= 3.0 and b["peak_rss_anon_mb_prepared"] < 1536
    assert b["peak_rss_anon_mb_in_memory"] > b["big_set_gb"] * 1000  # the comparison: the same set read into memory
    assert min(b[f"prepare_images_per_s_{s}px_2proc"] for s in (32, 64)) >= 1000


def test_deploy_lesson_results():
    """Issue 23's targets for notebook 09, on the committed run."""
    m, wall = _lesson("09_deploy")
    assert m["max_abs_diff_onnx_fp32"] <= 1e-4 and m["acc_onnx_fp32"] == pytest.approx(m["acc_torch_fp32"], abs=1e-3)
    assert m["size_ratio_int8"] >= 3.5 and m["acc_onnx_int8"] >= m["acc_onnx_fp32"] - 0.02
    assert m["speedup_int8_vs_torch_b1"] >= 1.5
    assert m["params_ratio_student"] <= 0.25 and m["knn_student_distilled"] >= m["knn_teacher"] - 0.05
    assert m["distill_loss_final"] < m["distill_loss_first"]
    assert m["latency_threads"] == 2 and wall <= 720
    card = RESULTS / "09_deploy.lesson.model_card.md"
    assert card.exists(), f"{card} is missing: the lesson run writes it next to its results file"
    assert f"{m['acc_shifted_onnx_int8']:.4f}" in card.read_text()  # the card quotes the run's numbers


def test_deploy_benchmark_recorded():
    b = _bench("deploy")  # issue 23: sizes and latencies of notebook 09's classifier, with the machine
    assert b["size_ratio_int8"] >= 3.5 and b["max_abs_diff_onnx_fp32"] <= 1e-4
    assert all(b[f"ms_{m}_b{n}"] > 0 for m in ("torch_fp32", "onnx_fp32", "onnx_int8") for n in (1, 64))
    assert b["threads"] >= 1 and b["hardware"]["cpu"] and b["versions"]["torch"]


def test_step_benchmark_recorded():
    """Issue 21, item 3: notebook 02's SimCLR lesson step taken apart on the machine the lessons are timed on (all
    its cores, no GPU): the work per image near what the issue counted by hand, the phases, the operators, what each
    CPU option buys."""
    b = _bench("step")
    assert b["recipe"] == "simclr" and b["profile"] == "lesson" and b["hardware"]["gpu"] is None
    assert b["torch_threads"] == b["hardware"]["cpu_cores"] and b["steps"] >= 10
    assert 40 <= b["mflop_per_image_fwd_bwd"] <= 50  # the issue: about 42 MFLOP per image, forward and backward
    assert abs(sum(b["phase_shares"].values()) - 1) < 0.01
    assert 0 < b["share_of_matmul_rate"] < 1 and b["top_operators"][0]["share"] >= b["top_operators"][-1]["share"]
    assert b["speed_options"]["fp32 (plain)"]["speedup"] == 1.0 and len(b["speed_options"]) == 4
    assert set(b["optimizer_ms"]) == {"for-loop", "foreach", "fused"} and b["speedup_all_threads_over_one"] > 0


NOTEBOOKS = sorted(p.stem for p in (RESULTS.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_header_time_matches_the_recorded_wall_time(name):
    """The **Time** paragraph of each notebook's header says how long the lesson profile takes; the committed run
    must agree: one of its "about N minutes" within 0.7-1.3x the recorded wall time, or "under a minute" and < 60 s."""
    nb = json.loads((RESULTS.parent / "notebooks" / f"{name}.ipynb").read_text())
    header = "".join(nb["cells"][0]["source"])
    time_paragraph = header[header.index("**Time**"):].split("\n\n")[0]
    lesson = re.sub(r"\s+", " ", time_paragraph[time_paragraph.index("lesson profile"):])
    wall_min = load_results(RESULTS / f"{name}.lesson.json")["wall_time_s"] / 60
    if lesson.startswith("lesson profile under a minute"):
        assert wall_min < 1, f"{name}: the header says under a minute, the committed run took {wall_min:.1f} min"
        return
    said = [float(n) for n in re.findall(r"about (\d+(?:\.\d+)?) minutes?", lesson)]
    assert said, f"{name}: no 'about N minutes' for the lesson profile in the header's Time paragraph"
    assert any(0.7 * n <= wall_min <= 1.3 * n for n in said), \
        f"{name}: the header says about {said} minutes, the committed lesson run took {wall_min:.1f} min"


# issue 21's time limits at the lesson profile, each run alone on 2 CPU cores: every notebook within 12 minutes, the
# whole sequence within 60. Strict marks for the limits measured and not met yet: remove each when its run meets it
LESSON_LIMIT_S, SEQUENCE_LIMIT_S = 12 * 60, 60 * 60
OVER_TIME: dict[str, str] = {}  # none since notebooks 02 and 03 replay their comparisons by default (issue 21)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=OVER_TIME[n]))
                                  if n in OVER_TIME else n for n in NOTEBOOKS])
def test_each_lesson_within_12_minutes(name):
    wall = load_results(RESULTS / f"{name}.lesson.json")["wall_time_s"]
    assert 0 < wall <= LESSON_LIMIT_S, f"{name}: the recorded lesson run took {wall / 60:.1f} min"


def test_the_sequence_within_60_minutes():
    total = sum(load_results(RESULTS / f"{n}.lesson.json")["wall_time_s"] for n in NOTEBOOKS)
    assert total <= SEQUENCE_LIMIT_S, f"the recorded lesson runs take {total / 60:.1f} min in all"
