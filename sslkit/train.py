"""The training loop every method shares, and supervised training as its first user.

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

>>> import sslkit
>>> cfg = sslkit.make_config("smoke", num_epochs=1, batch_size=32, time_budget_s=None)
>>> data = sslkit.load_dataset("shapes", "train", n=64, seed=0)
>>> backbone, dim = sslkit.make_backbone("resnet_tiny")
>>> history = fit_supervised(backbone, data, cfg, progress=False)
>>> history.steps, len(history.losses), history.stopped_early
(2, 2, False)
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config, resolve_device
from .data import ImageData, to_float


@dataclass
class History:
    """What a training run did, step by step and epoch by epoch."""

    losses: list = field(default_factory=list)  # training loss of every step
    lrs: list = field(default_factory=list)  # learning rate used at every step
    steps: int = 0  # optimizer steps taken
    epochs: float = 0.0  # passes over the data completed (fractional when stopped mid-epoch)
    knn_epochs: list = field(default_factory=list)  # the epochs at which kNN accuracy was measured
    knn: list = field(default_factory=list)  # kNN accuracy at those epochs (with a monitor)
    wall_time_s: float = 0.0  # seconds spent training (kNN monitoring excluded)
    images_per_s: float = 0.0  # training throughput
    stopped_early: bool = False  # True when the time budget or a NaN/Inf loss ended the run
    stop_reason: str | None = None  # "time budget", "non-finite loss" or None
    message: str | None = None  # the explanation printed when the run stopped early

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


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generators (CPU and GPU) and return a CPU generator for shuffling."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


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


def train(method: nn.Module, data: ImageData, cfg: Config, monitor=None, live_plot: bool = False,
          plot_every: int = 20, progress: bool = True) -> History:
    """Train ``method`` on the images of ``data`` with the settings of ``cfg``.

    Args:
        method: an ``nn.Module`` with ``backbone`` and ``training_step(images, labels) -> loss``
            (see the module docstring); moved to ``resolve_device(cfg.device)``.
        data: the training images (their labels are passed on; SSL methods ignore them).
        cfg: uses num_epochs, batch_size, lr, weight_decay, warmup_epochs, time_budget_s,
            device and seed.
        monitor: ``(bank, test)`` labeled ``ImageData``: kNN accuracy of ``method.backbone`` is
            measured before training, after every epoch and when the run stops.
        live_plot: redraw a loss curve in the notebook every ``plot_every`` steps.
        progress: show a tqdm progress bar with the live loss.

    The learning-rate schedule runs on ``progress = max(step / total_steps, elapsed / budget)``,
    so a time-budgeted run still warms up and decays to 0 by the time it stops.
    A NaN or Inf loss stops the run, restores the weights of the last finite step and warns.
    """
    from tqdm.auto import tqdm

    device = resolve_device(cfg.device)
    generator = seed_everything(cfg.seed)
    method.to(device).train()
    optimizer = make_optimizer(method, cfg)

    n = len(data)
    batch_size = min(cfg.batch_size, n)
    steps_per_epoch = n // batch_size  # the last partial batch is dropped (BatchNorm and equal steps)
    total_steps = steps_per_epoch * cfg.num_epochs
    warmup_fraction = min(cfg.warmup_epochs / cfg.num_epochs, 1.0)
    budget = cfg.time_budget_s
    schedule = cfg.extra.get("lr_schedule", "cosine")
    history = History()
    state = [t for t in method.state_dict().values() if t.is_floating_point()]
    good = [t.detach().clone() for t in state]  # the weights of the last step whose loss was finite
    last_finite = None
    plot = _LivePlot(plot_every) if live_plot else None
    if monitor is not None:
        _knn(method, monitor, history, 0.0)

    bar = tqdm(total=total_steps, desc=type(method).__name__, disable=not progress, leave=True)
    elapsed = 0.0
    start = time.perf_counter()
    try:
        for epoch in range(cfg.num_epochs):
            order = torch.randperm(n, generator=generator)
            for i in range(steps_per_epoch):
                p = max(history.steps / total_steps, elapsed / budget if budget else 0.0)
                if budget and elapsed >= budget:
                    break
                lr = lr_at(p, cfg.lr, warmup_fraction) if schedule == "cosine" else \
                    cfg.lr * min(1.0, p / warmup_fraction if warmup_fraction else 1.0)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                idx = order[i * batch_size:(i + 1) * batch_size]
                images = data.images[idx].to(device, non_blocking=True)
                labels = data.labels[idx].to(device, non_blocking=True)
                loss = method.training_step(images, labels)
                value = loss.item()
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
                    break
                torch._foreach_copy_(good, state)
                last_finite = value
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                history.steps += 1
                if hasattr(method, "on_step_end"):
                    method.on_step_end(history.steps, total_steps)
                history.losses.append(value)
                history.lrs.append(lr)
                elapsed = time.perf_counter() - start
                bar.update(1)
                if history.steps % 5 == 0 or history.steps == 1:
                    bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                if plot is not None:
                    plot.update(history)
            else:
                history.epochs = epoch + 1.0
                if monitor is not None and epoch + 1 < cfg.num_epochs:
                    t = time.perf_counter()
                    acc = _knn(method, monitor, history, history.epochs)
                    start += time.perf_counter() - t  # monitoring does not count against the budget
                    bar.set_postfix(loss=f"{history.losses[-1]:.3f}", knn=f"{acc:.3f}")
                continue
            break  # the inner loop stopped early
    finally:
        bar.close()
    history.wall_time_s = time.perf_counter() - start
    history.epochs = history.steps / steps_per_epoch
    history.images_per_s = history.steps * batch_size / max(history.wall_time_s, 1e-9)
    if history.steps < total_steps and not history.stopped_early:
        history.stopped_early, history.stop_reason = True, "time budget"
        history.message = (f"time budget of {budget:g} s reached after {history.steps} of {total_steps} steps "
                           f"({history.epochs:.2f} epochs); the learning rate had decayed to 0")
        print(history.message)
    if plot is not None and history.losses:
        plot.update(history, force=True)
    if monitor is not None and history.losses:
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
