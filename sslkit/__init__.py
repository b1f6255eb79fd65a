"""sslkit: a Jupyter-first kit for learning self-supervised learning (SSL) in vision by doing it.

The notebooks in ``notebooks/`` import this package; it holds the glue around torch,
torchvision and lightly and the parts that teach. Modules, one concept each:

- ``sslkit.config``: profiles (smoke, lesson, full) and the ``Config`` dataclass (``make_config``, ``parameters``)
- ``sslkit.recipes``: every lesson's training recipe in one place, and ``build`` (a run's network, method, views)
- ``sslkit.shapes``: the offline default dataset, generated from a seed
- ``sslkit.data``: every dataset behind one interface (``load_dataset``)
- ``sslkit.datasets``: the real datasets on disk (CIFAR-10, STL-10, Imagenette) and ``download``
- ``sslkit.folders``: a folder of your own images as a dataset (class subfolders or flat)
- ``sslkit.imagefiles``: reading image files (RGB, scaled and centre-cropped, unreadable ones skipped)
- ``sslkit.prepared``: data bigger than memory, decoded once into a memory-mapped array (``prepare``)
- ``sslkit.mapped``: a prepared folder read back, each split a memory map (``open_prepared``, ``read_meta``)
- ``sslkit.models``: backbones by name
- ``sslkit.augment``: views (lightly transforms, and a batched path with per-sample randomness)
- ``sslkit.imageops``: the pixel operations of the batched views (colour jitter, grey, blur), one factor per view
- ``sslkit.methods``: SSL methods by name (SimCLR, MoCo, BYOL, SimSiam, DINO, Barlow Twins, VICReg, MAE)
- ``sslkit.pretext``: pretext tasks (rotation, jigsaw)
- ``sslkit.train``: the training loop every method shares (``train``, one function to read top to bottom)
- ``sslkit.callbacks``: per-step work besides the step (progress bar, live loss plot, kNN monitor, yours)
- ``sslkit.optim``: the optimizer, the learning-rate schedule, seeding
- ``sslkit.speed``: speed options (mixed precision, channels_last, compile, accumulation, out-of-memory advice)
- ``sslkit.resume``: a run's checkpoints in its ``run_dir``, Ctrl-C and SIGTERM, resuming where it stopped
- ``sslkit.supervised``: the supervised baseline (``Supervised``, ``fit_supervised``)
- ``sslkit.evaluate``: batched prediction (``predict``), features, kNN, linear probe, baselines, diagnostics
- ``sslkit.probe``: the linear probe itself (``fit_linear``: L-BFGS logistic regression, probabilities, as a layer)
- ``sslkit.finetune``: the one fine-tuner (layer-wise lr decay for ViTs, the head from a linear probe), pseudo-labels
- ``sslkit.labels``: label-efficiency curves: labeled subsets, classification metrics, the curve's table and plot
- ``sslkit.results``: results files
- ``sslkit.checkpoint``: atomic checkpoints, safe loading, models shared between notebooks
- ``sslkit.replay``: a lesson's recorded trainings, loaded instead of trained (a notebook's ``REPLAY`` switch)
- ``sslkit.record``: lesson runs recorded on every seed in one command (``python -m sslkit.record``)
- ``sslkit.cam``: Grad-CAM glue for SSL backbones and scores against true masks
- ``sslkit.viz``: figures and the widgets that explore them
- ``sslkit.sweep``: parameter sweeps over a notebook (papermill), resumable; ``sslkit.sweepcli``: the same from a
  shell, ``python -m sslkit.sweep OUT_DIR --grid NAME=V1,V2``
- ``sslkit.experiment``: one training and its evaluation (``run_experiment``), and the notebook a sweep runs
- ``sslkit.distributed``: torchrun / DDP glue
- ``sslkit.cli``: ``python -m sslkit.train METHOD``, a recipe trained from a shell as its notebook trains it
- ``sslkit.deploy``: ONNX export, int8 quantization, latency, distillation, pruning, model cards;
  ``sslkit.deploycli``: ``python -m sslkit.deploy BACKBONE``, a trained backbone to ONNX and int8 from a shell
- ``sslkit.exercises``: the notebooks' exercises and the checks that say what to fix
- ``sslkit.bench``: ``python -m sslkit.bench NAME``; ``sslkit.databench``: its data benchmarks and memory probe;
  ``sslkit.trainbench``: training throughput (notebook 05's table, ``bench train``); ``sslkit.stepbench``: a lesson's
  training step taken apart (``bench step``)
- ``sslkit.nbtools``: running, stripping and making student versions of notebooks
- ``sslkit.book``: the lessons as a static HTML site with their figures and recorded numbers (``make book``);
  ``sslkit.bookpages``: the HTML of its pages

``import sslkit`` is cheap: submodules and the names below load on first use.
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (loaded on first access)
_EXPORTS = {
    "Config": "config", "make_config": "config", "parameters": "config", "resolve_device": "config", "PROFILES": "config",
    "load_dataset": "data", "load_split": "data", "ImageData": "data", "DATASETS": "data", "to_float": "data",
    "DatasetNotFoundError": "data",
    "make_shapes": "shapes",
    "make_backbone": "models",
    "backbone_overrides": "models",
    "extract_features": "evaluate", "knn_accuracy": "evaluate",
    "Results": "results", "load_results": "results", "is_complete": "results",
}
_SUBMODULES = {"config", "shapes", "data", "models", "evaluate", "results", "viz", "bench", "nbtools", "cam", "checkpoint", "augment", "methods", "train", "pretext", "sweep", "distributed", "finetune", "deploy",
               "imagefiles", "prepared", "databench", "book", "exercises", "callbacks", "optim", "speed", "resume",
               "supervised", "recipes", "cli", "labels", "imageops", "bookpages", "datasets", "folders", "trainbench",
               "probe", "replay", "stepbench", "record", "mapped", "experiment",
               "deploycli", "sweepcli"}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'sslkit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
