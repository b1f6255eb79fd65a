"""Benchmarks: ``python -m sslkit.bench NAME`` prints one JSON object with what it measured.

Speed and accuracy claims in the notebooks and README come from these runs (and from the
notebooks' results files), never from prose. Each benchmark records the machine it ran on.

    python -m sslkit.bench dataset     # shapes generation time and the calibration accuracies
    python -m sslkit.bench --list
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

BENCHMARKS = {}  # name -> function(args) -> dict of figures


def benchmark(fn):
    """Register a benchmark under the function's name (without a leading ``bench_``)."""
    BENCHMARKS[fn.__name__.removeprefix("bench_")] = fn
    return fn


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


@benchmark
def bench_dataset(args) -> dict:
    """Generation time of 10,000 shapes images, and kNN accuracy of raw pixels, a random-init
    backbone and a supervised backbone trained on all labels (the dataset's calibration)."""
    from .config import make_config
    from .data import load_dataset, to_float
    from .evaluate import extract_features, knn_accuracy
    from .models import make_backbone
    from .train import fit_supervised

    torch.manual_seed(args.seed)
    make_config("lesson")  # validates the defaults the notebooks use
    times = []
    for _ in range(3):  # best of 3: the first call also pays for warm-up
        _, t = _timed(load_dataset, "shapes", "train", n=10_000, image_size=32, seed=args.seed)
        times.append(t)
    train = load_dataset("shapes", "train", n=args.num_train, image_size=32, seed=args.seed)
    test = load_dataset("shapes", "test", n=args.num_test, image_size=32, seed=args.seed)
    knn_raw = knn_accuracy(to_float(train.images).flatten(1), train.labels,
                           to_float(test.images).flatten(1), test.labels)
    torch.manual_seed(args.seed)
    backbone, _ = make_backbone(args.backbone)
    knn_random = knn_accuracy(extract_features(backbone, train), train.labels,
                              extract_features(backbone, test), test.labels)
    cfg = make_config("lesson", backbone=args.backbone, num_epochs=args.epochs, seed=args.seed)
    _, train_time = _timed(fit_supervised, backbone, train, cfg)
    knn_sup = knn_accuracy(extract_features(backbone, train), train.labels,
                           extract_features(backbone, test), test.labels)
    return {"generate_10k_s": round(min(times), 3), "generate_10k_s_all": [round(t, 3) for t in times],
            "knn_raw_pixels": knn_raw, "knn_random_init": knn_random, "knn_supervised": knn_sup,
            "supervised_epochs": args.epochs, "supervised_train_s": round(train_time, 1),
            "backbone": args.backbone, "num_train": args.num_train, "num_test": args.num_test,
            "chance": 0.1}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sslkit.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="which benchmark: " + ", ".join(BENCHMARKS))
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default="resnet_small")
    parser.add_argument("--num-train", type=int, default=10_000)
    parser.add_argument("--num-test", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=15, help="supervised epochs for the calibration")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        for name, fn in BENCHMARKS.items():
            print(f"{name:12s} {fn.__doc__.splitlines()[0]}")
        return 0
    if args.name not in BENCHMARKS:
        parser.error(f"unknown benchmark {args.name!r}; choose one of: {', '.join(BENCHMARKS)}")
    from .results import hardware, versions

    start = time.perf_counter()
    figures = BENCHMARKS[args.name](args)
    out = {"benchmark": args.name, **figures, "wall_time_s": round(time.perf_counter() - start, 1),
           "versions": versions(), "hardware": hardware()}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
