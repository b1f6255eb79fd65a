"""Numbers that the notebooks' markdown quotes from their recorded lesson runs are those runs' numbers.

Each entry of ``QUOTES`` is a phrase of a notebook's markdown with the quoted numbers written as format fields
of the recorded run's metrics (``results/<notebook>.lesson.json``), e.g. ``"SimCLR reaches kNN {knn_simclr:.3f}"``.
The test formats it with the recorded metrics and looks for it in the markdown (whitespace-insensitive): a
re-recorded run whose numbers moved, or an edited sentence, fails here until text and run agree again.
Numbers a notebook computes at run time (printed by a cell) need no entry.
"""
import json
import re
from pathlib import Path

import pytest

from sslkit.results import load_results

ROOT = Path(__file__).parents[1]

QUOTES = {
    "01_pretext": ["kNN rotation {knn_rotation:.3f}, jigsaw {knn_jigsaw:.3f}, raw pixels {knn_raw_pixels:.3f}, "
                   "random init {knn_random_init:.3f}",
                   "their kNN accuracies are {knn_raw_pixels:.3f} and {knn_random_init:.3f}",
                   "({jigsaw_edge_solver:.3f} of them in the recorded lesson run",
                   "the second number shows ({jigsaw_edge_solver_gap1:.3f} in the recorded run"],
    "02_contrastive": ["SimCLR kNN {knn_simclr:.3f}, MoCo v2 {knn_moco:.3f}; raw pixels and a random network: kNN "
                       "{knn_raw_pixels:.3f} and {knn_random_init:.3f}",
                       "MoCo v2 reaches kNN {knn_moco:.3f} against SimCLR's {knn_simclr:.3f}"],
    "03_non_contrastive": ["against {knn_raw_pixels:.2f} for raw pixels and {knn_random_init:.2f} for a random network, "
                           "**SimSiam reaches kNN {knn_simsiam:.2f} (linear probe {linear_simsiam:.2f}), BYOL "
                           "{knn_byol:.2f} ({linear_byol:.2f}), VICReg {knn_vicreg:.2f}, Barlow Twins "
                           "{knn_barlowtwins:.2f} and DINO {knn_dino:.2f}**",
                           "kNN falls to chance ({knn_simsiam_no_stopgrad:.2f})"],
    "04_masked": ["a linear probe of {linear_mae:.3f} against {linear_random_vit:.3f} for a random ViT, a kNN of "
                  "{knn_mae:.3f} against {knn_random_vit:.3f}",
                  "{finetune_mae_10pct:.3f} from MAE's weights against {finetune_scratch_10pct:.3f} from scratch"],
    "05_scaling": ["bf16 {speedup_bf16:.2f}x the speed at {memory_ratio_bf16:.2f}x the memory, the DataLoader loop "
                   "{speedup_lightly_dataloader:.2f}x, accumulation over 2 chunks {memory_ratio_accumulate_2:.2f}x the "
                   "memory",
                   "(`resume_identical = {resume_identical:.0f}`, weight difference {resume_max_abs_weight_diff:.0f})"],
    "06_gradcam": ["energy in the mask: random weights {cam_in_mask_random_init:.3f}, SimCLR {cam_in_mask_ssl:.3f}, "
                   "supervised {cam_in_mask_supervised:.3f}; objects cover {mask_fraction:.3f} of the pixels",
                   "*uncentred* prototypes scores {cam_in_mask_random_init_uncentered:.3f}, above SimCLR"],
    "07_finetune": ["the committed lesson run: {acc_scratch_10:.3f} at 10 labels per class, {acc_scratch_50:.3f} at 50",
                    "at least 20 points better ({acc_ssl_finetune_10:.3f};",
                    "does not close ({acc_ssl_finetune_all:.3f} against {acc_scratch_all:.3f}",
                    "({shift_drop_ssl_finetune_all:.3f} against {shift_drop_scratch_all:.3f} with all labels)",
                    "lesson run: {acc_pseudolabel_10:.3f} against the linear probe's {acc_ssl_linear_10:.3f})"],
    "08_your_data": ["the committed lesson run: kNN {knn:.3f}, linear probe {linear:.3f}"],
}


