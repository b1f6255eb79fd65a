"""Training throughput: notebook 05's table of speed options and ``python -m sslkit.bench train``.

``throughput_table`` trains a fresh model for a few steps per speed option (``SPEED_OPTIONS``: the
knobs of ``sslkit.speed``, set through ``cfg.extra``) and reports images/s and peak memory, each
also as a ratio to the first row; ``measure_lightly_loop`` times the same model in a loop in the
style of lightly's examples (PIL images, a DataLoader with workers) for comparison. ``bench_train``
is the benchmark ``python -m sslkit.bench train`` runs with them.

>>> list(SPEED_OPTIONS)[:3], PLAIN["precision"]
(['fp32 (plain)', 'channels_last', 'bf16'], 'fp32')
"""

from __future__ import annotations

import time

import torch

PLAIN = {"precision": "fp32", "channels_last": False, "compile": False, "accumulate": 1}  # the plain fp32 loop
# name -> (the knobs it changes from PLAIN, needs a GPU, what it does)
SPEED_OPTIONS = {
    "fp32 (plain)": ({}, False, "float32, NCHW layout, eager: the reference"),
    "channels_last": ({"channels_last": True}, False, "NHWC layout: convolutions without transposes"),
    "bf16": ({"precision": "bf16"}, False, "autocast to bfloat16: half the bytes, fast units where the chip has them"),
    "fp16 + GradScaler": ({"precision": "fp16"}, True, "autocast to float16, loss scaling against underflow"),
    "accumulate 2": ({"accumulate": 2}, False, "the same batch in 2 chunks: less memory, a little slower"),
    "compile": ({"compile": True}, False, "torch.compile: fused kernels (the first step compiles)"),
    "bf16 + channels_last": ({"precision": "bf16", "channels_last": True}, False, "both"),
    "bf16 + channels_last + compile": ({"precision": "bf16", "channels_last": True, "compile": True}, False,
                                       "all three: the usual fastest setting on a GPU"),
}


