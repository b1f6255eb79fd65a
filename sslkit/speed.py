"""Speed options of the training loop: mixed precision, ``channels_last``, ``torch.compile``, gradient
accumulation, learning-rate scaling for bigger batches, and advice when the GPU runs out of memory.

Every option is a knob in ``cfg.extra`` (``SPEED_KNOBS``), so a notebook, a sweep or
``python -m sslkit.train ... --set precision=bf16`` sets them alike; notebook 05 measures each.
``Step`` is the forward and backward of one training step with these options applied: ``train``
calls it once per step and never needs to know which are on.

>>> import sslkit
>>> speed_options(sslkit.make_config("smoke", precision="bf16", accumulate=2))
SpeedOptions(precision='bf16', channels_last=None, compile=False, accumulate=2)
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .config import Config

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
    >>> speed_options(sslkit.make_config("smoke", accumulate=0))
    Traceback (most recent call last):
    ...
    ValueError: accumulate=0 must be a whole number >= 1 (chunks per batch)
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


def peak_lr(cfg: Config, world_size: int = 1, batch_size: int | None = None) -> float:
    """The peak learning rate of a run: ``cfg.lr``, scaled to the global batch if ``lr_scaling`` asks.

    The global batch is ``batch_size * world_size`` (every process takes ``batch_size`` images a
    step: the batch trained, smaller than ``cfg.batch_size`` where the dataset is; default ``cfg.batch_size``).
    With ``lr_scaling="linear"`` (Goyal et al. 2017) or ``"sqrt"`` the lr tuned at ``base_batch_size``
    (default ``cfg.batch_size``: tuned on one process) follows it.

    >>> import sslkit
    >>> cfg = sslkit.make_config("smoke", lr=0.1, batch_size=64, lr_scaling="linear")
    >>> peak_lr(cfg, world_size=1), peak_lr(cfg, world_size=4)
    (0.1, 0.4)
    >>> peak_lr(cfg, world_size=4, batch_size=16)  # a dataset of 64 images: 16 per process, 64 in all
    0.1
    """
    from .distributed import scale_lr

    rule = cfg.extra.get("lr_scaling")
    if rule is None:
        return cfg.lr
    if rule not in LR_SCALING_RULES:
        raise ValueError(f"unknown lr_scaling {rule!r}; choose one of: {', '.join(LR_SCALING_RULES)} (or None)")
    base = cfg.extra.get("base_batch_size") or cfg.batch_size
    return scale_lr(cfg.lr, (batch_size or cfg.batch_size) * world_size, base, rule)


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


def set_memory_format(method: nn.Module, channels_last: bool | None) -> None:
    """Store every weight of ``method`` NHWC (True) or NCHW (False); None leaves them as built."""
    if channels_last is not None:
        method.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def batches_per_epoch(n_images: int, batch_size: int, opts: SpeedOptions, world_size: int = 1) -> tuple[int, int]:
    """``(batch_size, steps_per_epoch)`` of ``n_images`` shared by ``world_size`` processes.

    The batch shrinks to the images a process has; the last partial batch of an epoch is dropped
    (BatchNorm and equal steps); the batch must split into ``opts.accumulate`` equal chunks.

    >>> batches_per_epoch(100, 32, SpeedOptions()), batches_per_epoch(100, 32, SpeedOptions(), world_size=4)
    ((32, 3), (25, 1))
    """
    n = n_images // world_size  # images per process and epoch
    if n < 1:
        raise ValueError(f"{n_images} images cannot be shared by {world_size} processes")
    batch_size = min(batch_size, n)
    if batch_size % opts.accumulate:
        raise ValueError(f"batch size {batch_size} is not a multiple of accumulate={opts.accumulate}; choose a "
                         f"batch size that the chunks divide, e.g. {batch_size - batch_size % opts.accumulate}")
    return batch_size, n // batch_size


def data_on_device(data, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels of ``data``, copied once to a GPU when they fit (``DATA_ON_DEVICE_MAX_BYTES``).

    On the CPU, and for memory-mapped data (each step reads only its batch), they stay where they are.
    """
    images, labels = data.images, data.labels
    small = images.numel() * images.element_size() <= DATA_ON_DEVICE_MAX_BYTES
    if device.type != "cpu" and small and not getattr(data, "memory_mapped", False):
        images, labels = images.to(device), labels.to(device)  # once; every step indexes on the device
    return images, labels


def mean_over_processes(values: list[float], info) -> list[float]:
    """The mean of ``values`` over all processes (the values themselves on one process)."""
    if not info.distributed:
        return values
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return (t / info.world_size).tolist()


class Step:
    """The forward and backward pass of one training step, with the run's speed options.

    ``step(images, labels)`` zeroes the gradients and runs ``method.training_step`` in ``accumulate``
    chunks under autocast, summing their gradients (through DistributedDataParallel under torchrun,
    through a GradScaler for fp16 on a GPU); it returns the mean loss over the chunks and processes,
    or the first non-finite one (then without finishing the backward pass). ``step.update()`` then
    applies the optimizer. With ``compile``, a first step that fails to compile is retried eagerly
    with the same random numbers, and a warning says why.
    """

    def __init__(self, method: nn.Module, optimizer: torch.optim.Optimizer, opts: SpeedOptions, info):
        from .distributed import ddp_step

        self.method, self.optimizer, self.opts, self.info = method, optimizer, opts, info
        self.scaler = torch.amp.GradScaler("cuda") if opts.precision == "fp16" and info.device.type == "cuda" else None
        self.compiled = compile_networks(method) if opts.compile else []
        self.step_fn = ddp_step(method, info) if info.distributed else method.training_step
        self.no_sync = self.step_fn.no_sync if info.distributed else contextlib.nullcontext

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        if not self.compiled:
            return self._forward_backward(images, labels)
        from .checkpoint import rng_state, set_rng_state

        snapshot = rng_state()  # to retry the step as it was
        try:
            return self._forward_backward(images, labels)
        except Exception as e:  # noqa: BLE001 - compilation can fail in many ways; eager shows the real error
            if is_out_of_memory(e):
                raise
            warnings.warn(f"torch.compile failed here ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          f"training goes on without compiling", RuntimeWarning, stacklevel=3)
            uncompile_networks(self.method)
            set_rng_state(snapshot)
            return self._forward_backward(images, labels)
        finally:
            self.compiled = []  # compiled (or not) for good after the first step

    def _forward_backward(self, images, labels) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        k, total, device = self.opts.accumulate, 0.0, self.info.device
        for c, (x, y) in enumerate(zip(images.chunk(k), labels.chunk(k))):
            with self.no_sync() if c < k - 1 else contextlib.nullcontext():  # DDP averages at the last chunk
                with autocast(device, self.opts.precision):
                    loss = self.step_fn(x, y)
                value = mean_over_processes([loss.item()], self.info)[0]
                if not math.isfinite(value):
                    return value
                (self.scaler.scale(loss / k) if self.scaler is not None else loss / k).backward()
            total += value / k
        return total

    def update(self) -> None:
        """The optimizer step (unscaling the gradients first for fp16)."""
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()


def is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def out_of_memory_error(e: BaseException, batch_size: int, opts: SpeedOptions, device, step: int):
    """A ``torch.OutOfMemoryError`` saying what to try, from the least change to the run to the most."""
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
    return torch.OutOfMemoryError(f"out of memory on {device} at step {step} with batch_size={batch_size}{chunks} "
                                  f"(precision {opts.precision}). Try, from the least change to the run to the most: "
                                  + "; ".join(tries) + f". ({first})")
