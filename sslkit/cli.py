"""``python -m sslkit.train METHOD``: train a recipe from the shell, exactly as the notebooks train it.

``main`` is the command line: the recipe named like the method (``sslkit.recipes``) unless ``--recipe`` names
another, built by ``sslkit.recipes.build`` as the notebooks build it, the profile's data, a kNN evaluation next to
the raw-pixel baseline, and a results file that records the recipe.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .config import Config
from .recipes import RECIPE_VIEW_KNOBS, init_parameters, build

EXAMPLES = """examples:
  python -m sslkit.train simclr --profile smoke
  python -m sslkit.train simclr                                               # notebook 02's SimCLR: its 40 epochs
  python -m sslkit.train simclr --dataset data/my_images --epochs 10          # notebook 02's recipe on your folder
  python -m sslkit.train simclr --dataset data/my_images --time-budget 120    # a quick try on it: 2 minutes at most
  python -m sslkit.train byol --recipe simsiam                                # another recipe's values for BYOL
  python -m sslkit.train byol --epochs 20 --set precision=bf16 --set width=16 --run-dir runs/byol
  torchrun --nproc_per_node=2 -m sslkit.train simclr --profile smoke --device cpu        # 2 CPU processes (gloo)
  torchrun --nproc_per_node=8 -m sslkit.train simclr --profile full --set lr_scaling=sqrt  # 8 GPUs (NCCL)

Each method trains the recipe of the notebook that teaches it (sslkit/recipes.py says every value and why), for its
planned epochs: the same seed gives the same numbers on every machine. Flags and --set change single values. Re-running a command with the same --run-dir resumes the run where it stopped
(Ctrl-C or SIGTERM save first). --set KEY=VALUE sets any Config field or knob: a method's (temperature=0.2,
queue_size=4096, target_momentum=0.9: where a momentum network's schedule starts, symmetric=True: MoCo with both
views as queries), the backbone's (width=8), the
views' (min_crop=0.5, grayscale=0.5, jitter=0.5, view_size=24, or any AugmentParams field such as
crop_scale=(0.5,1.0)), training's (precision, channels_last, compile, accumulate, lr_scaling, base_batch_size,
optimizer, betas, momentum: SGD's, lr_schedule, keep_last)."""

def parse_settings(pairs: list[str]) -> dict:
    """``["temperature=0.2", "name=x"]`` -> ``{"temperature": 0.2, "name": "x"}`` (Python literals where they parse).

    >>> parse_settings(["temperature=0.2", "crop_scale=(0.5, 1.0)", "optimizer=sgd", "compile=True"])
    {'temperature': 0.2, 'crop_scale': (0.5, 1.0), 'optimizer': 'sgd', 'compile': True}
    """
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: write KEY=VALUE, e.g. --set temperature=0.2")
        out[key.strip().lower()] = literal(value)
    return out


def literal(text: str):
    """A command line's value: the Python literal it spells (2, 0.2, True, None, (0.5, 1.0)), else the text itself
    (a plain string: optimizer=sgd)."""
    import ast

    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # not a literal
        return text.strip()


def known_settings(method_name: str, backbone: str) -> set[str]:
    """Every ``--set`` name that a run of ``method_name`` on ``backbone`` understands."""
    from .augment import AugmentParams
    from .methods import method_class
    from .models import BACKBONES
    from .resume import RUN_KNOBS
    from .speed import SPEED_KNOBS

    return ({f.name for f in dataclasses.fields(Config)} | set(SPEED_KNOBS) | set(RUN_KNOBS)
            | {"optimizer", "betas", "momentum", "lr_schedule", "view_size", *RECIPE_VIEW_KNOBS}
            | {f.name for f in dataclasses.fields(AugmentParams)}
            | init_parameters(method_class(method_name).__init__) | init_parameters(BACKBONES[backbone][0]))


