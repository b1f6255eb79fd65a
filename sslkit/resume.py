"""Stopping and resuming a training run: what ``train`` keeps in its ``run_dir`` and how it continues.

With a ``run_dir``, ``train`` writes a checkpoint (``sslkit.checkpoint``) at the end of every epoch
and whenever the run stops: the weights, the optimizer, the random state of every process, the
shuffling state, the history so far and the run's config. Running the same training again with
the same ``run_dir`` continues from the newest checkpoint and ends with the same numbers as a run
that was never interrupted. Ctrl-C (a notebook's stop button) or SIGTERM (a job scheduler) ask the
loop to stop after the current step (``StopSignals``); a run stopped inside a step is saved as it
was before that step.

A run_dir holding another run is refused, naming what differs:

>>> import sslkit
>>> cfg = sslkit.make_config("smoke")
>>> check_same_run(run_config(cfg, torch.nn.Linear(2, 2)), run_config(cfg, torch.nn.Linear(2, 2)), Path("run/x"))
>>> check_same_run({"lr": 0.1}, {"lr": 0.2}, Path("run/epoch-0001.pt"))
Traceback (most recent call last):
...
sslkit.checkpoint.CheckpointError: run holds a run with another config: lr: 0.1 there, 0.2 now. Run with the same settings to resume it, or give a new run_dir to start a new run.
"""

from __future__ import annotations

import math
import signal
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from .checkpoint import (CheckpointError, _atomic_save, checkpoints_in, latest_checkpoint, load_checkpoint, rng_state,
                         save_checkpoint, set_rng_state)
from .config import Config

RUN_KNOBS = {
    "run_dir": None,  # checkpoints go here every epoch; a run finds them there and resumes
    "keep_last": 3,  # checkpoints kept in run_dir (None: all)
}
_NOT_THE_RUN = {"device", "num_workers"} | set(RUN_KNOBS) | {"compile", "channels_last"}  # may change on resume


class StopSignals:
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


