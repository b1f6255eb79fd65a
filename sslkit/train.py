"""The training loop every method shares, its speed options and checkpoints, and ``python -m sslkit.train``.

A *method* is an ``nn.Module`` with

- ``backbone``: the network whose features are evaluated (kNN, linear probe);
- ``training_step(images, labels) -> loss``: ``images`` is a uint8 batch (B, 3, H, W) already on
  the device; the method makes its own views and targets from it (rotations, crops, ...).
  ``labels`` are the class labels (-1 where unknown); only supervised training may use them;
- optionally ``on_step_end(step, total_steps)``, called after each optimizer step (momentum
  encoders update their teacher there).

``train(method, data, cfg)`` runs the loop: seeded shuffling of the in-memory images, AdamW,
linear warm-up then cosine decay, a progress bar with the live loss, optional kNN accuracy
every epoch, an optional time budget, and a guard against a diverging (NaN/Inf) loss. It
returns a ``History``. The same seed on the same machine gives the same numbers (unless a time
budget cuts the run, which depends on the machine's speed).

On top of that (notebook 05 measures each):

- **speed options**, knobs in ``cfg.extra`` (``SPEED_KNOBS``): mixed precision, ``channels_last``,
  ``torch.compile``, gradient accumulation, and the linear / square-root learning-rate scaling rules;
- **checkpoints**: with ``run_dir`` (or ``cfg.extra["run_dir"]``) a checkpoint is written every epoch
  and whenever the run stops; running the same training again with the same config resumes from the
  newest one and ends with the same numbers as a run that was never interrupted. Ctrl-C (the stop
  button in a notebook) or SIGTERM (a job scheduler) finishes the current step, saves and stops;
- **many processes**: under ``torchrun``, pass ``dist_info=sslkit.distributed.init_distributed()``:
  each process trains on its shard of every epoch with DistributedDataParallel;
- **a script**: ``python -m sslkit.train simclr --profile smoke`` (``main``), the same code path as the
  notebooks, unchanged under ``torchrun --nproc_per_node=N``.

>>> import sslkit
>>> cfg = sslkit.make_config("smoke", num_epochs=1, batch_size=32, time_budget_s=None)
>>> data = sslkit.load_dataset("shapes", "train", n=64, seed=0)
>>> backbone, dim = sslkit.make_backbone("resnet_tiny")
>>> history = fit_supervised(backbone, data, cfg, progress=False)
>>> history.steps, len(history.losses), history.stopped_early
(2, 2, False)
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config, resolve_device
from .data import ImageData, to_float


@dataclass
class History:
    """What a training run did, step by step and epoch by epoch."""

    losses: list = field(default_factory=list)  # training loss of every step (the mean over processes)
    lrs: list = field(default_factory=list)  # learning rate used at every step
    steps: int = 0  # optimizer steps taken (in total, when the run was resumed)
    epochs: float = 0.0  # passes over the data completed (fractional when stopped mid-epoch)
    knn_epochs: list = field(default_factory=list)  # the epochs at which kNN accuracy was measured
    knn: list = field(default_factory=list)  # kNN accuracy at those epochs (with a monitor)
    wall_time_s: float = 0.0  # seconds spent training (kNN monitoring and checkpointing excluded)
    images_per_s: float = 0.0  # training throughput, all processes together
    stopped_early: bool = False  # True when the run ended before its last step, for any reason below
    stop_reason: str | None = None  # "time budget", "non-finite loss", "interrupted", "SIGTERM", "max steps" or None
    message: str | None = None  # the explanation printed when the run stopped early
    resumed_from_step: int = 0  # the step this run continued from (0: it started fresh)
    checkpoint: str | None = None  # the newest checkpoint this run wrote (with a run_dir)
    world_size: int = 1  # processes that trained together

    @property
    def final_loss(self) -> float:
        """Mean loss of the last 10 steps (nan when no step was taken)."""
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else float("nan")


def lr_at(progress: float, lr: float, warmup_fraction: float) -> float:
    """Learning rate at ``progress`` in [0, 1]: linear warm-up from 0, then cosine decay to 0.

    >>> [round(lr_at(p, 1.0, 0.2), 3) for p in (0.0, 0.1, 0.2, 0.6, 1.0)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if progress < warmup_fraction:
        return lr * progress / warmup_fraction
    rest = (progress - warmup_fraction) / max(1.0 - warmup_fraction, 1e-12)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(rest, 1.0)))


OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("cosine", "constant")


# cfg.extra's <method>_<setting>: one method's own settings (method_config)
METHOD_SETTINGS = ("lr", "weight_decay", "batch_size", "lr_schedule", "optimizer")


def make_optimizer(method: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """The optimizer ``train`` uses: AdamW (default) or SGD with momentum, from ``cfg``.

    Knobs in ``cfg.extra``: ``optimizer`` ("adamw" or "sgd"), ``betas`` (AdamW, default (0.9, 0.999);
    MAE uses (0.9, 0.95)), ``momentum`` (SGD, default 0.9), ``lr_schedule`` ("cosine" after warm-up,
    or "constant" after warm-up). A method may define ``param_groups()`` returning torch parameter
    groups; a group's ``lr_scale`` multiplies the scheduled learning rate (fine-tuning gives the
    backbone a smaller one than the head) and its ``weight_decay`` replaces ``cfg.weight_decay``.

    >>> import sslkit
    >>> cfg = sslkit.make_config("smoke", optimizer="sgd", momentum=0.8)
    >>> make_optimizer(torch.nn.Linear(2, 2), cfg).defaults["momentum"]
    0.8
    """
    name = cfg.extra.get("optimizer", "adamw")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    schedule = cfg.extra.get("lr_schedule", "cosine")
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}")
    if hasattr(method, "param_groups"):
        groups = [dict(g) for g in method.param_groups()]
        for g in groups:
            g["params"] = [p for p in g["params"] if p.requires_grad]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": [p for p in method.parameters() if p.requires_grad]}]
        groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError(f"{type(method).__name__} has no trainable parameters; did you freeze the backbone?")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.extra.get("momentum", 0.9),
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             betas=tuple(cfg.extra.get("betas", (0.9, 0.999))))


