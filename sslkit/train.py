"""The training loop every method shares: ``train(method, data, cfg)``.

A *method* is an ``nn.Module`` with

- ``backbone``: the network whose features are evaluated (kNN, linear probe);
- ``training_step(images, labels) -> loss``: ``images`` is a uint8 batch (B, 3, H, W) already on
  the device; the method makes its own views and targets from it (rotations, crops, ...).
  ``labels`` are the class labels (-1 where unknown); only supervised training may use them;
- optionally ``on_step_end(step, total_steps)``, its own update after each optimizer step
  (momentum encoders move their teacher there).

``train`` is the whole loop, to be read top to bottom: seeded shuffling of the in-memory images,
AdamW (or SGD), linear warm-up then cosine decay, an optional time budget, a guard against a
diverging (NaN/Inf) loss, and callbacks after every step (``sslkit.callbacks``: the progress bar,
the live loss plot, the kNN monitor, yours). It returns a ``History``. The same seed on the same
machine gives the same numbers (unless a time budget cuts the run, which depends on the machine's
speed). The rest lives in modules named for it: ``sslkit.optim`` (optimizer, schedule, seeding),
``sslkit.speed`` (mixed precision, channels_last, compile, accumulation: knobs in ``cfg.extra``),
``sslkit.resume`` (checkpoints in a ``run_dir``, Ctrl-C and SIGTERM, resuming), ``sslkit.distributed``
(under ``torchrun``: pass ``dist_info=sslkit.distributed.init_distributed()``), ``sslkit.supervised``
(the supervised baseline), ``sslkit.cli`` (``python -m sslkit.train simclr --profile smoke``: a recipe from a shell).

>>> import sslkit
>>> from sslkit.supervised import Supervised
>>> cfg = sslkit.make_config("smoke", num_epochs=1, batch_size=32, time_budget_s=None)
>>> data = sslkit.load_dataset("shapes", "train", n=64, seed=0)
>>> backbone, dim = sslkit.make_backbone("resnet_tiny")
>>> history = train(Supervised(backbone, data.num_classes, dim), data, cfg, progress=False)
>>> history.steps, len(history.losses), history.stopped_early
(2, 2, False)
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .callbacks import KnnMonitor, LivePlot, ProgressBar, call_all
from .config import Config, resolve_device
from .data import ImageData
from .distributed import DistInfo, shard
from .optim import make_optimizer, scheduled_lr, seed_everything, set_lr
from .resume import RunDir, StopSignals
from .speed import (Step, batches_per_epoch, data_on_device, is_out_of_memory, mean_over_processes, out_of_memory_error,
                    peak_lr, set_memory_format, speed_options)


@dataclass
class History:
    """What a training run did, step by step and epoch by epoch."""

    losses: list = field(default_factory=list)  # training loss of every step (the mean over processes)
    lrs: list = field(default_factory=list)  # learning rate used at every step
    steps: int = 0  # optimizer steps taken (in total, when the run was resumed)
    total_steps: int = 0  # the steps the run plans: epochs x steps per epoch
    epochs: float = 0.0  # passes over the data completed (fractional when stopped mid-epoch)
    knn_epochs: list = field(default_factory=list)  # the epochs at which kNN accuracy was measured
    knn: list = field(default_factory=list)  # kNN accuracy at those epochs (with a monitor)
    wall_time_s: float = 0.0  # seconds spent training (kNN monitoring and checkpointing excluded)
    images_per_s: float = 0.0  # training throughput, all processes together
    stopped_early: bool = False  # True when the run ended before its last step, for any reason below
    stop_reason: str | None = None  # "time budget", "non-finite loss", "interrupted", "SIGTERM", "max steps",
    #                                  "time limit" or None ("error" while an exception leaves train)
    message: str | None = None  # the explanation printed when the run stopped early
    resumed_from_step: int = 0  # the step this run continued from (0: it started fresh)
    checkpoint: str | None = None  # the newest checkpoint this run wrote (with a run_dir)
    world_size: int = 1  # processes that trained together
    replayed: bool = False  # True when loaded from a recorded run instead of trained (sslkit.replay)

    @property
    def final_loss(self) -> float:
        """Mean loss of the last 10 steps (nan when no step was taken)."""
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else float("nan")


# ----------------------------------------------------------------------------------------------
# the pieces of the loop that a reader can take on trust


class _Clock:
    """Seconds of training: ``tick()`` after every step; time inside ``paused()`` does not count."""

    def __init__(self, elapsed: float = 0.0):
        self.elapsed = elapsed  # as of the last tick; a resumed run goes on counting from where it stopped
        self.start = time.perf_counter() - elapsed

    def tick(self) -> float:
        self.elapsed = time.perf_counter() - self.start
        return self.elapsed

    @contextlib.contextmanager
    def paused(self):
        t = time.perf_counter()
        yield
        self.start += time.perf_counter() - t


class _LastFinite:
    """The weights (and buffers) of a method as of the last step whose loss was finite."""

    def __init__(self, method: nn.Module):
        self.state = [t for t in method.state_dict().values() if t.is_floating_point()]
        self.good = [t.detach().clone() for t in self.state]

    def keep(self):
        torch._foreach_copy_(self.good, self.state)

    def restore(self):
        torch._foreach_copy_(self.state, self.good)


def _stop_reason(signals: StopSignals, history: History, clock: _Clock, max_steps, time_limit_s, info) -> str | None:
    """Why the run stops before its next step (None: it goes on); on many processes all stop at the same step."""
    clock.elapsed, asked = mean_over_processes([clock.elapsed, signals.reason is not None], info)
    if asked:
        return signals.reason or "interrupted"  # (or another process was asked)
    if max_steps is not None and history.steps >= max_steps:
        return "max steps"
    if time_limit_s is not None and clock.elapsed >= time_limit_s:
        return "time limit"
    return None


def _stop_on_non_finite(history: History, loss: float, epoch: int, cfg: Config, last_finite: _LastFinite):
    """The loss became NaN or Inf: put back the weights of the last finite step, say what to try, and warn."""
    last_finite.restore()
    last = f"{history.losses[-1]:.4f}" if history.losses else "none (the first step)"
    history.stopped_early, history.stop_reason = True, "non-finite loss"
    history.message = (f"the loss became {loss} at step {history.steps + 1} (epoch {epoch + 1}); the last finite loss was "
                       f"{last}. Training stopped and the weights of the last finite step were restored. Try a "
                       f"lower learning rate (lr={cfg.lr:g} -> {cfg.lr / 3:g}), more warm-up, or fp32 if you used "
                       f"mixed precision.")
    warnings.warn(history.message, RuntimeWarning, stacklevel=3)


def _explain_stop(history: History, cfg: Config, time_limit_s, run_dir, verbose: bool) -> None:
    """``history.stopped_early`` and ``message`` for a run that ended before its last step; printed (rank 0)."""
    reason, total, done = history.stop_reason, history.total_steps, f"{history.steps} of {history.total_steps} steps"
    if reason in ("interrupted", "SIGTERM", "max steps"):
        where = (f"saved in {history.checkpoint}: run the same training again (same config and run_dir) to resume"
                 if run_dir else "no checkpoint to resume from (give run_dir=..., in the shell --run-dir, to make a "
                                  "run resumable)")
        history.message = f"{reason} after {done} ({history.epochs:.2f} epochs); {where}"
        verbose = verbose and reason != "max steps"
    elif reason == "time limit":
        history.message = (f"time limit of {time_limit_s:g} s reached after {done} ({history.epochs:.2f} epochs), "
                           f"before the learning rate had decayed; raise the limit or plan fewer steps")
    elif history.steps < total and not history.stopped_early:
        history.stop_reason = "time budget"
        history.message = (f"time budget of {cfg.time_budget_s:g} s reached after {done} ({history.epochs:.2f} "
                           f"epochs); " + ("the learning rate had decayed to 0"
                                           if cfg.extra.get("lr_schedule", "cosine") == "cosine"
                                           else "the learning rate was still at its constant value"))
    else:
        return
    history.stopped_early = True
    if verbose:
        print(history.message)


# ----------------------------------------------------------------------------------------------
# the loop


def check_batch(method, cfg: Config, num_images: int, world_size: int = 1) -> tuple[int, int]:
    """``(batch, steps_per_epoch)`` of a run over ``num_images`` images, refused (``ValueError``) where training would
    refuse it: the batch shrinks to a small dataset, and each chunk of ``accumulate`` must hold 2 images or more and
    suit the method (MoCo's queue takes whole chunks of keys)."""
    opts = speed_options(cfg)
    batch, steps_per_epoch = batches_per_epoch(num_images, cfg.batch_size, opts, world_size)
    chunk = batch // opts.accumulate  # what each forward pass sees
    images = f"{num_images} image{'s' if num_images != 1 else ''}"
    shrunk = (f" (the batch is {batch}, not {cfg.batch_size}: the dataset has {images} to train on"
              f"{f', shared by {world_size} processes' if world_size > 1 else ''})" if batch < cfg.batch_size else "")
    try:
        if chunk < 2:
            raise ValueError(f"batches of {chunk} image{' per accumulate chunk' if chunk != batch else ''}: "
                             f"self-supervised training compares the images of a batch, so it needs at least 2 per "
                             f"process{' and chunk' if chunk != batch else ''}; add images to the dataset"
                             f"{' or lower accumulate' if chunk != batch else ''}")
        if hasattr(method, "check_batch_size"):  # e.g. MoCo's queue takes whole batches
            method.check_batch_size(chunk)
    except ValueError as e:
        raise ValueError(str(e) + shrunk) from None
    return batch, steps_per_epoch


def train(method: nn.Module, data: ImageData, cfg: Config, monitor=None, live_plot: bool = False,
          plot_every: int = 20, progress: bool = True, *, run_dir: str | Path | None = None,
          max_steps: int | None = None, time_limit_s: float | None = None, callbacks=(),
          dist_info=None) -> History:
    """Train ``method`` on the images of ``data`` with the settings of ``cfg``; returns its ``History``.

    Args:
        method: an ``nn.Module`` with ``backbone`` and ``training_step(images, labels) -> loss``
            (see the module docstring); moved to ``resolve_device(cfg.device)``.
        data: the training images (their labels are passed on; SSL methods ignore them).
        cfg: num_epochs, batch_size, lr, weight_decay, warmup_epochs, time_budget_s, device, seed, and
            knobs in ``cfg.extra`` (``make_optimizer``'s, ``sslkit.speed.SPEED_KNOBS``, ``sslkit.resume.RUN_KNOBS``).
        monitor: ``(bank, test)`` labeled ``ImageData``: kNN accuracy before training, after every epoch
            and at the end (``sslkit.callbacks.KnnMonitor``).
        live_plot: redraw a loss curve in the notebook every ``plot_every`` steps (``LivePlot``).
        progress: show a progress bar with the live loss (``ProgressBar``).
        run_dir: write a checkpoint here every epoch and when the run stops (default ``cfg.extra["run_dir"]``);
            if it holds one already, resume from the newest (``sslkit.resume``).
        max_steps: stop after this many steps in all (a planned stop: saved like an interruption).
        time_limit_s: stop after this many seconds *without* steering the schedule (a cap for runs planned
            in steps); ``cfg.time_budget_s`` instead fits the schedule to the time.
        callbacks: functions ``f(history)`` called after every step (``sslkit.callbacks``); raising
            ``KeyboardInterrupt`` in one acts like pressing the stop button.
        dist_info: a ``sslkit.distributed.DistInfo`` under torchrun: every process trains on its shard of
            each epoch; DistributedDataParallel averages the gradients; rank 0 alone shows progress and saves.

    The learning rate follows ``progress = max(step / total_steps, elapsed / budget)``, so a run with a
    time budget still warms up and decays to 0 by the time it stops. A NaN or Inf loss stops the run,
    restores the weights of the last finite step and warns. Out of GPU memory: an error saying what to try.
    """
    info = dist_info or DistInfo(device=resolve_device(cfg.device))  # this process: the only one, or one of many
    batch_size, steps_per_epoch = check_batch(method, cfg, len(data), info.world_size)  # before anything runs
    opts = speed_options(cfg, info.device)
    generator = seed_everything(cfg.seed)  # the shuffling order: the same on every process (then sharded)
    if info.rank:
        torch.manual_seed(cfg.seed + info.rank)  # augmentations: different random crops on every process
    method.to(info.device).train()
    set_memory_format(method, opts.channels_last)
    optimizer = make_optimizer(method, cfg)
    images_all, labels_all = data_on_device(data, info.device)
    history = History(world_size=info.world_size, total_steps=steps_per_epoch * cfg.num_epochs)
    budget, warmup = cfg.time_budget_s, min(cfg.warmup_epochs / cfg.num_epochs, 1.0)
    lr_peak, schedule = peak_lr(cfg, info.world_size, batch_size), cfg.extra.get("lr_schedule", "cosine")
    step = Step(method, optimizer, opts, info)  # forward and backward with the speed options
    run = RunDir(run_dir or cfg.extra.get("run_dir"), cfg, method, optimizer, generator, info, steps_per_epoch,
                 history.total_steps, len(data))
    elapsed = run.resume(history, step.scaler)  # from the newest checkpoint in run_dir, if there is one
    last_finite = _LastFinite(method)
    kit = [KnnMonitor(method.backbone, *monitor) if monitor is not None else None,
           LivePlot(plot_every) if live_plot and info.is_main else None,
           ProgressBar(type(method).__name__) if progress and info.is_main else None]
    callbacks = [c for c in kit if c is not None] + ([callbacks] if callable(callbacks) else list(callbacks))
    call_all(callbacks, "on_train_start", history)
    clock, order_epoch = _Clock(elapsed), -1
    try:
        with StopSignals(verbose=info.is_main) as signals:
            while history.steps < history.total_steps:
                epoch, i = divmod(history.steps, steps_per_epoch)
                if epoch != order_epoch:  # each epoch a new order of the images (under torchrun: this process's share)
                    run.new_epoch(epoch)  # (a run resumed mid-epoch draws the same order again)
                    order, order_epoch = shard(torch.randperm(len(data), generator=generator), info), epoch
                history.stop_reason = _stop_reason(signals, history, clock, max_steps, time_limit_s, info)
                if history.stop_reason or (budget and clock.elapsed >= budget):
                    break
                p = max(history.steps / history.total_steps, clock.elapsed / budget if budget else 0.0)
                lr = scheduled_lr(p, lr_peak, warmup, schedule)
                set_lr(optimizer, lr)  # times a group's lr_scale where it has one (a fine-tuned backbone)
                idx = order[i * batch_size:(i + 1) * batch_size].to(images_all.device)
                images = images_all[idx].to(info.device, non_blocking=True)  # (B, 3, H, W) uint8
                labels = labels_all[idx].to(info.device, non_blocking=True)  # (B,), -1 where unknown
                run.step_starts()  # (a step interrupted in the middle is saved as it was before it)
                loss = step(images, labels)  # zero_grad, forward, backward: the mean loss (over processes)
                if not math.isfinite(loss):
                    _stop_on_non_finite(history, loss, epoch, cfg, last_finite)
                    break
                last_finite.keep()
                step.update()  # optimizer.step()
                history.steps += 1
                if hasattr(method, "on_step_end"):  # the method's own update (a momentum encoder's teacher)
                    method.on_step_end(history.steps, history.total_steps)
                history.losses.append(loss)
                history.lrs.append(lr)
                history.epochs = history.steps / steps_per_epoch
                run.step_ends()
                clock.tick()
                for callback in callbacks:
                    with contextlib.nullcontext() if getattr(callback, "timed", True) else clock.paused():
                        callback(history)
                if history.steps % steps_per_epoch == 0:  # the end of an epoch: a checkpoint (with a run_dir)
                    with clock.paused():
                        run.save(history, clock.elapsed)
    except KeyboardInterrupt:  # raised in a step (a second Ctrl-C) or by a callback: save the run as before it
        history.stop_reason = "interrupted"
        run.interrupted(history, clock.elapsed)
    except Exception as e:
        history.stop_reason = "error"
        call_all(callbacks, "on_train_end", history)  # the progress bar closes
        if is_out_of_memory(e):  # save what the run did, and say what to try
            run.failed(history, clock.elapsed)
            raise out_of_memory_error(e, batch_size, opts, info.device, history.steps) from e
        raise
    if history.stop_reason != "non-finite loss":  # whatever stopped the run, nothing it did is lost
        run.finish(history, clock.elapsed)  # (after a NaN the weights are a step behind the optimizer and the
        # step count: the newest checkpoint stays the last epoch's, whole)
    history.wall_time_s = clock.tick()
    history.epochs = history.steps / steps_per_epoch
    history.images_per_s = history.steps * batch_size * info.world_size / max(history.wall_time_s, 1e-9)
    _explain_stop(history, cfg, time_limit_s, run.dir, verbose=info.is_main)
    call_all(callbacks, "on_train_end", history)
    return history


# ----------------------------------------------------------------------------------------------
# the script: python -m sslkit.train METHOD ... (sslkit.cli), the notebooks' code path, alone or under torchrun

if __name__ == "__main__":
    import sys

    from sslkit.cli import main  # the importable modules, not this __main__ copy of the loop

    sys.exit(main())