def _markdown(notebook):
    nb = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())
    text = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return re.sub(r"\s+", " ", text)


CASES = [(nb, q) for nb, quotes in QUOTES.items() for q in quotes]


@pytest.mark.parametrize("notebook,quote", CASES, ids=[f"{nb}-{k}" for k, (nb, _) in enumerate(CASES)])
def test_quoted_numbers_are_the_recorded_ones(notebook, quote):
    metrics = load_results(ROOT / "results" / f"{notebook}.lesson.json")["metrics"]
    expected = re.sub(r"\s+", " ", quote.format(**metrics))
    assert expected in _markdown(notebook), f"{notebook}'s markdown does not say: {expected!r}"



# Phrases quoting the same lesson run with another seed (results/seeds/<notebook>.lesson.seed<N>.json): (seed, phrase)
SEED_QUOTES = {
    "01_pretext": [(1, "the same run with `SEED = 1`: rotation {knn_rotation:.3f}, jigsaw {knn_jigsaw:.3f}"),
                   (2, "with `SEED = 2`: rotation {knn_rotation:.3f}, jigsaw {knn_jigsaw:.3f}")],
    "02_contrastive": [(1, "the same run with `SEED = 1`: SimCLR {knn_simclr:.3f}, MoCo v2 {knn_moco:.3f}"),
                       (2, "with `SEED = 2`: SimCLR {knn_simclr:.3f}, MoCo v2 {knn_moco:.3f}")],
    "03_non_contrastive": [(1, "the same run with `SEED = 1`: SimSiam {knn_simsiam:.2f}, BYOL {knn_byol:.2f}, VICReg "
                               "{knn_vicreg:.2f}, Barlow Twins {knn_barlowtwins:.2f}, DINO {knn_dino:.2f}"),
                           (2, "with `SEED = 2`: SimSiam {knn_simsiam:.2f}, BYOL {knn_byol:.2f}, VICReg {knn_vicreg:.2f}, "
                               "Barlow Twins {knn_barlowtwins:.2f}, DINO {knn_dino:.2f}")],
    "04_masked": [(1, "the same run with `SEED = 1`: {finetune_mae_10pct:.3f} against {finetune_scratch_10pct:.3f}"),
                  (2, "with `SEED = 2`: {finetune_mae_10pct:.3f} against {finetune_scratch_10pct:.3f}")],
    "06_gradcam": [(1, "the same run with `SEED = 1`: random weights {cam_in_mask_random_init:.3f}, SimCLR "
                       "{cam_in_mask_ssl:.3f}"),
                   (2, "with `SEED = 2`: random weights {cam_in_mask_random_init:.3f}, SimCLR {cam_in_mask_ssl:.3f}")],
    "07_finetune": [(1, "the same run with `SEED = 1`: {acc_ssl_finetune_10:.3f} against {acc_scratch_10:.3f}"),
                    (2, "with `SEED = 2`: {acc_ssl_finetune_10:.3f} against {acc_scratch_10:.3f}")],
}
SEED_CASES = [(nb, seed, q) for nb, quotes in SEED_QUOTES.items() for seed, q in quotes]


@pytest.mark.parametrize("notebook,seed,quote", SEED_CASES, ids=[f"{nb}-seed{s}" for nb, s, _ in SEED_CASES])
def test_quoted_numbers_of_other_seeds_are_the_recorded_ones(notebook, seed, quote):
    metrics = load_results(ROOT / "results" / "seeds" / f"{notebook}.lesson.seed{seed}.json")["metrics"]
    expected = re.sub(r"\s+", " ", quote.format(**metrics))
    assert expected in _markdown(notebook), f"{notebook}'s markdown does not say: {expected!r}"


def test_the_welcome_table_lists_every_notebook():
    """Notebook 00's table of the lessons names every numbered notebook (09 was missing from it once)."""
    cell = json.loads((ROOT / "notebooks" / "00_welcome.ipynb").read_text())["cells"][0]
    rows = re.findall(r"^\| (\d\d) ", "".join(cell["source"]), flags=re.M)
    assert rows == sorted(p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