def _parser():
    import argparse

    from .config import PROFILES
    from .methods import METHODS
    from .models import BACKBONES
    from .recipes import RECIPES

    parser = argparse.ArgumentParser(prog="python -m sslkit.train", epilog=EXAMPLES,
                                     description="Train a self-supervised method as the notebooks do; runs "
                                                 "unchanged under torchrun.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", help="one of: " + ", ".join(METHODS))
    parser.add_argument("--profile", default="lesson", help=f"one of: {', '.join(PROFILES)} (default lesson)")
    parser.add_argument("--recipe", help=f"the values to train with, one of: {', '.join(sorted(RECIPES))} "
                                         f"(default: the method's own, as its notebook trains it)")
    parser.add_argument("--dataset", help="shapes, cifar10, stl10, imagenette, an image folder or a prepared "
                                          "folder (default: the profile's)")
    parser.add_argument("--backbone", help=f"one of: {', '.join(BACKBONES)} (default: the recipe's)")
    parser.add_argument("--epochs", type=int, help="passes over the unlabeled split (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, help="images per step and process; the global batch is this "
                                                       "times the number of processes")
    parser.add_argument("--lr", type=float, help="peak learning rate (see --set lr_scaling=linear|sqrt)")
    parser.add_argument("--time-budget", type=float, help="an optional cap: fit the schedule into this many seconds and stop "
                                                       "(default: train the planned epochs, the same numbers on "
                                                       "every machine)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (under torchrun: each process its GPU)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other setting; repeatable")
    parser.add_argument("--run-dir", help="checkpoints every epoch; if it holds some, resume from the newest")
    parser.add_argument("--max-steps", type=int, help="stop (and save) after this many steps in all")
    parser.add_argument("--results", help="the results JSON (default results/train_METHOD.PROFILE.json)")
    parser.add_argument("--save-backbone", metavar="PATH", help="where the trained backbone goes (default: next to "
                        "the results, RESULTS.backbone.pt; python -m sslkit.deploy exports it to ONNX)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def configure(args, parser) -> Config:
    """The run's ``Config`` from the parsed command line: the recipe, then the flags and ``--set`` values."""
    import difflib

    from .config import make_config
    from .methods import METHODS
    from .recipes import RECIPES, recipes_for

    if args.method not in METHODS:
        parser.error(f"unknown method {args.method!r}; choose one of: {', '.join(METHODS)}")
    name = args.recipe or (recipes_for(args.method) or [None])[0]
    if args.recipe and args.recipe not in RECIPES:
        close = difflib.get_close_matches(args.recipe, RECIPES, n=1)
        parser.error(f"unknown recipe {args.recipe!r}{f' (did you mean {close[0]}?)' if close else ''}; choose one "
                     f"of: {', '.join(sorted(RECIPES))}")
    settings = parse_settings(args.set)
    flags = {"dataset": args.dataset, "backbone": args.backbone, "num_epochs": args.epochs,
             "batch_size": args.batch_size, "lr": args.lr, "time_budget_s": args.time_budget, "device": args.device,
             "seed": args.seed}
    for key in ("profile", "recipe"):  # make_config's own arguments: their flags say them
        if key in settings:
            raise ValueError(f"--set {key}=...: give --{key} {settings[key]} instead")
    for key, value in settings.items():  # a flag and --set may name the same value once, or twice alike
        if flags.get(key) is not None and flags[key] != value:
            raise ValueError(f"{key} is given twice, {flags[key]!r} by its flag and {value!r} by --set; give it once")
    cfg = make_config(args.profile, recipe=name, **{**flags, **settings})
    known = known_settings(args.method, cfg.backbone)
    for key in sorted(set(settings) - known):
        close = difflib.get_close_matches(key, known, n=3)
        raise ValueError(f"unknown setting {key!r} for {args.method} on {cfg.backbone}"
                         f"{f' (did you mean {close[0]}?)' if close else ''}; it understands Config fields, "
                         f"{args.method}'s and {cfg.backbone}'s arguments, the views' knobs and the "
                         f"training knobs (see --help)")
    for key in sorted(k for k, v in settings.items() if v is None):  # make_config reads None as "the recipe's value"
        if key not in NONE_MEANS:
            raise ValueError(f"--set {key}=None: None means the recipe's value here; leave --set {key} out for it")
        cfg = dataclasses.replace(cfg, **{key: None})
    return cfg


# the Config fields where None means something of its own (with --set KEY=None)
NONE_MEANS = {"num_unlabeled": "all of the unlabeled split", "time_budget_s": "no cap: the planned epochs",
              "data_dir": "data/ for the real datasets"}


def main(argv: list[str] | None = None) -> int:
    """``python -m sslkit.train METHOD [options]``: train, evaluate (kNN on the test split), write results.

    Returns the exit status: 0 when the run finished (or had finished before), 1 when its loss became NaN or
    infinite, 2 for a bad command line, 130 or 143 when Ctrl-C or SIGTERM stopped it (the checkpoint is saved; the
    same command resumes it).
    """
    from .checkpoint import CheckpointError, save_weights
    from .data import load_split
    from .distributed import init_distributed
    from .resume import resumable, run_config
    from .results import Results, check_writable, default_results_path
    from .optim import make_optimizer
    from .speed import peak_lr, speed_options
    from .train import check_batch, train

    parser = _parser()
    args = parser.parse_args(argv)
    if args.max_steps is not None and args.max_steps < 1:
        parser.error(f"--max-steps {args.max_steps}: give at least 1 (or leave it out to train the planned epochs)")
    try:
        cfg = configure(args, parser)
        speed_options(cfg)
        info = init_distributed(cfg.device)  # under torchrun: join the others; "cuda" where there is none: an error
    except (ValueError, RuntimeError) as e:
        parser.error(str(e))
    say = print if info.is_main else (lambda *a, **k: None)  # only rank 0 talks
    try:  # before anything is written: a bad knob's value stops here, and the method says which
        method = build(args.method, cfg, distributed=info.distributed)
        make_optimizer(method, cfg)  # an unknown optimizer or lr_schedule too
    except (ValueError, TypeError) as e:  # (TypeError: a value of the wrong kind that a constructor takes apart)
        parser.error(str(e))
    results_path = args.results or default_results_path(f"train_{args.method}", cfg.profile)
    backbone_path = Path(args.save_backbone or Path(results_path).with_suffix(".backbone.pt"))
    try:  # the data before anything is written: a missing dataset, an unfinished preparation stops here
        unlabeled = load_split(cfg, "unlabeled")
    except (OSError, ValueError, RuntimeError) as e:  # incl. DatasetNotFoundError, PreparationIncomplete
        parser.error(str(e))
    try:  # the batch the data gives (it shrinks to a small folder), checked as training checks it, before it starts
        batch, steps_per_epoch = check_batch(method, cfg, len(unlabeled), info.world_size)
    except ValueError as e:
        parser.error(str(e))
    if args.run_dir and info.is_main:  # where the checkpoints go: a folder that cannot be written stops here too,
        try:  # and one holding another run, or a run over other data (or only unreadable checkpoints), before the
            check_writable(Path(args.run_dir) / "epoch-0001.pt")  # results file is touched
            resumable(args.run_dir, run_config(cfg, method, info.world_size), steps_per_epoch, len(unlabeled))
        except OSError as e:
            parser.error(f"--run-dir {args.run_dir!r} cannot hold checkpoints ({e.__cause__ or e}); give a folder "
                         f"you can write, e.g. runs/{args.method}")
        except CheckpointError as e:
            parser.error(str(e).replace("give a new run_dir", "give another --run-dir"))
    try:  # the results folder before the results file: one that cannot be written stops here, having written nothing
        if info.is_main:
            check_writable(results_path)
    except OSError as e:
        parser.error(str(e).replace("RESULTS_PATH=", "--results ").replace("set RESULTS_PATH to", "give --results"))
    try:
        if info.is_main:
            check_writable(backbone_path)
    except OSError as e:
        folder = backbone_path.is_dir()
        why, hint = ("it is a folder", backbone_path / f"{args.method}.backbone.pt") if folder else \
            (e.__cause__ or e, f"runs/{args.method}.backbone.pt")
        parser.error(f"--save-backbone {str(backbone_path)!r} cannot be written ({why}); give a file in a folder "
                     f"you can write, e.g. {hint}")
    no_knn = None  # the kNN evaluation needs labeled splits: a folder without classes (or with one) trains all the same
    if info.is_main:
        try:
            bank, test = load_split(cfg, "train"), load_split(cfg, "test")
        except ValueError as e:
            no_knn = str(e)
            say(f"note: no kNN evaluation at the end ({no_knn.split(';')[0]}); the run trains and saves all the same")
    results = Results(f"train_{args.method}", cfg, results_path) if info.is_main else None
    say(f"{args.method} on {len(unlabeled)} images of {cfg.dataset} with {cfg.backbone}, profile {cfg.profile}, "
        f"recipe {cfg.recipe}: "
        f"{info.world_size} process(es) on {info.device}, batch {batch} per process ({batch * info.world_size} in all"
        f"{f'; {cfg.batch_size} asked, more than the data has' if batch < cfg.batch_size else ''}), "
        f"{cfg.extra.get('optimizer', 'adamw')} lr "
        f"{peak_lr(cfg, info.world_size, batch):g}")
    history = train(method, unlabeled, cfg, progress=not args.quiet, run_dir=args.run_dir, max_steps=args.max_steps,
                    dist_info=info)
    if info.distributed:
        import torch.distributed as dist
        dist.barrier()  # leave together: a process exiting while gloo still talks to another aborts that one
        dist.destroy_process_group()
    if not info.is_main:
        return 0 if history.stop_reason not in ("interrupted", "SIGTERM", "non-finite loss") else 1
    results.update({"steps": history.steps, "epochs": history.epochs, "train_s": history.wall_time_s,
                    "images_per_s": history.images_per_s, "world_size": info.world_size,
                    "global_batch_size": batch * info.world_size, "lr": peak_lr(cfg, info.world_size, batch),
                    "resumed_from_step": history.resumed_from_step})
    if history.losses:
        results.record("final_loss", history.final_loss)
    # a step cap or a time budget that stopped the run before its plan: the file says so (its numbers are a part's)
    cut_short = results.mark_cut_short(args.method, history, verbose=False, metric="cut_short")
    earlier = (f"; {backbone_path} is an earlier run's backbone, not this one's" if backbone_path.exists() else "")
    if history.stop_reason in ("interrupted", "SIGTERM"):
        say(f"stopped: {history.message}{earlier}")
        return 130 if history.stop_reason == "interrupted" else 143
    if history.stop_reason == "non-finite loss":  # marked in the results file, and a failed exit for scripts
        results.record("diverged", 1)
        say(f"failed: {history.message}{earlier}")
        return 1
    from .evaluate import extract_features, knn_accuracy, raw_pixels
    done = f"{history.steps} steps ({history.epochs:.2f} epochs) in {history.wall_time_s:.1f} s, " \
           f"{history.images_per_s:.0f} images/s"
    if no_knn is None:
        knn = knn_accuracy(extract_features(method.backbone, bank), bank.labels,
                           extract_features(method.backbone, test), test.labels)
        knn_pixels = knn_accuracy(raw_pixels(bank), bank.labels, raw_pixels(test), test.labels)
        results.update({"knn": knn, "knn_raw_pixels": knn_pixels})
        done += f"; kNN accuracy on the test split {knn:.3f} (raw pixels: {knn_pixels:.3f})"
    save_weights(backbone_path, method.backbone, cfg, {k: v for k, v in results.metrics.items() if "knn" in k})
    results.save()  # the run is done: the file is marked complete (a run stopped before stays unfinished)
    say(f"{done}; results in {results.path}" + (f" (no kNN evaluation: {no_knn})" if no_knn else ""))
    say(f"backbone in {backbone_path} (python -m sslkit.deploy {backbone_path} exports it to ONNX)")
    if cut_short:
        say(f"cut short: {history.message}; its numbers are those of part of the planned run")
    return 0
