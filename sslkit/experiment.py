"""One experiment: train a method on a dataset, evaluate its backbone, record the numbers (``run_experiment``), and
a small notebook around that call (``experiment_notebook``) for ``sslkit.sweep.sweep`` to run once per combination
of a grid. Notebook 08 runs the same function in-process, then sweeps the notebook. Both are named in
``sslkit.sweep`` too."""

from __future__ import annotations

from pathlib import Path

from .nbtools import KERNEL, notebook_parameters  # noqa: F401 (notebook_parameters: the doctest's)

def run_experiment(method_name: str, cfg, results=None, data: tuple | None = None, progress: bool = False) -> dict:
    """Train method ``method_name`` on ``cfg``'s dataset, evaluate its backbone, record the numbers.

    The method is built by ``sslkit.cli.build`` (``cfg.extra`` knobs go to the backbone, the method or its views, as
    for ``python -m sslkit.train``), trained on the ``unlabeled`` split for the planned ``cfg.num_epochs``
    (``cfg.time_budget_s``, when set, is a cap that may stop it earlier; a method that collapses under AdamW keeps its
    recipe's optimizer: ``sslkit.recipes.with_own_optimizer``; SimSiam trains with SGD), and evaluated with
    ``evaluate_backbone`` on ``train`` (the kNN bank, the probe's training set) and ``test``. A dataset without labels
    (a flat image folder) is trained on and not evaluated.

    Args:
        data: ``(unlabeled, train, test)`` already loaded (None: ``load_split`` them from ``cfg``;
            ``train`` and ``test`` may be None for a dataset without labels).
    A run whose loss became NaN or infinite raises ``FloatingPointError`` (after recording ``diverged: 1``), so
    that a sweep lists it as failed and keeps no results file for it.

    Returns the metrics (also recorded in ``results`` if given): ``knn``, ``linear``, ``std``,
    ``uniformity``, ``alignment``, ``steps``, ``epochs``, ``train_s``, ``final_loss``, ``lr`` (the peak
    learning rate it trained with). ``results`` also gets the training's ``Results.record_training`` entries under
    the method's name (``train_s_simclr``, ..., and ``cut_short_simclr`` when a time budget cut the run short).
    """
    from .data import load_split
    from .evaluate import evaluate_backbone
    from .cli import build
    from .recipes import with_own_optimizer
    from .train import train

    method = build(method_name, cfg)  # first: a typo in the method's name fails before any loading
    cfg = with_own_optimizer(method_name, cfg)  # e.g. SimSiam trains with SGD
    if data is None:
        unlabeled = load_split(cfg, "unlabeled")
        try:
            train_data, test_data = load_split(cfg, "train"), load_split(cfg, "test")
        except ValueError as e:  # e.g. a flat folder: only an unlabeled split
            print(f"trained only, not evaluated: {e}")
            train_data = test_data = None
    else:
        unlabeled, train_data, test_data = data
    history = train(method, unlabeled, cfg, progress=progress)
    if results is not None:  # steps, epochs and seconds under the method's name; a run a time budget cut is marked
        results.record_training(method_name, history)
    metrics = {"steps": history.steps, "epochs": history.epochs, "train_s": history.wall_time_s, "lr": cfg.lr}
    if history.losses:
        metrics["final_loss"] = history.final_loss
    if history.stop_reason == "non-finite loss":  # a failed run: marked, and an error (a sweep lists it as failed)
        if results is not None:
            results.update({**metrics, "diverged": 1})
        raise FloatingPointError(f"{method_name} diverged: {history.message}")
    if train_data is not None and test_data is not None:
        metrics.update(evaluate_backbone(method.backbone, train_data, test_data, seed=cfg.seed, name=method_name,
                                         k=min(200, len(train_data))))
    if results is not None:
        results.update(metrics)
    return metrics


# the parameters of the experiment notebook: name -> (default, comment)
EXPERIMENT_PARAMETERS = {
    "PROFILE": ('"lesson"', '"smoke", "lesson" or "full"'),
    "RESULTS_PATH": ("None", "None: results/experiment.<profile>.json"),
    "NOTEBOOK_VALUES": ('"08_your_data"', "whose per-profile values fill in the knobs left at None "
                                         "(sslkit.recipes.NOTEBOOK_VALUES); None: the profile's only"),
    "METHOD": ('"simclr"', "any of sslkit.methods.METHODS"),
    "DATASET": ("None", '"shapes", "cifar10", "stl10", "imagenette" or an image folder; None: the profile\'s'),
    "BACKBONE": ("None", "see sslkit.models.BACKBONES; None: the profile's"),
    "WIDTH": ("None", "channels of a small ResNet's first stage; None: the backbone's"),
    "IMAGE_SIZE": ("None", "pixels; None: the profile's (32)"),
    "TIME_BUDGET_S": ("None", "an optional cap in seconds: fit the training into it and stop; None: train the "
                              "planned epochs"),
    "NUM_EPOCHS": ("None", "passes over the unlabeled split (planned); None: NOTEBOOK_VALUES' (lesson: 6) "
                          "or the profile's"),
    "BATCH_SIZE": ("None", "images per step"),
    "LR": ("None", "peak learning rate"),
    "TEMPERATURE": ("None", "for the contrastive methods (simclr, moco)"),
    "NUM_UNLABELED": ("None", "images to train on"),
    "NUM_TRAIN": ("None", "labeled images: the kNN bank and the linear probe's training set"),
    "NUM_TEST": ("None", "test images"),
    "DEVICE": ("None", '"auto", "cpu", "cuda", "mps"'),
    "SEED": ("None", "None: the profile's (0)"),
}


def experiment_notebook(path) -> Path:
    """Write a small notebook that runs ``run_experiment`` with the knobs of its parameters cell.

    The notebook a sweep runs when one run should be one training and its evaluation, not a
    whole lesson. Its parameters are ``EXPERIMENT_PARAMETERS`` (all None: the profile's values,
    and those of ``NOTEBOOK_VALUES``, notebook 08's by default). Returns the path.

    >>> import tempfile
    >>> nb = experiment_notebook(Path(tempfile.mkdtemp()) / "experiment.ipynb")
    >>> sorted(notebook_parameters(nb))[:4]
    ['BACKBONE', 'BATCH_SIZE', 'DATASET', 'DEVICE']
    """
    import nbformat

    path = Path(path)
    parameters = "\n".join(f"{name} = {default}  # {comment}" for name, (default, comment)
                           in EXPERIMENT_PARAMETERS.items())
    code = ("import sslkit\nfrom sslkit.config import NOT_KNOBS\nfrom sslkit.sweep import run_experiment\n\n"
            "# every knob of the parameters cell (None: the profile's value) but the notebook's values and the method\n"
            "knobs = sslkit.parameters(globals(), exclude=(*NOT_KNOBS, \"NOTEBOOK_VALUES\", \"METHOD\"))\n"
            "cfg = sslkit.make_config(PROFILE, notebook=NOTEBOOK_VALUES, **knobs)\n"
            "results = sslkit.Results(\"experiment\", {**cfg.to_dict(), \"method\": METHOD}, RESULTS_PATH)\n"
            "metrics = run_experiment(METHOD, cfg, results)\n"
            "results.save()  # the run is done: its results file is marked complete\n"
            "print(METHOD, cfg.dataset, {k: round(v, 4) for k, v in metrics.items()})")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python (sslkit)", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# One experiment: train a method, evaluate its backbone\n"
                                              "Written by `sslkit.sweep.experiment_notebook`; run by "
                                              "`sslkit.sweep.sweep` once per combination of a grid."),
                nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(code)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path