def check_same_run(saved: dict, now: dict, path: Path):
    """Raise ``CheckpointError`` naming what differs when the checkpoint at ``path`` is of another run."""
    diffs = [f"{k}: {saved.get(k, '(not set)')!r} there, {now.get(k, '(not set)')!r} now"
             for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diffs:
        hint = (f" (resume with the same number of processes: torchrun --nproc_per_node={saved['world_size']})"
                if "world_size" in " ".join(diffs) else "")
        raise CheckpointError(f"{path.parent} holds a run with another config: " + "; ".join(diffs[:6])
                              + f"{' ...' if len(diffs) > 6 else ''}{hint}. Run with the same settings to resume "
                              f"it, or give a new run_dir to start a new run.")


def resumable(run_dir, config: dict, steps_per_epoch: int | None = None, num_images: int | None = None) -> Path | None:
    """The checkpoint in ``run_dir`` that a run with ``config`` (``run_config``) resumes from: the newest that loads,
    or None for a new run. ``CheckpointError`` when ``run_dir`` holds another run, or checkpoints none of which loads
    (the run would start again and prune them), or (when given) a run over data of another size: other
    ``steps_per_epoch`` or ``num_images`` (a folder that gained or lost images); a warning names newer ones skipped
    as corrupt."""
    files = checkpoints_in(run_dir) if run_dir and Path(run_dir).is_dir() else []
    path = latest_checkpoint(run_dir) if files else None
    if files and path is None:
        raise CheckpointError(f"{run_dir} holds checkpoints and none of them loads ({', '.join(p.name for p in files)}:"
                              f" corrupt or truncated); move them away (or delete them) to start a new run there, or "
                              f"give a new run_dir")
    if path is None:
        return None
    if path != files[-1]:
        warnings.warn(f"{run_dir}: {', '.join(p.name for p in files[files.index(path) + 1:])} could not be read "
                      f"(corrupt or truncated); resuming from {path.name}", RuntimeWarning)
    saved = load_checkpoint(path, restore_rng=False)
    if "history" not in saved.get("extra", {}):
        raise CheckpointError(f"{path} was not written by sslkit.train.train (no training state in it); "
                              f"give train a run_dir of its own")
    check_same_run(saved["config"], config, path)
    for name, now in (("steps_per_epoch", steps_per_epoch), ("num_images", num_images)):
        then = saved["extra"].get(name)
        if now is not None and then is not None and then != now:
            what = "steps per epoch" if name == "steps_per_epoch" else "images to train on"
            raise CheckpointError(f"{path} was saved by a run with {then} {what}, this one has {now}: the data is "
                                  f"not the same; train on the same data to resume, or give a new run_dir")
    return path


class RunDir:
    """The checkpoints of one ``train`` run in ``run_dir`` (None: nothing is saved, and every call is a no-op).

    ``train`` calls ``resume`` once, ``step_starts``/``step_ends`` around every step (the random state
    and the buffers before it: an interrupted step is saved as it was), ``save`` at the end of every
    epoch, ``interrupted`` or ``failed`` when the run stops inside a step, and ``finish`` at the end.
    ``new_epoch`` records the shuffling generator's state before an epoch's order is drawn: a run
    resumed mid-epoch redraws that epoch's order from it.
    """

    def __init__(self, run_dir, cfg: Config, method: nn.Module, optimizer, generator: torch.Generator, info,
                 steps_per_epoch: int, total_steps: int, num_images: int | None = None):
        self.dir, self.method, self.optimizer, self.generator, self.info = run_dir, method, optimizer, generator, info
        self.keep_last = cfg.extra.get("keep_last", RUN_KNOBS["keep_last"])
        self.config = run_config(cfg, method, info.world_size)
        self.steps_per_epoch, self.total_steps, self.scaler = steps_per_epoch, total_steps, None
        self.num_images = num_images  # the data's size: a resume on a folder that changed is refused
        self.shuffle_state, self.epoch = generator.get_state(), None  # the order of `epoch` is drawn from there
        self.saved_at = None  # the step of the newest checkpoint
        self.snapshot = self.buffers = None
        self.in_step = False

    def resume(self, history, scaler=None) -> float:
        """Continue from the newest checkpoint that loads (rank 0 picks it, every process reads it): the weights,
        the optimizer, the random states, ``history``; returns the seconds the run had trained (0: a new run)."""
        self.scaler = scaler
        path, refused = None, None
        if self.dir and self.info.is_main:
            try:
                path = resumable(self.dir, self.config, self.steps_per_epoch, self.num_images)
            except CheckpointError as error:  # raised on every process below: the others would wait for rank 0
                refused = error
        if self.info.distributed:
            import torch.distributed as dist
            box = [str(path) if path else None, str(refused) if refused else None]
            dist.broadcast_object_list(box, src=0)
            path = Path(box[0]) if box[0] else None
            refused = refused or (CheckpointError(box[1]) if box[1] else None)
        if refused is not None:
            raise refused
        if path is None:
            return 0.0
        state = load_checkpoint(path, self.method, self.optimizer)  # weights, optimizer, rank 0's RNG
        extra = state["extra"]
        saved = extra["history"]
        history.losses, history.lrs = list(saved["losses"]), list(saved["lrs"])
        history.knn_epochs, history.knn = list(saved["knn_epochs"]), list(saved["knn"])
        history.steps = history.resumed_from_step = self.saved_at = state["step"]
        self.shuffle_state = extra["shuffle_state"]
        self.generator.set_state(self.shuffle_state)
        if self.info.distributed and len(extra.get("rng_per_rank", [])) == self.info.world_size:
            set_rng_state(extra["rng_per_rank"][self.info.rank])
        elif self.info.distributed and self.info.rank:  # saved by `interrupted`: each process's own file
            self._restore_own_rng(path, state["step"])
        if scaler is not None and "scaler" in extra:
            scaler.load_state_dict(extra["scaler"])
        history.checkpoint = str(path)
        if self.info.is_main:
            print(f"resuming from {path} at step {history.steps} of {self.total_steps} "
                  f"({history.steps / self.steps_per_epoch:.2f} epochs)")
        return extra["elapsed"]

    def new_epoch(self, epoch: int) -> None:
        """Call before drawing the order of ``epoch``: the generator's state it is drawn from."""
        self.shuffle_state, self.epoch = self.generator.get_state(), epoch

    def step_starts(self) -> None:
        if self.dir:  # to save this step as it was, should it be interrupted
            self.snapshot, self.buffers = rng_state(), [b.clone() for b in self.method.buffers()]  # BatchNorm, queues
        self.in_step = True

    def step_ends(self) -> None:
        self.in_step = False

    def save(self, history, elapsed: float, rng=None, gather: bool = True) -> None:
        """A checkpoint of the run as it is after ``history.steps`` steps (rank 0 writes it)."""
        if not self.dir:
            return
        if self.epoch is not None and history.steps == (self.epoch + 1) * self.steps_per_epoch:
            self.shuffle_state = self.generator.get_state()  # the epoch is over: the next order comes from here
        extra = {"history": {"losses": history.losses, "lrs": history.lrs, "knn_epochs": history.knn_epochs,
                             "knn": history.knn},
                 "elapsed": elapsed, "last_finite": history.losses[-1] if history.losses else None,
                 "shuffle_state": self.shuffle_state, "steps_per_epoch": self.steps_per_epoch, "num_images": self.num_images,
                 "total_steps": self.total_steps}
        rng = rng or rng_state()
        if self.info.distributed and gather:  # every process's random state (their augmentations differ)
            import torch.distributed as dist
            everyone = [None] * self.info.world_size
            dist.all_gather_object(everyone, rng)
            extra["rng_per_rank"] = everyone
        if self.scaler is not None:
            extra["scaler"] = self.scaler.state_dict()
        if self.info.is_main:
            epoch = math.ceil(history.steps / self.steps_per_epoch)  # the epoch the last step belongs to
            written = save_checkpoint(self.dir, model=self.method, optimizer=self.optimizer, epoch=epoch,
                                      step=history.steps, config=self.config, extra=extra, keep_last=self.keep_last,
                                      rng=rng)
            history.checkpoint = str(written)
        if self.info.distributed and gather:
            dist.barrier()
        self.saved_at = history.steps

    def interrupted(self, history, elapsed: float) -> None:
        """A ``KeyboardInterrupt`` raised mid-step (a second Ctrl-C, or by code): save the run as before that
        step, its buffers (updated by the forward pass) put back. Under torchrun the other processes may be
        elsewhere, so nothing is gathered: rank 0 writes the checkpoint, every other process its random state
        (``rng-rank<r>.pt``, which ``resume`` reads when it is of the checkpoint's step)."""
        if self.in_step and self.buffers is not None:
            for b, before in zip(self.method.buffers(), self.buffers):
                b.copy_(before)
        if self.saved_at != history.steps:
            rng = (self.snapshot if self.in_step else None) or rng_state()
            self.save(history, elapsed, rng=rng, gather=False)
            if self.dir and self.info.distributed and self.info.rank:
                Path(self.dir).mkdir(parents=True, exist_ok=True)  # (rank 0 may not have made it yet)
                _atomic_save({"step": history.steps, "rng": rng}, self._own_rng_path(),
                             "the random state saved there before is intact")

    def _own_rng_path(self) -> Path:
        return Path(self.dir) / f"rng-rank{self.info.rank}.pt"

    def _restore_own_rng(self, checkpoint: Path, step: int) -> None:
        """This process's random state saved by ``interrupted`` at ``step``; else a warning that it goes on
        with rank 0's (its random crops then differ from those of a run that was never stopped)."""
        path = self._own_rng_path()
        saved = torch.load(path, weights_only=True) if path.is_file() else None
        if saved is not None and saved["step"] == step:
            set_rng_state(saved["rng"])
            return
        warnings.warn(f"{checkpoint} holds no random state of process {self.info.rank} at step {step} (the run was "
                      f"stopped at once, on processes at different steps); it goes on with process 0's, so its "
                      f"random crops differ from those of a run that was never stopped", RuntimeWarning)

    def failed(self, history, elapsed: float) -> None:
        """The step ran out of memory: save what the run had done (on one process; the others may be gone)."""
        if self.saved_at != history.steps and not self.info.distributed:
            self.save(history, elapsed, rng=self.snapshot if self.in_step else None)

    def finish(self, history, elapsed: float) -> None:
        """Whatever stopped the run, nothing it did is lost."""
        if self.saved_at != history.steps:
            self.save(history, elapsed)
