"""One lesson training step taken apart: ``python -m sslkit.bench step``.

Where the time of a lesson's training step goes on this machine, and what the CPU's options buy. For the
recipe's step (default: notebook 02's SimCLR, ``--recipe NAME`` for another) it measures

- the work: floating-point operations per image of the forward and backward pass (torch's ``FlopCounterMode``),
- the phases of a step: the two views, the forward pass with the loss, the backward pass, the optimizer,
  each the median over the measured steps,
- the rate the forward and backward pass reach, as a share of a large float32 matrix product on the same threads
  (the most these cores do in practice),
- the operators that take the time (``torch.profiler``, self CPU time, the top ones with their share),
- the step at one thread instead of all, and AdamW's three implementations (for-loop, foreach, fused),
- images/s of whole training steps (``sslkit.train.train``) with each CPU speed option of ``sslkit.speed``
  (channels_last, bf16 autocast, both), as ``python -m sslkit.bench train`` measures them.

Run it alone on the machine: a second job halves what every line shows.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from .config import torch_threads

PHASES = ("views", "forward", "backward", "optimizer")


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of an ``n`` x ``n`` float32 matrix product on the current threads, the best of ``repeats``: the rate
    these cores reach on the friendliest work there is, which a training step is compared with."""
    from .bench import _timed

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = min(_timed(torch.mm, a, b)[1] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def step_flops(method, images) -> int:
    """Floating-point operations of one forward and backward pass of ``method`` on the views of ``images`` (the
    views themselves not counted: they are cheap pixel arithmetic)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .augment import two_views

    x0, x1 = two_views(images, method.augment)
    with FlopCounterMode(display=False) as counter:
        method.loss(x0, x1).backward()
    method.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def phase_times(method, optimizer, images, steps: int, warmup: int = 2) -> dict:
    """Median seconds of each phase of ``steps`` training steps (after ``warmup`` steps), as ``train`` runs them."""
    from .augment import two_views

    times = {phase: [] for phase in PHASES}
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        x0, x1 = two_views(images, method.augment)
        t1 = time.perf_counter()
        loss = method.loss(x0, x1)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        if hasattr(method, "on_step_end"):  # a momentum encoder's update belongs to the optimizer's phase
            method.on_step_end(i + 1, warmup + steps)
        t4 = time.perf_counter()
        if i >= warmup:
            for phase, t in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[phase].append(t)
    return {phase: statistics.median(t) for phase, t in times.items()}


def top_operators(method, optimizer, images, steps: int = 3, top: int = 10) -> list[dict]:
    """The operators with the most self CPU time over ``steps`` training steps, with their share of the total."""
    import os

    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's "no GPU found" log line on a CPU machine
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        phase_times(method, optimizer, images, steps, warmup=0)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls_per_step": e.count // steps,
             "ms_per_step": round(e.self_cpu_time_total / steps / 1e3, 2)} for e in events[:top]]


def two_view_recipes() -> list[str]:
    """The recipes whose step ``bench step`` takes apart: two views of each image, then ``loss(x0, x1)``."""
    import inspect

    from .methods import method_class
    from .recipes import RECIPES

    def two_views(cls) -> bool:
        return hasattr(cls, "loss") and list(inspect.signature(cls.loss).parameters)[1:] == ["x0", "x1"]
    return [name for name, entry in RECIPES.items() if two_views(method_class(entry["method"]))]


def bench_step(args) -> dict:
    """The lesson step of ``--recipe`` (default simclr), taken apart: FLOPs, phases, operators, CPU options."""
    from .config import make_config
    from .data import load_dataset
    from .optim import make_optimizer
    from .recipes import RECIPES, build
    from .trainbench import format_table, throughput_table

    recipe = getattr(args, "recipe", None) or "simclr"
    cfg = make_config("lesson", recipe=recipe, device="cpu", seed=args.seed)
    method_name = RECIPES[recipe]["method"]
    steps, warmup = args.steps, 2
    data = load_dataset("shapes", "unlabeled", n=cfg.batch_size * (steps + warmup + 1), image_size=cfg.image_size,
                        seed=args.seed)
    images = data.images[:cfg.batch_size]
    threads = torch.get_num_threads()

    def fresh():
        method = build(method_name, cfg).train()
        return method, make_optimizer(method, cfg)

    method, _ = fresh()
    flops = step_flops(method, images)
    phases = phase_times(*fresh(), images, steps, warmup)
    fwd_bwd = phases["forward"] + phases["backward"]
    peak = matmul_gflops()
    ops = top_operators(*fresh(), images)

    with torch_threads(1):
        one_thread = phase_times(*fresh(), images, steps, warmup)
    optimizers = {}
    for impl in ("for-loop", "foreach", "fused") if cfg.extra.get("optimizer", "adamw") == "adamw" else ():
        method = build(method_name, cfg).train()
        flags = {"foreach": impl == "foreach", "fused": impl == "fused"}
        opt = torch.optim.AdamW(method.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **flags)
        optimizers[impl] = round(phase_times(method, opt, images, steps, warmup)["optimizer"] * 1e3, 2)

    rows = throughput_table(lambda: build(method_name, cfg), data, cfg,
                            ["fp32 (plain)", "channels_last", "bf16", "bf16 + channels_last"], steps, warmup)
    print(format_table(rows), file=sys.stderr)  # stdout carries the one JSON object
    step_s = sum(phases.values())
    return {
        "recipe": recipe, "profile": cfg.profile, "method": method_name, "backbone": cfg.backbone, "batch_size": cfg.batch_size,
        "view_size": cfg.extra.get("view_size", cfg.image_size), "torch_threads": threads, "steps": steps,
        "mflop_per_image_fwd_bwd": round(flops / cfg.batch_size / 1e6, 1),
        "phases_ms": {k: round(v * 1e3, 2) for k, v in phases.items()},  # the optimizer's includes on_step_end
        "phase_shares": {k: round(v / step_s, 3) for k, v in phases.items()},
        "images_per_s_phases": round(cfg.batch_size / step_s),  # from the phases' medians; the loop's: speed_options
        "gflops_fwd_bwd": round(flops / fwd_bwd / 1e9, 2), "gflops_matmul_fp32": round(peak, 1),
        "share_of_matmul_rate": round(flops / fwd_bwd / 1e9 / peak, 3),
        "top_operators": ops,
        "one_thread_phases_ms": {k: round(v * 1e3, 2) for k, v in one_thread.items()},
        "speedup_all_threads_over_one": round(sum(one_thread.values()) / step_s, 2),
        "optimizer_ms": optimizers,
        "speed_options": {r["option"]: {"images_per_s": round(r["images_per_s"]), "speedup": round(r["speedup"], 2)}
                          for r in rows if "images_per_s" in r},
    }