def method_config(method_name: str, cfg: Config, lr: float | None = None) -> Config:
    """``cfg`` for training ``method_name``: the method's own optimiser recipe where it has one, and the settings
    ``cfg.extra`` gives that method alone.

    A method class may carry ``recipe = dict(optimizer=..., lr=..., weight_decay=...)`` (SimSiam does:
    SGD as in lightly's CIFAR-10 benchmark; AdamW collapsed it on notebook 02's views) that replaces the
    profile's AdamW.
    It applies only when ``cfg.extra`` names no ``optimizer`` nor ``<method>_optimizer`` (naming one means "I
    choose"); its learning
    rate is then ``lr`` when given, else the recipe's.

    Any method's own settings come from ``cfg.extra`` as ``<method>_lr``, ``<method>_weight_decay``,
    ``<method>_batch_size``, ``<method>_lr_schedule`` and ``<method>_optimizer`` (notebook 03 sets ``simsiam_lr``,
    ``byol_optimizer`` and ``dino_batch_size``), and win over the rest; naming ``<method>_optimizer`` also turns the
    recipe off.

    >>> import sslkit
    >>> c = method_config("simsiam", sslkit.make_config("smoke"))
    >>> c.extra["optimizer"], c.lr, c.weight_decay
    ('sgd', 0.06, 0.0005)
    >>> method_config("simsiam", sslkit.make_config("smoke", simsiam_lr=0.12)).lr
    0.12
    >>> method_config("simsiam", sslkit.make_config("smoke", optimizer="adamw")).extra["optimizer"]
    'adamw'
    >>> method_config("simclr", sslkit.make_config("smoke")) == sslkit.make_config("smoke")
    True
    >>> method_config("dino", sslkit.make_config("smoke", dino_batch_size=64)).batch_size
    64
    >>> method_config("byol", sslkit.make_config("smoke", byol_lr_schedule="constant")).extra["lr_schedule"]
    'constant'
    """
    import dataclasses

    from .methods import method_class

    recipe = getattr(method_class(method_name), "recipe", None)
    if recipe is not None and "optimizer" not in cfg.extra and f"{method_name}_optimizer" not in cfg.extra:
        cfg = dataclasses.replace(cfg, lr=lr if lr is not None else recipe["lr"], weight_decay=recipe["weight_decay"],
                                  extra={**cfg.extra, "optimizer": recipe["optimizer"]})
    own = {field: cfg.extra[f"{method_name}_{field}"] for field in METHOD_SETTINGS
           if f"{method_name}_{field}" in cfg.extra}
    if not own:
        return cfg
    fields = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: v for k, v in own.items() if k in fields},
                               extra={**cfg.extra, **{k: v for k, v in own.items() if k not in fields}})


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generators (CPU and GPU) and return a CPU generator for shuffling."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# speed options: knobs in cfg.extra, so a notebook, a sweep or `--set precision=bf16` sets them alike

SPEED_KNOBS = {
    "precision": "fp32",  # "fp32", "bf16" or "fp16": the dtype autocast runs matmuls and convolutions in
    #                        (fp16 on a GPU adds a GradScaler against underflowing gradients)
    "channels_last": None,  # True: conv weights and activations stored NHWC (faster convolutions on tensor
    #                          cores and oneDNN); False: classic NCHW; None: as the backbone was built
    "compile": False,  # torch.compile every network of the method (slow first step; eager with a warning
    #                    where compilation fails)
    "accumulate": 1,  # compute each batch in this many chunks, summing gradients: the same batch and
    #                   update with 1/k of the activation memory (not more negatives for contrastive losses)
    "lr_scaling": None,  # "linear" or "sqrt": scale lr from base_batch_size to the global batch
    "base_batch_size": None,  # the batch lr was tuned at (None: batch_size, i.e. tuned on one process)
}
RUN_KNOBS = {
    "run_dir": None,  # checkpoints go here every epoch; a run finds them there and resumes
    "keep_last": 3,  # checkpoints kept in run_dir (None: all)
}
PRECISIONS = ("fp32", "bf16", "fp16")
DATA_ON_DEVICE_MAX_BYTES = 4 * 2**30  # on a GPU, training images up to this size are copied to it once (uint8:
#                                       CIFAR-10 is 150 MB), so no step waits for a host-to-device copy
LR_SCALING_RULES = ("linear", "sqrt")


@dataclass(frozen=True)
class SpeedOptions:
    """The speed knobs of one run, checked (``speed_options`` reads them from a config)."""

    precision: str = "fp32"
    channels_last: bool | None = None
    compile: bool = False
    accumulate: int = 1