class PeakMemory:
    """The peak memory a stretch of training needs above what was in use when ``reset`` was called, in MB.

    On a GPU: torch's CUDA allocator statistics (``max_memory_allocated``). On a Linux CPU: the
    process's resident-memory high-water mark, reset through ``/proc/self/clear_refs`` (torch's
    big CPU tensors go back to the operating system when freed, so this follows them); elsewhere
    ``peak_mb()`` is None. DataLoader worker processes are not counted.
    """

    def __init__(self, device: torch.device):
        self.device, self.base = device, None

    def reset(self):
        import gc
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed small blocks too
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # "reset the peak resident set size to the current one" (Linux >= 4.0)
            self.base = self._status("VmRSS")
        except OSError:
            self.base = None

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # kB -> bytes
        raise OSError(f"no {key} in /proc/self/status")

    def peak_mb(self) -> float | None:
        if self.base is None:
            return None
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = self._status("VmHWM")
        return max(peak - self.base, 0) / 2**20


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_training(make_method, data, cfg, steps: int = 5, warmup: int = 1, **knobs) -> dict:
    """Images per second and peak memory of ``steps`` training steps of ``sslkit.train.train``.

    ``make_method()`` builds a fresh method; ``knobs`` go into ``cfg.extra`` (``precision``,
    ``channels_last``, ``compile``, ``accumulate``). The first ``warmup`` steps (allocation,
    oneDNN/cuDNN plans, compilation) are timed apart, as ``first_steps_s``.
    """
    import dataclasses
    import warnings

    from .config import resolve_device
    from .train import train

    device = resolve_device(cfg.device)
    n_steps = max(1, len(data) // cfg.batch_size)
    cfg = dataclasses.replace(cfg, time_budget_s=None, num_epochs=max(cfg.num_epochs, -(-(warmup + steps) // n_steps)),
                              extra={**cfg.extra, **knobs})
    times, memory = [], PeakMemory(device)
    start = time.perf_counter()

    def callback(history):
        _sync(device)
        times.append(time.perf_counter())
        if history.steps == warmup:
            memory.reset()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train(make_method(), data, cfg, progress=False, max_steps=warmup + steps, callbacks=[callback])
    fell_back = any("torch.compile failed" in str(w.message) for w in caught)
    for w in caught:
        if "torch.compile failed" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    batch = min(cfg.batch_size, len(data))
    return {"images_per_s": steps * batch / (times[-1] - times[warmup - 1]), "peak_mem_mb": memory.peak_mb(),
            "first_steps_s": times[warmup - 1] - start, "loss": history.final_loss, "compile_fell_back": fell_back}


def measure_lightly_loop(make_method, data, cfg, steps: int = 5, warmup: int = 1, num_workers: int = 2,
                         pin_memory: bool | None = None) -> dict:
    """The same for a plain loop in the style of lightly's ``examples/pytorch/simclr.py``.

    A PIL image per item, lightly's ``SimCLRTransform`` in a DataLoader with ``num_workers``
    (``pin_memory`` and persistent workers on a GPU), float32, the method's loss on the two views,
    AdamW. Two-view methods only (SimCLR, MoCo, BYOL, SimSiam: they have ``loss(x0, x1)``).
    """
    from .augment import lightly_transform
    from .config import resolve_device

    device = resolve_device(cfg.device)
    method = make_method().to(device).train()
    if not hasattr(method, "loss"):
        raise ValueError(f"{type(method).__name__} has no loss(x0, x1): the lightly-style loop is for two-view methods")
    pil_data = data.subset(torch.arange(len(data)))  # ImageData -> a PIL image per item, like torchvision's CIFAR10
    pil_data.transform = lightly_transform("simclr", cfg.image_size)
    pin = device.type == "cuda" if pin_memory is None else pin_memory
    loader = torch.utils.data.DataLoader(pil_data, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         num_workers=num_workers, pin_memory=pin,
                                         persistent_workers=num_workers > 0,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    if len(loader) < warmup + steps:
        raise ValueError(f"{len(data)} images make {len(loader)} batches of {cfg.batch_size}; the measurement needs "
                         f"{warmup + steps}: give more images")
    optimizer = torch.optim.AdamW(method.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    memory, times, losses = PeakMemory(device), [], []
    start = time.perf_counter()
    for step, ((x0, x1), _) in enumerate(loader, start=1):
        x0, x1 = x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)
        loss = method.loss(x0, x1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if hasattr(method, "on_step_end"):
            method.on_step_end(step, len(loader))
        losses.append(loss.item())
        _sync(device)
        times.append(time.perf_counter())
        if step == warmup:
            memory.reset()
        if step == warmup + steps:
            break
    del loader  # stops the workers
    return {"images_per_s": steps * cfg.batch_size / (times[-1] - times[warmup - 1]), "peak_mem_mb": memory.peak_mb(),
            "first_steps_s": times[warmup - 1] - start, "loss": sum(losses[-steps:]) / steps}


def option_key(name: str) -> str:
    """A speed option's name as a metric name: "bf16 + channels_last" -> "bf16_channels_last".

    >>> option_key("fp32 (plain)"), option_key("bf16 + channels_last + compile")
    ('fp32_plain', 'bf16_channels_last_compile')
    """
    return "_".join(w for w in name.replace("(", " ").replace(")", " ").replace("+", " ").split())


def throughput_table(make_method, data, cfg, options=None, steps: int = 5, warmup: int = 1,
                     lightly_workers: int | None = None) -> list[dict]:
    """One row per speed option: images/s and peak memory, and both as ratios to the first row.

    ``options``: names from ``SPEED_OPTIONS`` (default: all); the first is the reference (put
    "fp32 (plain)" first). On a CPU the GPU-only ones are listed with ``skipped`` saying so. With
    ``lightly_workers`` a row for the lightly-example DataLoader loop is added. Each row has
    ``option``, ``key`` (for metric names), ``what``, and ``images_per_s``, ``peak_mem_mb``,
    ``first_steps_s``, ``speedup`` and ``memory_ratio`` or ``skipped``.
    """
    from .config import resolve_device

    device = resolve_device(cfg.device)
    rows = []
    for name in options or list(SPEED_OPTIONS):
        if name not in SPEED_OPTIONS:
            raise ValueError(f"unknown speed option {name!r}; choose from: {', '.join(SPEED_OPTIONS)}")
        knobs, gpu_only, what = SPEED_OPTIONS[name]
        row = {"option": name, "key": option_key(name), "what": what}
        if gpu_only and device.type != "cuda":
            row["skipped"] = f"needs a GPU (this run is on {device.type})"
        else:
            row.update(measure_training(make_method, data, cfg, steps, warmup, **{**PLAIN, **knobs}))
        rows.append(row)
    if lightly_workers is not None:
        row = {"option": f"lightly-style DataLoader ({lightly_workers} workers)", "key": "lightly_dataloader",
               "what": "PIL images, SimCLRTransform per image, fp32: lightly's example loop"}
        batches = len(data) // cfg.batch_size  # the loader's whole batches (drop_last), each step a new one
        if batches < warmup + steps:
            row["skipped"] = (f"{len(data)} images make {batches} whole batches of {cfg.batch_size}; it times "
                              f"{warmup + steps} (more images, or a smaller batch)")
        else:
            row.update(measure_lightly_loop(make_method, data, cfg, steps, warmup, num_workers=lightly_workers))
        rows.append(row)
    ref = next((r for r in rows if "images_per_s" in r), None)
    for row in rows:
        if "images_per_s" in row and ref is not None:
            row["speedup"] = row["images_per_s"] / ref["images_per_s"]
            if row["peak_mem_mb"] is not None and ref["peak_mem_mb"]:
                row["memory_ratio"] = row["peak_mem_mb"] / ref["peak_mem_mb"]
    return rows


def format_table(rows: list[dict]) -> str:
    """``throughput_table``'s rows as a text table."""
    lines = [f"{'option':36s} {'images/s':>9s} {'speedup':>8s} {'peak MB':>8s} {'memory':>7s} {'first steps':>12s}"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['option']:36s} {'skipped: ' + r['skipped']}")
            continue
        mem = f"{r['peak_mem_mb']:8.0f}" if r["peak_mem_mb"] is not None else f"{'n/a':>8s}"
        ratio = f"{r['memory_ratio']:6.2f}x" if "memory_ratio" in r else f"{'':>7s}"
        note = "  (compile failed: eager)" if r.get("compile_fell_back") else ""
        lines.append(f"{r['option']:36s} {r['images_per_s']:9.0f} {r['speedup']:7.2f}x {mem} {ratio} "
                     f"{r['first_steps_s']:11.1f}s{note}")
    return "\n".join(lines)


def bench_train(args) -> dict:
    """Training steps, images/s and peak memory: sslkit's fastest settings vs a lightly-example loop.

    sslkit: the uint8 images in memory, views made in batches on the device, and the fastest of
    its speed options measured here (bf16 / channels_last, and torch.compile on a GPU or with
    --compile). lightly: a DataLoader of PIL images with ``SimCLRTransform`` in worker processes,
    float32 (its ``examples/pytorch/simclr.py``). Same device, SimCLR model, batch and optimizer."""
    import os

    from .config import make_config, resolve_device
    from .data import load_dataset
    from .methods import make_method
    from .models import make_backbone

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    backbone = args.backbone or ("resnet18" if gpu else "resnet_tiny")
    arch = {} if backbone in ("resnet18", "vit_tiny") else {"width": 8 if not gpu else 32}
    batch_size = args.batch_size or (512 if gpu else 128)
    workers = args.workers if args.workers is not None else (8 if gpu else 2)
    steps, warmup = args.steps, 2
    data = load_dataset("shapes", "unlabeled", n=batch_size * (steps + warmup + 1), image_size=32, seed=args.seed)
    cfg = make_config("lesson", backbone=backbone, batch_size=batch_size, num_epochs=1, warmup_epochs=0.0,
                      device=str(device), seed=args.seed)

    def simclr():
        torch.manual_seed(args.seed)  # the same initial weights on both paths
        net, dim = make_backbone(backbone, **arch)
        return make_method("simclr", net, dim, temperature=0.2)

    candidates = ["bf16 + channels_last", "channels_last"]
    if gpu or args.compile:
        candidates.append("bf16 + channels_last + compile")
    load_before = os.getloadavg()[0]
    rows = throughput_table(simclr, data, cfg, ["fp32 (plain)", *candidates], steps, warmup, lightly_workers=workers)
    lightly, sslkit_rows = rows[-1], rows[:-1]
    best = max(sslkit_rows, key=lambda r: r["images_per_s"])
    mem = (round(best["peak_mem_mb"] / lightly["peak_mem_mb"], 2)
           if best["peak_mem_mb"] is not None and lightly["peak_mem_mb"] else None)
    return {"images_per_s_sslkit": round(best["images_per_s"]), "sslkit_settings": best["option"],
            "images_per_s_lightly": round(lightly["images_per_s"]),
            "ratio": round(best["images_per_s"] / lightly["images_per_s"], 2), "target_ratio_gpu": 3.0,
            "peak_mem_mb_sslkit": best["peak_mem_mb"] and round(best["peak_mem_mb"]),
            "peak_mem_mb_lightly": lightly["peak_mem_mb"] and round(lightly["peak_mem_mb"]),
            "memory_ratio": mem,
            "options": {r["option"]: {"images_per_s": round(r["images_per_s"]),
                                      "peak_mem_mb": r["peak_mem_mb"] and round(r["peak_mem_mb"]),
                                      "first_steps_s": round(r["first_steps_s"], 1)} for r in rows},
            "device": str(device), "backbone": backbone + "".join(f"(width={w})" for w in arch.values()),
            "batch_size": batch_size,
            "image_size": 32, "steps": steps, "warmup_steps": warmup, "lightly_num_workers": workers,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}

