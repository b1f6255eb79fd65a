"""Benchmarks: ``python -m sslkit.bench NAME`` prints one JSON object with what it measured.

Speed and accuracy claims in the notebooks and README come from these runs (and from the
notebooks' results files), never from prose. Each benchmark records the machine it ran on.

    python -m sslkit.bench dataset     # shapes generation time and the calibration accuracies
    python -m sslkit.bench augment     # two views per image: lightly's PIL path vs the batched path
    python -m sslkit.bench ssl_epoch   # one SimCLR epoch: sslkit's path vs lightly's DataLoader path
    python -m sslkit.bench train       # training steps: sslkit's fastest settings vs a lightly-example loop
    python -m sslkit.bench step        # a lesson step taken apart: FLOPs, phases, operators, CPU options
    python -m sslkit.bench data        # prepared (memory-mapped) data: preparation, throughput, memory
    python -m sslkit.bench deploy      # notebook 09's model: size and latency, torch vs ONNX fp32 vs int8
    python -m sslkit.bench --list

Groups of benchmarks live apart: ``sslkit.trainbench`` (training throughput: notebook 05's table
and ``bench train``), ``sslkit.stepbench`` (``bench step``), ``sslkit.databench`` (``bench data``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from .config import torch_threads

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
def bench_generate(args) -> dict:
    """Seconds to generate 10,000 shapes images at 32 px (best of 3; the dataset's speed target: 5 s)."""
    from .data import load_dataset

    times = []
    for _ in range(3):  # best of 3: the first call also pays for warm-up; other jobs only ever slow a run down
        _, t = _timed(load_dataset, "shapes", "train", n=10_000, image_size=32, seed=args.seed)
        times.append(t)
    return {"generate_10k_s": round(min(times), 3), "generate_10k_s_all": [round(t, 3) for t in times]}


@benchmark
def bench_dataset(args) -> dict:
    """Generation time of 10,000 shapes images, and kNN accuracy of raw pixels, a random-init
    backbone and a supervised backbone trained on all labels (the dataset's calibration)."""
    from .config import make_config
    from .data import load_dataset, to_float
    from .evaluate import extract_features, knn_accuracy
    from .models import make_backbone
    from .supervised import fit_supervised

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


@benchmark
def bench_augment(args) -> dict:
    """Images per second making two SimCLR views at 32 px: lightly's SimCLRTransform on PIL images,
    one at a time, against sslkit's batched path (``sslkit.augment.two_views``), and their ratio."""
    from torchvision.transforms.v2.functional import to_pil_image

    from .augment import AugmentParams, lightly_transform, two_views
    from .data import load_dataset

    num_images, batch_size, image_size = 2048, 512, 32
    images = load_dataset("shapes", "unlabeled", n=num_images, image_size=image_size, seed=args.seed).images
    pil_images = [to_pil_image(x) for x in images]  # converted beforehand: only the transform is timed
    transform = lightly_transform("simclr", image_size)  # SimCLRTransform(input_size=32, gaussian_blur=0.0)
    params = AugmentParams(image_size=image_size)  # the same distributions (tests/test_augment.py)

    def pil_path():
        for image in pil_images:
            x0, x1 = transform(image)

    def batched_path():
        generator = torch.Generator().manual_seed(args.seed)
        for start in range(0, num_images, batch_size):
            x0, x1 = two_views(images[start:start + batch_size], params, generator)

    def images_per_s(fn):  # best of 3 after a warm-up: other jobs on the machine only ever slow a run down
        fn()
        return num_images / min(_timed(fn)[1] for _ in range(3))

    import os

    load_before = os.getloadavg()[0]  # other jobs on the machine: a load above the core count slows both paths
    torch.manual_seed(args.seed)
    threads = torch.get_num_threads()
    pil = images_per_s(pil_path)
    batched = images_per_s(batched_path)
    with torch_threads(1):  # per core: the PIL path runs in one process on one core
        batched_1 = images_per_s(batched_path)
    return {"images_per_s_lightly_pil": round(pil), "images_per_s_batched": round(batched),
            "ratio": round(batched / pil, 2), "images_per_s_batched_1_thread": round(batched_1),
            "ratio_1_thread": round(batched_1 / pil, 2), "target_ratio": 5.0, "torch_threads": threads,
            "views_per_image": 2, "image_size": image_size, "num_images": num_images, "batch_size": batch_size,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


@benchmark
def bench_eval(args) -> dict:
    """Time to extract features, run kNN (k=200) and the linear probe on 10,000 + 2,000 images at 32 px, and the
    lessons' baseline: the linear probe on the raw pixels (3,072 features instead of the backbone's 256)."""
    import os

    from .data import load_dataset
    from .evaluate import extract_features, knn_accuracy, linear_probe, random_init_backbone, raw_pixels

    train = load_dataset("shapes", "train", n=args.num_train, image_size=32, seed=args.seed)
    test = load_dataset("shapes", "test", n=args.num_test, image_size=32, seed=args.seed)
    backbone = random_init_backbone(args.backbone, seed=args.seed)  # speed does not depend on the weights
    extract_features(backbone, test.images[:512])  # warm-up: the first call pays for allocation
    (train_f, test_f), extract_s = _timed(lambda: (extract_features(backbone, train), extract_features(backbone, test)))
    knn, knn_s = _timed(knn_accuracy, train_f, train.labels, test_f, test.labels)
    linear, linear_s = _timed(linear_probe, train_f, train.labels, test_f, test.labels)
    raw, raw_s = _timed(linear_probe, raw_pixels(train), train.labels, raw_pixels(test), test.labels)
    n = len(train) + len(test)
    return {"extract_s": round(extract_s, 2), "extract_images_per_s": round(n / extract_s),
            "knn_s": round(knn_s, 2), "linear_probe_s": round(linear_s, 2),
            "total_s": round(extract_s + knn_s + linear_s, 2), "feature_dim": train_f.shape[1],
            "raw_pixels_linear_probe_s": round(raw_s, 2), "raw_pixels_dim": train.images[0].numel(),
            "linear_raw_pixels": raw,
            "knn_random_init": knn, "linear_random_init": linear, "backbone": args.backbone,
            "num_train": len(train), "num_test": len(test), "device": "cpu", "torch_threads": torch.get_num_threads(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


@benchmark
def bench_ssl_epoch(args) -> dict:
    """One SimCLR epoch at 32 px, images/s: sslkit's path against lightly's example path, and their ratio.

    sslkit's path: the uint8 images in memory, ``two_views`` on whole batches, ``sslkit.train.train``.
    lightly's path (its ``examples/pytorch/simclr.py``): a torchvision-style dataset that makes a PIL image per
    item, ``SimCLRTransform`` (lightly's CIFAR-10 settings) in a DataLoader with 2 workers, the same model,
    loss and optimizer in a plain loop. Both train 10,000 images once, from the same initial weights."""
    import os

    from .augment import lightly_transform
    from .config import make_config
    from .data import load_dataset
    from .methods import make_method
    from .models import make_backbone
    from .train import train

    # notebook 02's network and images in batches of 128 (its lesson recipe before batches of 64), alike on both paths
    width, batch_size, temperature, image_size, num_workers = 8, 128, 0.2, 32, 2
    cfg = make_config("lesson", backbone="resnet_tiny", batch_size=batch_size, num_epochs=1, warmup_epochs=0.0,
                      image_size=image_size, device="cpu", seed=args.seed)
    data = load_dataset("shapes", "unlabeled", n=cfg.num_unlabeled, image_size=image_size, seed=args.seed)

    def simclr():
        torch.manual_seed(args.seed)  # the same initial weights on both paths
        backbone, dim = make_backbone("resnet_tiny", width=width)
        return make_method("simclr", backbone, dim, temperature=temperature)

    def sslkit_path():
        history = train(simclr(), data, cfg, progress=False)
        return history.steps * batch_size, history.final_loss

    def lightly_path():  # lightly's examples/pytorch/simclr.py, on a torchvision-style dataset of PIL images
        method = simclr()
        pil_data = data.subset(torch.arange(len(data)))  # ImageData -> a PIL image per item, like CIFAR10
        pil_data.transform = lightly_transform("simclr", image_size)  # SimCLRTransform(input_size=32, ...)
        loader = torch.utils.data.DataLoader(pil_data, batch_size=batch_size, shuffle=True, drop_last=True,
                                             num_workers=num_workers, generator=torch.Generator().manual_seed(0))
        optimizer = torch.optim.AdamW(method.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        seen, losses = 0, []
        for (x0, x1), _ in loader:
            loss = method.criterion(method(x0), method(x1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen, losses = seen + len(x0), losses + [loss.item()]
        return seen, sum(losses[-10:]) / len(losses[-10:])

    load_before = os.getloadavg()[0]
    (n_sslkit, loss_sslkit), t_sslkit = _timed(sslkit_path)
    (n_lightly, loss_lightly), t_lightly = _timed(lightly_path)  # includes starting the workers, as an epoch does
    sslkit_ips, lightly_ips = n_sslkit / t_sslkit, n_lightly / t_lightly
    return {"images_per_s_sslkit": round(sslkit_ips), "images_per_s_lightly": round(lightly_ips),
            "ratio": round(sslkit_ips / lightly_ips, 2), "target_ratio": 2.0, "epoch_s_sslkit": round(t_sslkit, 1),
            "epoch_s_lightly": round(t_lightly, 1), "final_loss_sslkit": round(loss_sslkit, 3),
            "final_loss_lightly": round(loss_lightly, 3), "backbone": f"resnet_tiny(width={width})",
            "batch_size": batch_size, "image_size": image_size, "num_images": len(data),
            "lightly_num_workers": num_workers, "torch_threads": torch.get_num_threads(),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


@benchmark
def bench_data(args) -> dict:
    """Prepared data (sslkit.prepared): preparation images/s, training images/s against in-memory data, and
    peak anonymous memory training on a 3 GB prepared set (``sslkit.databench``)."""
    from .databench import bench_data as run

    return run(args)


@benchmark
def bench_deploy(args) -> dict:
    """Notebook 09's classifier: file size and latency at batch 1 and 64, eager torch vs ONNX fp32 vs int8."""
    from .deploycli import bench

    return bench(seed=args.seed)


@benchmark
def bench_train(args) -> dict:
    """Training steps, images/s and peak memory: sslkit's fastest settings vs a lightly-example loop.

    ``sslkit.trainbench.bench_train`` says what each path runs."""
    from .trainbench import bench_train as run

    return run(args)


@benchmark
def bench_step(args) -> dict:
    """A lesson's training step taken apart: FLOPs per image, phases, top operators, threads, CPU speed options.

    ``sslkit.stepbench`` says what each figure is; ``--recipe`` picks the lesson recipe (default simclr)."""
    from .stepbench import bench_step as run

    return run(args)


# the benchmarks that read each flag (--seed: every one)
FLAG_USERS = {"backbone": ("dataset", "eval", "train"), "num_train": ("dataset", "eval"),
              "num_test": ("dataset", "eval"), "epochs": ("dataset",), "device": ("train",), "batch_size": ("train",),
              "steps": ("train", "step", "data"), "workers": ("train",), "compile": ("train",), "recipe": ("step",)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sslkit.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="which benchmark: " + ", ".join(BENCHMARKS))
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", help="default resnet_small (train: resnet_tiny on a CPU, resnet18 on a GPU)")
    parser.add_argument("--num-train", type=int, default=10_000)
    parser.add_argument("--num-test", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=15, help="supervised epochs for the calibration")
    parser.add_argument("--device", default="auto", help="train: auto, cpu, cuda or mps")
    parser.add_argument("--batch-size", type=int, help="train: default 128 on a CPU, 512 on a GPU")
    parser.add_argument("--steps", type=int, default=10, help="train, step: steps measured (after 2 warm-up steps)")
    parser.add_argument("--workers", type=int, help="train: DataLoader workers of the lightly loop (CPU 2, GPU 8)")
    parser.add_argument("--compile", action="store_true", help="train: also try torch.compile on a CPU (minutes)")
    parser.add_argument("--recipe", help="step: the lesson recipe whose step is taken apart (default simclr)")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        for name, fn in BENCHMARKS.items():
            print(f"{name:12s} {fn.__doc__.splitlines()[0]}")
        return 0
    if args.name not in BENCHMARKS:
        parser.error(f"unknown benchmark {args.name!r}; choose one of: {', '.join(BENCHMARKS)}")
    for flag in ("num_train", "num_test", "epochs", "batch_size", "steps", "workers"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "workers" else 1):
            parser.error(f"--{flag.replace('_', '-')} {value}: give at least {0 if flag == 'workers' else 1}")
    for flag, names in FLAG_USERS.items():  # a flag the benchmark does not read is refused, not silently ignored
        if getattr(args, flag) != parser.get_default(flag) and args.name not in names:
            users = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
            parser.error(f"--{flag.replace('_', '-')} does nothing for {args.name}: only {users} "
                         f"read{'s' if len(names) == 1 else ''} it")
    if args.backbone is None and args.name != "train":
        args.backbone = "resnet_small"
    from .config import resolve_device
    from .models import check_backbone
    from .recipes import recipe

    try:  # bad names and a device this machine lacks: the message and exit 2, before any benchmark runs
        if args.backbone is not None:
            check_backbone(args.backbone)
        if args.name == "train":  # the one benchmark that runs on --device
            resolve_device(args.device)
        if args.name == "step":  # the lesson recipe whose step is taken apart
            recipe(args.recipe or "simclr", "lesson")
            from .stepbench import two_view_recipes
            if (args.recipe or "simclr") not in two_view_recipes():
                raise ValueError(f"--recipe {args.recipe}: bench step takes apart a step of two views and loss(x0, x1); "
                                 f"choose one of: {', '.join(two_view_recipes())}")
    except (ValueError, RuntimeError) as e:
        parser.error(str(e))
    from .results import hardware, versions

    start = time.perf_counter()
    figures = BENCHMARKS[args.name](args)
    out = {"benchmark": args.name, **figures, "wall_time_s": round(time.perf_counter() - start, 1),
           "versions": versions(), "hardware": hardware()}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