def speed_options(cfg: Config, device: torch.device | None = None) -> SpeedOptions:
    """The speed knobs of ``cfg.extra``, checked against ``device``.

    >>> import sslkit
    >>> speed_options(sslkit.make_config("smoke", precision="bf16", accumulate=2))
    SpeedOptions(precision='bf16', channels_last=None, compile=False, accumulate=2)
    """
    opts = SpeedOptions(**{k: cfg.extra.get(k, SPEED_KNOBS[k]) for k in ("precision", "channels_last", "compile",
                                                                           "accumulate")})
    if opts.precision not in PRECISIONS:
        raise ValueError(f"unknown precision {opts.precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if not isinstance(opts.accumulate, int) or opts.accumulate < 1:
        raise ValueError(f"accumulate={opts.accumulate!r} must be a whole number >= 1 (chunks per batch)")
    device = device or torch.device("cpu")
    if opts.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"precision='bf16' but {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                           f"use precision='fp16' (with gradient scaling) on this GPU")
    if opts.precision == "fp16" and device.type == "cpu":
        warnings.warn("precision='fp16' on a CPU: most CPUs have no fast float16 kernels (10x slower than fp32 "
                      "on the CPU this kit was written on); use 'bf16' on a CPU", RuntimeWarning, stacklevel=3)
    return opts


def peak_lr(cfg: Config, world_size: int = 1) -> float:
    """The peak learning rate of a run: ``cfg.lr``, scaled to the global batch if ``lr_scaling`` asks.

    The global batch is ``batch_size * world_size`` (every process takes ``batch_size`` images a
    step). With ``lr_scaling="linear"`` (Goyal et al. 2017) or ``"sqrt"`` the lr tuned at
    ``base_batch_size`` (default ``batch_size``: tuned on one process) grows with it.

    >>> import sslkit
    >>> cfg = sslkit.make_config("smoke", lr=0.1, batch_size=64, lr_scaling="linear")
    >>> peak_lr(cfg, world_size=1), peak_lr(cfg, world_size=4)
    (0.1, 0.4)
    """
    from .distributed import scale_lr

    rule = cfg.extra.get("lr_scaling")
    if rule is None:
        return cfg.lr
    if rule not in LR_SCALING_RULES:
        raise ValueError(f"unknown lr_scaling {rule!r}; choose one of: {', '.join(LR_SCALING_RULES)} (or None)")
    base = cfg.extra.get("base_batch_size") or cfg.batch_size
    return scale_lr(cfg.lr, cfg.batch_size * world_size, base, rule)


def autocast(device: torch.device, precision: str = "fp32"):
    """The context that runs a forward pass at ``precision`` on ``device`` ("fp32": no autocast).

    >>> with autocast(torch.device("cpu"), "bf16"):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.bfloat16
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


def compile_networks(method: nn.Module) -> list[str]:
    """``torch.compile`` every network of ``method`` in place; returns their names.

    ``nn.Module.compile`` keeps the parameter names, so checkpoints of a compiled run load into an
    eager one and back. Compilation happens at the first call (tens of seconds, minutes on a small
    CPU). Where torch cannot compile here, nothing is compiled and a warning says why.
    """
    if not torch._dynamo.is_dynamo_supported():
        warnings.warn("torch.compile is not supported on this Python/platform; training runs eagerly",
                      RuntimeWarning, stacklevel=3)
        return []
    names = []
    for name, child in method.named_children():
        if any(True for _ in child.parameters()):  # networks, not losses or augmentations
            child.compile()
            names.append(name)
    return names


def uncompile_networks(method: nn.Module) -> None:
    """Undo ``compile_networks``: the networks run eagerly again."""
    for child in method.children():
        child._compiled_call_impl = None  # what nn.Module.compile set (torch's own attribute)
    torch._dynamo.reset()


def _is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def _out_of_memory_message(e, batch_size, opts: SpeedOptions, device, step) -> str:
    chunks = f" in {opts.accumulate} chunks of {batch_size // opts.accumulate}" if opts.accumulate > 1 else ""
    tries = [f"accumulate={2 * opts.accumulate} (the same batch in smaller chunks: less activation memory, "
             f"the same update)"]
    if opts.precision == "fp32":
        tries.append("precision='bf16' (or 'fp16' on GPUs without bf16)")
    if not opts.channels_last:
        tries.append("channels_last=True")
    tries.append("a smaller batch_size (with lr scaled by sslkit.distributed.scale_lr), or a smaller backbone or "
                 "image size")
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return (f"out of memory on {device} at step {step} with batch_size={batch_size}{chunks} (precision "
            f"{opts.precision}). Try, from the least change to the run to the most: " + "; ".join(tries)
            + f". ({first})")


# ----------------------------------------------------------------------------------------------
# the pieces of the loop


class _LivePlot:
    """A loss curve that redraws in place in a notebook; does nothing outside one."""

    def __init__(self, every: int):
        self.every, self.handle, self.fig = every, None, None
        try:
            from IPython import get_ipython
            from IPython.display import display
            if get_ipython() is None or not hasattr(get_ipython(), "kernel"):
                return  # headless: no plot
            from matplotlib.figure import Figure
        except ImportError:
            return
        self.fig = Figure(figsize=(6, 2.5))
        self.ax = self.fig.add_subplot()
        self.handle = display(self.fig, display_id=True)

    def update(self, history: History, force: bool = False):
        if self.handle is None or (not force and history.steps % self.every):
            return
        self.ax.clear()
        self.ax.plot(history.losses, lw=0.8)
        self.ax.set(xlabel="step", ylabel="loss", title=f"step {history.steps}, loss {history.losses[-1]:.3f}")
        self.fig.tight_layout()
        self.handle.update(self.fig)


def _knn(method, monitor, history: History, epoch: float):
    from .evaluate import extract_features, knn_accuracy
    bank, test = monitor
    backbone = method.backbone
    acc = knn_accuracy(extract_features(backbone, bank), bank.labels, extract_features(backbone, test), test.labels)
    history.knn_epochs.append(round(epoch, 3))
    history.knn.append(acc)
    return acc


class _StopSignals:
    """While training: Ctrl-C (SIGINT, a notebook's stop button) and SIGTERM ask the loop to stop after
    the current step instead of killing it mid-step; a second Ctrl-C stops at once."""

    def __init__(self, verbose: bool):
        self.reason, self.verbose, self.previous = None, verbose, {}

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.reason is not None:
            raise KeyboardInterrupt  # the second Ctrl-C
        self.reason = "interrupted" if signum == signal.SIGINT else "SIGTERM"
        if self.verbose:
            print(f"\n{signal.Signals(signum).name}: stopping after this step (and saving, with a run_dir)", flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


_NOT_THE_RUN = {"device", "num_workers"} | set(RUN_KNOBS) | {"compile", "channels_last"}  # may change on resume


def _plain(value):
    """``value`` if weights-only loading can read it back (numbers, strings, lists of them), else its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


def run_config(cfg: Config, method: nn.Module, world_size: int = 1) -> dict:
    """What a checkpoint records about its run; resuming requires the same (``_NOT_THE_RUN`` may differ)."""
    values = {k: _plain(v) for k, v in cfg.to_dict().items() if k != "extra"}
    values.update({k: _plain(v) for k, v in cfg.extra.items()})
    values.update(method=type(method).__name__, world_size=world_size)
    return {k: v for k, v in values.items() if k not in _NOT_THE_RUN}


def _check_same_run(saved: dict, now: dict, path: Path):
    from .checkpoint import CheckpointError

    diffs = [f"{k}: {saved.get(k, '(not set)')!r} there, {now.get(k, '(not set)')!r} now"
             for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diffs:
        hint = (f" (resume with the same number of processes: torchrun --nproc_per_node={saved['world_size']})"
                if "world_size" in " ".join(diffs) else "")
        raise CheckpointError(f"{path.parent} holds a run with another config: " + "; ".join(diffs[:6])
                              + f"{' ...' if len(diffs) > 6 else ''}{hint}. Run with the same settings to resume "
                              f"it, or give a new run_dir to start a new run.")


def _mean_over_processes(values: list[float], info) -> list[float]:
    """The mean of ``values`` over all processes (the values themselves on one process)."""
    if not info.distributed:
        return values
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return (t / info.world_size).tolist()


# ----------------------------------------------------------------------------------------------
# the loop


def train(method: nn.Module, data: ImageData, cfg: Config, monitor=None, live_plot: bool = False,
          plot_every: int = 20, progress: bool = True, *, run_dir: str | Path | None = None,
          max_steps: int | None = None, time_limit_s: float | None = None, callback=None,
          dist_info=None) -> History:
    """Train ``method`` on the images of ``data`` with the settings of ``cfg``.

    Args:
        method: an ``nn.Module`` with ``backbone`` and ``training_step(images, labels) -> loss``
            (see the module docstring); moved to ``resolve_device(cfg.device)``.
        data: the training images (their labels are passed on; SSL methods ignore them).
        cfg: uses num_epochs, batch_size, lr, weight_decay, warmup_epochs, time_budget_s,
            device and seed, and the knobs of ``SPEED_KNOBS``, ``RUN_KNOBS`` and ``make_optimizer``
            in ``cfg.extra``.
        monitor: ``(bank, test)`` labeled ``ImageData``: kNN accuracy of ``method.backbone`` is
            measured before training, after every epoch and when the run stops.
        live_plot: redraw a loss curve in the notebook every ``plot_every`` steps.
        progress: show a tqdm progress bar with the live loss.
        run_dir: write a checkpoint here every epoch and when the run stops (default
            ``cfg.extra["run_dir"]``); if it holds one already, resume from the newest. The config
            must be the same (device, compile and channels_last may change).
        max_steps: stop after this many steps in all (a planned stop: saved like an interruption).
        time_limit_s: stop after this many seconds *without* steering the schedule: a cap for runs
            planned in steps (fine-tuning), which then give the same numbers however fast the machine
            is, unless the cap is reached. ``cfg.time_budget_s`` instead fits the schedule to the time.
        callback: ``callback(history)`` after every step (raising ``KeyboardInterrupt`` there acts
            like pressing the stop button).
        dist_info: a ``sslkit.distributed.DistInfo`` under torchrun: every process trains on its own
            shard of each epoch with ``batch_size`` images a step, DistributedDataParallel averages the
            gradients; only rank 0 shows progress and writes checkpoints.

    The learning-rate schedule runs on ``progress = max(step / total_steps, elapsed / budget)``,
    so a time-budgeted run still warms up and decays to 0 by the time it stops.
    A NaN or Inf loss stops the run, restores the weights of the last finite step and warns.
    Out of GPU memory: ``torch.OutOfMemoryError`` saying what to try.
    """
    from tqdm.auto import tqdm

    from .checkpoint import (CheckpointError, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint,
                             set_rng_state)
    from .distributed import DistInfo, ddp_step, shard

    if hasattr(method, "check_batch_size"):  # before anything runs or is written (e.g. MoCo's queue)
        method.check_batch_size(cfg.batch_size)

    info = dist_info or DistInfo(device=resolve_device(cfg.device))
    device, main = info.device, info.is_main
    opts = speed_options(cfg, device)
    generator = seed_everything(cfg.seed)  # the shuffling order: the same on every process (then sharded)
    if info.rank:
        torch.manual_seed(cfg.seed + info.rank)  # augmentations: different random crops on every process
    method.to(device).train()
    if opts.channels_last is not None:
        method.to(memory_format=torch.channels_last if opts.channels_last else torch.contiguous_format)
    optimizer = make_optimizer(method, cfg)
    scaler = torch.amp.GradScaler("cuda") if opts.precision == "fp16" and device.type == "cuda" else None

    images_all, labels_all = data.images, data.labels
    small = images_all.numel() * images_all.element_size() <= DATA_ON_DEVICE_MAX_BYTES
    if device.type != "cpu" and small and not getattr(data, "memory_mapped", False):  # a memory map: each step reads only its batch
        images_all, labels_all = images_all.to(device), labels_all.to(device)  # once; every step indexes on the device
    n = len(data) // info.world_size  # images per process and epoch
    if n < 1:
        raise ValueError(f"{len(data)} images cannot be shared by {info.world_size} processes")
    batch_size = min(cfg.batch_size, n)
    if batch_size % opts.accumulate:
        raise ValueError(f"batch size {batch_size} is not a multiple of accumulate={opts.accumulate}; choose a "
                         f"batch size that the chunks divide, e.g. {batch_size - batch_size % opts.accumulate}")
    steps_per_epoch = n // batch_size  # the last partial batch is dropped (BatchNorm and equal steps)
    total_steps = steps_per_epoch * cfg.num_epochs
    warmup_fraction = min(cfg.warmup_epochs / cfg.num_epochs, 1.0)
    budget = cfg.time_budget_s
    schedule = cfg.extra.get("lr_schedule", "cosine")
    lr_peak = peak_lr(cfg, info.world_size)
    run_dir = run_dir or cfg.extra.get("run_dir")
    keep_last = cfg.extra.get("keep_last", RUN_KNOBS["keep_last"])
    config = run_config(cfg, method, info.world_size)
    history = History(world_size=info.world_size)
    elapsed, last_finite, shuffle_state = 0.0, None, generator.get_state()

    # resume: the newest checkpoint that loads (rank 0 picks it, every process reads it)
    path = latest_checkpoint(run_dir) if run_dir and main else None
    if info.distributed:
        import torch.distributed as dist
        box = [str(path) if path else None]
        dist.broadcast_object_list(box, src=0)
        path = Path(box[0]) if box[0] else None
    if path is not None:
        first = load_checkpoint(path, restore_rng=False)
        if "history" not in first.get("extra", {}):
            raise CheckpointError(f"{path} was not written by sslkit.train.train (no training state in it); "
                                  f"give train a run_dir of its own")
        _check_same_run(first["config"], config, path)
        if first["extra"]["steps_per_epoch"] != steps_per_epoch:
            raise CheckpointError(f"{path} was saved by a run with {first['extra']['steps_per_epoch']} steps per "
                                  f"epoch, this one has {steps_per_epoch}: the data is not the same size; train on "
                                  f"the same data to resume, or give a new run_dir")
        state = load_checkpoint(path, method, optimizer)  # weights, optimizer, rank 0's RNG
        extra = state["extra"]
        saved = extra["history"]
        history.losses, history.lrs = list(saved["losses"]), list(saved["lrs"])
        history.knn_epochs, history.knn = list(saved["knn_epochs"]), list(saved["knn"])
        history.steps = history.resumed_from_step = state["step"]
        elapsed, last_finite, shuffle_state = extra["elapsed"], extra["last_finite"], extra["shuffle_state"]
        generator.set_state(shuffle_state)
        if info.distributed and len(extra.get("rng_per_rank", [])) == info.world_size:
            set_rng_state(extra["rng_per_rank"][info.rank])
        if scaler is not None and "scaler" in extra:
            scaler.load_state_dict(extra["scaler"])
        history.checkpoint = str(path)
        if main:
            print(f"resuming from {path} at step {history.steps} of {total_steps} "
                  f"({history.steps / steps_per_epoch:.2f} epochs)")

    def save(rng=None, gather=True) -> None:
        """A checkpoint of the run as it is after ``history.steps`` steps (rank 0 writes it)."""
        extra = {"history": {"losses": history.losses, "lrs": history.lrs, "knn_epochs": history.knn_epochs,
                             "knn": history.knn},
                 "elapsed": elapsed, "last_finite": last_finite, "shuffle_state": shuffle_state,
                 "steps_per_epoch": steps_per_epoch, "total_steps": total_steps}
        rng = rng or rng_state()
        if info.distributed and gather:  # every process's random state (their augmentations differ)
            import torch.distributed as dist
            everyone = [None] * info.world_size
            dist.all_gather_object(everyone, rng)
            extra["rng_per_rank"] = everyone
        if scaler is not None:
            extra["scaler"] = scaler.state_dict()
        if main:
            epoch = math.ceil(history.steps / steps_per_epoch)  # the epoch the last step belongs to
            written = save_checkpoint(run_dir, model=method, optimizer=optimizer, epoch=epoch, step=history.steps,
                                      config=config, extra=extra, keep_last=keep_last, rng=rng)
            history.checkpoint = str(written)
        if info.distributed and gather:
            dist.barrier()

    compiled = compile_networks(method) if opts.compile else []
    step_fn = ddp_step(method, info) if info.distributed else method.training_step
    no_sync = step_fn.no_sync if info.distributed else contextlib.nullcontext
    state = [t for t in method.state_dict().values() if t.is_floating_point()]
    good = [t.detach().clone() for t in state]  # the weights of the last step whose loss was finite
    plot = _LivePlot(plot_every) if live_plot and main else None
    if monitor is not None and history.steps == 0:
        _knn(method, monitor, history, 0.0)

    def one_step(images, labels) -> float:
        """Forward and backward of one batch, in ``accumulate`` chunks; the mean loss (nan: stopped)."""
        optimizer.zero_grad(set_to_none=True)
        k, total = opts.accumulate, 0.0
        for c, (x, y) in enumerate(zip(images.chunk(k), labels.chunk(k))):
            with no_sync() if c < k - 1 else contextlib.nullcontext():  # DDP averages gradients at the last chunk
                with autocast(device, opts.precision):
                    loss = step_fn(x, y)
                value = _mean_over_processes([loss.item()], info)[0]
                if not math.isfinite(value):
                    return value
                (scaler.scale(loss / k) if scaler is not None else loss / k).backward()
            total += value / k
        return total

    bar = tqdm(total=total_steps, initial=history.steps, desc=type(method).__name__, disable=not (progress and main),
               leave=True)
    start = time.perf_counter() - elapsed  # a resumed run goes on counting from where it stopped
    order, order_epoch, in_step, snapshot, buffers = None, -1, False, None, None
    saved_at = history.steps if path else None  # the step of the newest checkpoint
    try:
        with _StopSignals(verbose=main) as signals:
            while history.steps < total_steps:
                epoch, i = divmod(history.steps, steps_per_epoch)
                if epoch != order_epoch:
                    if i == 0:
                        shuffle_state = generator.get_state()  # resuming mid-epoch redraws this epoch's order
                    order = torch.randperm(len(data), generator=generator)
                    order = shard(order, info) if info.distributed else order  # this process's part
                    order_epoch = epoch
                # as of the last step; on many processes the mean, so that all of them stop at the same step
                elapsed, asked = _mean_over_processes([elapsed, signals.reason is not None], info)
                if asked:
                    history.stop_reason = signals.reason or "interrupted"  # another process was asked
                elif max_steps is not None and history.steps >= max_steps:
                    history.stop_reason = "max steps"
                elif time_limit_s is not None and elapsed >= time_limit_s:
                    history.stop_reason = "time limit"
                if history.stop_reason or (budget and elapsed >= budget):
                    break
                p = max(history.steps / total_steps, elapsed / budget if budget else 0.0)
                lr = lr_at(p, lr_peak, warmup_fraction) if schedule == "cosine" else \
                    lr_peak * min(1.0, p / warmup_fraction if warmup_fraction else 1.0)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                idx = order[i * batch_size:(i + 1) * batch_size].to(images_all.device)
                images = images_all[idx].to(device, non_blocking=True)  # (B, 3, H, W) uint8
                labels = labels_all[idx].to(device, non_blocking=True)
                snapshot = rng_state() if run_dir or compiled else None  # to save or retry this step as it was
                buffers = [b.clone() for b in method.buffers()] if run_dir else None  # BatchNorm statistics, queues
                in_step = True
                try:
                    value = one_step(images, labels)
                except Exception as e:  # noqa: BLE001 - compilation can fail in many ways; eager shows the real error
                    if not compiled or _is_out_of_memory(e):
                        raise
                    warnings.warn(f"torch.compile failed here ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                                  f"training goes on without compiling", RuntimeWarning, stacklevel=2)
                    uncompile_networks(method)
                    compiled = []
                    set_rng_state(snapshot)
                    value = one_step(images, labels)
                compiled = []  # compiled (or not) for good after the first step
                if not math.isfinite(value):
                    torch._foreach_copy_(state, good)
                    last = f"{last_finite:.4f}" if last_finite is not None else "none (the first step)"
                    history.stopped_early, history.stop_reason = True, "non-finite loss"
                    history.message = (
                        f"the loss became {value} at step {history.steps} (epoch {epoch}); the last finite "
                        f"loss was {last}. Training stopped and the weights of the last finite step were "
                        f"restored. Try a lower learning rate (lr={cfg.lr:g} -> {cfg.lr / 3:g}), more "
                        f"warm-up, or fp32 if you used mixed precision.")
                    warnings.warn(history.message, RuntimeWarning, stacklevel=2)
                    in_step = False
                    break
                torch._foreach_copy_(good, state)
                last_finite = value
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                history.steps += 1
                if hasattr(method, "on_step_end"):
                    method.on_step_end(history.steps, total_steps)
                history.losses.append(value)
                history.lrs.append(lr)
                in_step = False
                elapsed = time.perf_counter() - start
                bar.update(1)
                if history.steps % 5 == 0 or history.steps == 1:
                    bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                if plot is not None:
                    plot.update(history)
                if history.steps % steps_per_epoch == 0:  # the end of an epoch
                    history.epochs = epoch + 1.0
                    t = time.perf_counter()
                    if monitor is not None and epoch + 1 < cfg.num_epochs:
                        acc = _knn(method, monitor, history, history.epochs)
                        bar.set_postfix(loss=f"{history.losses[-1]:.3f}", knn=f"{acc:.3f}")
                    if run_dir:
                        shuffle_state = generator.get_state()  # the next epoch's order comes from here
                        save()
                        saved_at = history.steps
                    start += time.perf_counter() - t  # monitoring and saving do not count against the budget
                if callback is not None:
                    callback(history)
    except KeyboardInterrupt:  # raised mid-step (a second Ctrl-C, or by code): save the run as before that step
        history.stop_reason = "interrupted"
        if in_step and buffers is not None:  # the forward pass had updated them
            for b, before in zip(method.buffers(), buffers):
                b.copy_(before)
        if run_dir and saved_at != history.steps:
            save(rng=snapshot if in_step else None, gather=False)
            saved_at = history.steps
    except Exception as e:
        if _is_out_of_memory(e):
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if run_dir and saved_at != history.steps and not info.distributed:
                save(rng=snapshot if in_step else None)
            raise torch.OutOfMemoryError(_out_of_memory_message(e, batch_size, opts, device, history.steps)) from e
        raise
    finally:
        bar.close()
    if run_dir and saved_at != history.steps:  # whatever stopped the run, nothing it did is lost
        save()
    history.wall_time_s = time.perf_counter() - start
    history.epochs = history.steps / steps_per_epoch
    history.images_per_s = history.steps * batch_size * info.world_size / max(history.wall_time_s, 1e-9)
    stopped = history.stop_reason in ("interrupted", "SIGTERM", "max steps")
    if stopped:
        history.stopped_early = True
        where = (f"saved in {history.checkpoint}: run the same training again (same config and run_dir) to resume"
                 if run_dir else "nothing was saved (give run_dir=... to make a run resumable)")
        history.message = f"{history.stop_reason} after {history.steps} of {total_steps} steps " \
                          f"({history.epochs:.2f} epochs); {where}"
        if main and history.stop_reason != "max steps":
            print(history.message)
    elif history.stop_reason == "time limit":
        history.stopped_early = True
        history.message = (f"time limit of {time_limit_s:g} s reached after {history.steps} of {total_steps} steps "
                           f"({history.epochs:.2f} epochs), before the learning rate had decayed; raise the limit "
                           f"or plan fewer steps")
        if main:
            print(history.message)
    elif history.steps < total_steps and not history.stopped_early:
        history.stopped_early, history.stop_reason = True, "time budget"
        history.message = (f"time budget of {budget:g} s reached after {history.steps} of {total_steps} steps "
                           f"({history.epochs:.2f} epochs); " + ("the learning rate had decayed to 0" if schedule == "cosine"
                                                                 else "the learning rate was still at its constant value"))
        if main:
            print(history.message)
    if plot is not None and history.losses:
        plot.update(history, force=True)
    if monitor is not None and history.losses and not stopped:
        _knn(method, monitor, history, history.epochs)
    return history


# ----------------------------------------------------------------------------------------------
# supervised training: the reference every self-supervised method is compared with


def flip_and_translate(images: torch.Tensor, max_shift: int = 4, generator: torch.Generator | None = None):
    """Random horizontal flips and translations of up to ``max_shift`` pixels, on a batch.

    ``images`` (B, C, H, W) of any dtype; the border is filled by reflection (as in the usual
    "pad 4 and crop" CIFAR augmentation). Runs on the batch's device, no Python loop.

    >>> x = torch.arange(16.).view(1, 1, 4, 4)
    >>> flip_and_translate(x, max_shift=0).shape
    torch.Size([1, 1, 4, 4])
    """
    b, _, h, w = images.shape
    dev = images.device
    rand = (lambda *s: torch.rand(*s, generator=generator).to(dev)) if generator is not None else \
        (lambda *s: torch.rand(*s, device=dev))
    flip = rand(b) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if max_shift == 0:
        return images
    padded = F.pad(images.float(), (max_shift,) * 4, mode="reflect").to(images.dtype)  # (B, C, H+2s, W+2s)
    sy = (rand(b) * (2 * max_shift + 1)).long()  # (B,) offsets in [0, 2s]
    sx = (rand(b) * (2 * max_shift + 1)).long()
    rows = sy[:, None] + torch.arange(h, device=dev)  # (B, H)
    cols = sx[:, None] + torch.arange(w, device=dev)  # (B, W)
    out = padded[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


class Supervised(nn.Module):
    """Cross-entropy on a linear head over the backbone, with flips and small translations.

    The upper reference line for every self-supervised method: the same backbone trained with
    all the labels.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, feature_dim: int | None = None, max_shift: int = 4,
                 rotate90: bool = False):
        super().__init__()
        self.backbone = backbone
        dim = feature_dim or backbone.feature_dim
        self.head = nn.Linear(dim, num_classes)
        self.max_shift, self.rotate90 = max_shift, rotate90

    def forward(self, x):
        return self.head(self.backbone(x))  # (B, num_classes)

    def training_step(self, images, labels):
        if (labels < 0).any():
            raise ValueError("supervised training needs labels, but this batch has unlabeled images (label -1); "
                             "train on a labeled split such as load_dataset(..., 'train', ...)")
        x = flip_and_translate(images, self.max_shift)
        if self.rotate90:  # only where a quarter turn keeps the class (e.g. shapes, not CIFAR-10)
            k = int(torch.randint(4, ()))
            x = torch.rot90(x, k, dims=(2, 3))
        return F.cross_entropy(self(to_float(x)), labels)


def fit_supervised(backbone: nn.Module, data: ImageData, cfg: Config, monitor=None, **kwargs) -> History:
    """Train ``backbone`` with a linear head on the labels of ``data`` (in place); returns the History.

    ``kwargs`` go to ``train`` (``live_plot``, ``progress``).
    """
    method = Supervised(backbone, data.num_classes)
    return train(method, data, cfg, monitor=monitor, **kwargs)


# ----------------------------------------------------------------------------------------------
# the script: python -m sslkit.train METHOD ..., the notebooks' code path, alone or under torchrun

# the backbone a method trains on when --backbone is not given and the profile's would not do
METHOD_BACKBONES = {"mae": "vit_tiny"}  # MAE masks patch tokens: it needs a ViT

EXAMPLES = """examples:
  python -m sslkit.train simclr --profile smoke
  python -m sslkit.train byol --epochs 20 --set precision=bf16 --set width=8 --run-dir runs/byol
  torchrun --nproc_per_node=2 -m sslkit.train simclr --profile smoke --device cpu        # 2 CPU processes (gloo)
  torchrun --nproc_per_node=8 -m sslkit.train simclr --profile full --set lr_scaling=sqrt  # 8 GPUs (NCCL)

Re-running a command with the same --run-dir resumes the run where it stopped (Ctrl-C or SIGTERM save first).
--set KEY=VALUE sets any Config field or knob: a method's (temperature=0.2, queue_size=4096, target_momentum=0.9:
where a momentum network's schedule starts), the backbone's (width=8), the views' (crop_scale=(0.5,1.0),
grayscale_prob=0.5, view_size=24), training's (precision, channels_last, compile, accumulate, lr_scaling,
base_batch_size, optimizer, betas, momentum: SGD's, lr_schedule, keep_last)."""


def _parameters(fn) -> set[str]:
    import inspect
    return {name for name, p in inspect.signature(fn).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self", "backbone", "feature_dim"}


def parse_settings(pairs: list[str]) -> dict:
    """``["temperature=0.2", "name=x"]`` -> ``{"temperature": 0.2, "name": "x"}`` (Python literals where they parse).

    >>> parse_settings(["temperature=0.2", "crop_scale=(0.5, 1.0)", "optimizer=sgd", "compile=True"])
    {'temperature': 0.2, 'crop_scale': (0.5, 1.0), 'optimizer': 'sgd', 'compile': True}
    """
    import ast

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: write KEY=VALUE, e.g. --set temperature=0.2")
        try:
            out[key.strip().lower()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip().lower()] = value.strip()  # a plain string: optimizer=sgd
    return out


def build(method_name: str, cfg: Config, distributed: bool = False) -> nn.Module:
    """The method of a run, as the notebooks build it: ``make_backbone`` then ``make_method``.

    Knobs in ``cfg.extra`` go where their name fits: the backbone's constructor (``width``, ``last_width``), the
    method's (``temperature``), the views' ``AugmentParams`` (``crop_scale``, ``grayscale_prob``; ``view_size``:
    the views' size in pixels, default the images'). DINO keeps its own views (lightly's ``DINOTransform``'s) unless
    a view knob is set; then, as notebook 03 trains it, its global views are those ``AugmentParams``.
    With ``distributed``, methods that can gather negatives across processes do
    (``gather_distributed=True``: SimCLR's NT-Xent sees every process's batch).
    """
    import dataclasses

    from .augment import AugmentParams
    from .methods import method_class
    from .models import BACKBONES, backbone_overrides, make_backbone

    cls = method_class(method_name)
    init = _parameters(cls.__init__)
    backbone_knobs = backbone_overrides(cfg)
    method_knobs = {k: v for k, v in cfg.extra.items() if k in init}
    views = {k: v for k, v in cfg.extra.items() if k in {f.name for f in dataclasses.fields(AugmentParams)}}
    if "image_size" in _parameters(BACKBONES[cfg.backbone][0]):
        backbone_knobs.setdefault("image_size", cfg.image_size)
    size = cfg.extra.get("view_size", cfg.image_size)  # training views may be smaller than the images
    if "image_size" in init:  # DINO: the size of its global views
        method_knobs.setdefault("image_size", size)
    # the views: every method's, or DINO's global ones when a view knob is set (else it keeps its own)
    view_arg = "augment" if "augment" in init else "global_views" if views and "global_views" in init else None
    if view_arg:
        method_knobs.setdefault(view_arg, AugmentParams(**{"image_size": size, **views}))
    if distributed and "gather_distributed" in init:
        method_knobs.setdefault("gather_distributed", True)
    torch.manual_seed(cfg.seed)  # the same initial weights in every process (DDP also copies rank 0's)
    backbone, dim = make_backbone(cfg.backbone, **backbone_knobs)
    return cls(backbone, dim, **method_knobs)


def _known_settings(method_name: str, backbone: str) -> set[str]:
    import dataclasses

    from .augment import AugmentParams
    from .methods import method_class
    from .models import BACKBONES

    return ({f.name for f in dataclasses.fields(Config)} | set(SPEED_KNOBS) | set(RUN_KNOBS)
            | {"optimizer", "betas", "momentum", "lr_schedule", "view_size"}
            | {f"{method_name}_{field}" for field in METHOD_SETTINGS}
            | {f.name for f in dataclasses.fields(AugmentParams)}
            | _parameters(method_class(method_name).__init__) | _parameters(BACKBONES[backbone][0]))


def main(argv: list[str] | None = None) -> int:
    """``python -m sslkit.train METHOD [options]``: train, evaluate (kNN on the test split), write results.

    Returns the exit status: 0 when the run finished (or had finished before), 130 or 143 when
    Ctrl-C or SIGTERM stopped it (the checkpoint is saved; the same command resumes it).
    """
    import argparse
    import difflib

    from .config import PROFILES, make_config
    from .data import load_split
    from .distributed import init_distributed
    from .methods import METHODS
    from .models import BACKBONES

    parser = argparse.ArgumentParser(prog="python -m sslkit.train", epilog=EXAMPLES,
                                     description="Train a self-supervised method as the notebooks do; runs "
                                                 "unchanged under torchrun.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", help="one of: " + ", ".join(METHODS))
    parser.add_argument("--profile", default="lesson", help=f"one of: {', '.join(PROFILES)} (default lesson)")
    parser.add_argument("--dataset", help="shapes, cifar10, stl10, imagenette or an image folder (default: the "
                                          "profile's)")
    parser.add_argument("--backbone", help=f"one of: {', '.join(BACKBONES)} (default: the profile's; vit_tiny for mae)")
    parser.add_argument("--epochs", type=int, help="passes over the unlabeled split (default: the profile's)")
    parser.add_argument("--batch-size", type=int, help="images per step and process; the global batch is this "
                                                       "times the number of processes")
    parser.add_argument("--lr", type=float, help="peak learning rate (see --set lr_scaling=linear|sqrt)")
    parser.add_argument("--time-budget", type=float, help="stop training cleanly after this many seconds")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (under torchrun: each process its GPU)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other setting; repeatable")
    parser.add_argument("--run-dir", help="checkpoints every epoch; if it holds some, resume from the newest")
    parser.add_argument("--max-steps", type=int, help="stop (and save) after this many steps in all")
    parser.add_argument("--results", help="the results JSON (default results/train_METHOD.PROFILE.json)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.method not in METHODS:
        parser.error(f"unknown method {args.method!r}; choose one of: {', '.join(METHODS)}")
    try:
        settings = parse_settings(args.set)
        backbone = args.backbone or METHOD_BACKBONES.get(args.method)  # MAE brings its ViT
        cfg = make_config(args.profile, dataset=args.dataset, backbone=backbone, num_epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, time_budget_s=args.time_budget, device=args.device,
                          seed=args.seed, **settings)
        known = _known_settings(args.method, cfg.backbone)
        for name in sorted(set(settings) - known):
            close = difflib.get_close_matches(name, known, n=3)
            raise ValueError(f"unknown setting {name!r} for {args.method} on {cfg.backbone}"
                             f"{f' (did you mean {close[0]}?)' if close else ''}; it understands Config fields, "
                             f"{args.method}'s and {cfg.backbone}'s arguments, the views' AugmentParams and the "
                             f"training knobs (see --help)")
        speed_options(cfg)
        info = init_distributed(cfg.device)  # under torchrun: join the others; "cuda" where there is none: an error
    except (ValueError, RuntimeError) as e:
        parser.error(str(e))

    cfg = method_config(args.method, cfg, lr=args.lr)  # e.g. SimSiam: SGD, unless --set optimizer=...
    say = print if info.is_main else (lambda *a, **k: None)  # only rank 0 talks
    try:  # before anything is written: a bad knob's value stops here, and the method says which
        method = build(args.method, cfg, distributed=info.distributed)
        make_optimizer(method, cfg)  # an unknown optimizer or lr_schedule (e.g. --set byol_lr_schedule=...) too
        if hasattr(method, "check_batch_size"):  # e.g. MoCo's queue takes whole batches
            method.check_batch_size(cfg.batch_size)
    except ValueError as e:
        parser.error(str(e))
    from .results import Results, check_writable, default_results_path

    results_path = args.results or default_results_path(f"train_{args.method}", cfg.profile)
    try:  # the data and the results folder before the results file: a missing dataset, an unfinished preparation
        unlabeled = load_split(cfg, "unlabeled")  # or a folder that cannot be written stops here, having written nothing
        if info.is_main:
            check_writable(results_path)
    except (OSError, ValueError, RuntimeError) as e:  # incl. DatasetNotFoundError, PreparationIncomplete
        parser.error(str(e).replace("RESULTS_PATH=", "--results ").replace("set RESULTS_PATH to", "give --results"))
    results = Results(f"train_{args.method}", cfg, results_path) if info.is_main else None
    say(f"{args.method} on {cfg.dataset} with {cfg.backbone}, profile {cfg.profile}: {info.world_size} process(es) on "
        f"{info.device}, batch {cfg.batch_size} per process ({cfg.batch_size * info.world_size} in all), "
        f"{cfg.extra.get('optimizer', 'adamw')} lr {peak_lr(cfg, info.world_size):g}")
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
                    "global_batch_size": cfg.batch_size * info.world_size, "lr": peak_lr(cfg, info.world_size),
                    "resumed_from_step": history.resumed_from_step})
    if history.losses:
        results.record("final_loss", history.final_loss)
    if history.stop_reason in ("interrupted", "SIGTERM"):
        say(f"stopped: {history.message}")
        return 130 if history.stop_reason == "interrupted" else 143
    if history.stop_reason == "non-finite loss":  # marked in the results file, and a failed exit for scripts
        results.record("diverged", 1)
        say(f"failed: {history.message}")
        return 1
    from .evaluate import extract_features, knn_accuracy
    bank, test = load_split(cfg, "train"), load_split(cfg, "test")
    knn = knn_accuracy(extract_features(method.backbone, bank), bank.labels, extract_features(method.backbone, test),
                       test.labels)
    results.record("knn", knn)
    say(f"{history.steps} steps ({history.epochs:.2f} epochs) in {history.wall_time_s:.1f} s, "
        f"{history.images_per_s:.0f} images/s; kNN accuracy on the test split {knn:.3f}; results in {results.path}")
    return 0


if __name__ == "__main__":
    import sys

    from sslkit.train import main as _main  # the importable module, not this __main__ copy of it

    sys.exit(_main())
