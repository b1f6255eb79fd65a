"""Exercises of notebook 05 (scaling: the learning rate for a larger batch, and each process's shard of an epoch)."""

from __future__ import annotations

import math

import torch

from . import Exercise, Hint, Mistake, as_indices, is_placeholder, register


# ---------------------------------------------------------------------------------------------
# The learning-rate scaling rules: linear (Goyal et al. 2017) and square root (SimCLR, appendix B.1)


def scale_lr_reference(lr, batch_size, base_batch_size, rule="linear"):
    """The lr for ``batch_size`` given ``lr`` tuned at ``base_batch_size``: ``sslkit.distributed.scale_lr``."""
    from ..distributed import scale_lr

    return scale_lr(lr, batch_size, base_batch_size, rule)


# (lr, batch_size, base_batch_size): a larger batch, a smaller one (k < 1), k not a power of two, k = 1, and
# SimCLR's square-root formula 0.075 x sqrt(B), which is the rule with base_batch_size = 1
_LR_CASES = [(0.3, 1024, 256), (0.3, 64, 256), (1e-3, 384, 256), (5e-3, 128, 128), (0.075, 4096, 1)]


def _scale_lr_test(answer):
    for lr, b, b0 in _LR_CASES:
        for rule in ("linear", "sqrt"):
            got = answer(lr, b, b0, rule)
            try:
                got = float(got)
            except (TypeError, ValueError):
                raise Hint(f"return one number (the new learning rate), not {type(got).__name__}") from None
            want = scale_lr_reference(lr, b, b0, rule)
            if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12):
                continue
            _diagnose_lr(lr, b, b0, rule, got)
            raise Hint(f"my_scale_lr({lr}, {b}, {b0}, {rule!r}) returned {got:.6g}, the rule gives {want:.6g}; "
                       f"k = batch_size / base_batch_size, linear: lr * k, square root: lr * sqrt(k)")
    try:
        got = answer(0.1, 512, 256, "lienar")
    except ValueError:
        return
    except NotImplementedError as e:
        if is_placeholder(e):  # not done yet: check() says so
            raise
        raise Hint(f"an unknown rule ('lienar', a typo) raised NotImplementedError ({e}): raise a ValueError that "
                   f"names the rules there are (linear, sqrt); NotImplementedError means a feature not written yet, "
                   f"not a wrong argument") from None
    except Exception as e:  # noqa: BLE001 - any other error is the wrong kind
        raise Hint(f"an unknown rule ('lienar', a typo) raised {type(e).__name__}; raise a ValueError that names "
                   f"the rules there are (linear, sqrt)") from None
    raise Hint(f"an unknown rule ('lienar', a typo) returned {got!r}: raise a ValueError that names the rules there "
               f"are (linear, sqrt), so that a typo in a config stops the run instead of training with another lr")


def _diagnose_lr(lr, b, b0, rule, got):
    """Name the mistake when the answer equals one of the common wrong formulations."""
    k = b / b0
    close = lambda v: math.isclose(got, v, rel_tol=1e-6, abs_tol=1e-12)  # noqa: E731
    other = "sqrt" if rule == "linear" else "linear"
    if close(scale_lr_reference(lr, b, b0, other)):
        raise Hint(f"the rules are swapped: for rule={rule!r} you returned the {other} rule's lr. Linear: lr * k; "
                   f"square root: lr * sqrt(k), with k = batch_size / base_batch_size")
    if close(lr / k if rule == "linear" else lr / math.sqrt(k)):
        raise Hint("the ratio is inverted: a larger batch gets a larger lr, so k = batch_size / base_batch_size "
                   "(not base_batch_size / batch_size)")
    if close(lr * (b // b0) if rule == "linear" else lr * math.sqrt(b // b0)):
        raise Hint(f"integer division: {b} // {b0} is {b // b0}, so a batch smaller than the base (or not a "
                   f"multiple of it) gets the wrong lr; use / for the ratio")
    if rule == "sqrt" and close(math.sqrt(lr * k)):
        raise Hint("the square root is of the ratio only: lr * sqrt(k), not sqrt(lr * k)")
    if close(lr * b) or close(lr * math.sqrt(b)):
        raise Hint("the lr was tuned at base_batch_size, so only the ratio k = batch_size / base_batch_size counts, "
                   "not the batch size itself")


def _lr_swapped(lr, batch_size, base_batch_size, rule="linear"):
    k = batch_size / base_batch_size
    return lr * math.sqrt(k) if rule == "linear" else lr * k


def _lr_inverted(lr, batch_size, base_batch_size, rule="linear"):
    k = base_batch_size / batch_size
    return lr * k if rule == "linear" else lr * math.sqrt(k)


def _lr_integer_division(lr, batch_size, base_batch_size, rule="linear"):
    k = batch_size // base_batch_size
    return lr * k if rule == "linear" else lr * math.sqrt(k)


def _lr_sqrt_of_everything(lr, batch_size, base_batch_size, rule="linear"):
    k = batch_size / base_batch_size
    return lr * k if rule == "linear" else math.sqrt(lr * k)


def _lr_any_other_rule_is_sqrt(lr, batch_size, base_batch_size, rule="linear"):
    k = batch_size / base_batch_size
    return lr * k if rule == "linear" else lr * math.sqrt(k)


def _lr_unknown_rule_not_implemented(lr, batch_size, base_batch_size, rule="linear"):
    k = batch_size / base_batch_size
    if rule == "linear":
        return lr * k
    if rule == "sqrt":
        return lr * math.sqrt(k)
    raise NotImplementedError(f"unknown rule {rule!r}")


register(Exercise(
    name="scale_lr", notebook="05_scaling", answer_name="my_scale_lr", difficulty=1,
    idea="the learning rate for a k times larger batch: lr * k (linear rule) or lr * sqrt(k) (square-root rule)",
    test=_scale_lr_test, reference=scale_lr_reference,
    mistakes=(
        Mistake("the ratio inverted (base / batch)", _lr_inverted, "inverted"),
        Mistake("the linear and square-root rules swapped", _lr_swapped, "swapped"),
        Mistake("integer division for the ratio", _lr_integer_division, "integer division"),
        Mistake("the square root taken of lr * k", _lr_sqrt_of_everything, "of the ratio only"),
        Mistake("an unknown rule silently treated as sqrt", _lr_any_other_rule_is_sqrt, "ValueError"),
        Mistake("an unknown rule raising NotImplementedError", _lr_unknown_rule_not_implemented,
                "raised NotImplementedError (unknown rule 'lienar'): raise a ValueError"),
    ),
))


# ---------------------------------------------------------------------------------------------
# Each process's shard of an epoch's shuffled order (DistributedSampler with drop_last=True)


def shard_reference(order, rank, world_size):
    """Process ``rank``'s part of ``order``: ``sslkit.distributed.shard`` (the order cut to a multiple of
    ``world_size``, then every ``world_size``-th index from ``rank``: what ``DistributedSampler`` with
    ``shuffle=False, drop_last=True`` gives on that order)."""
    from ..distributed import DistInfo, shard

    return shard(order, DistInfo(rank=rank, world_size=world_size))


# (images in the epoch, processes): divisible, not divisible (one or three left over), one process, fewer
# images than processes, two processes
_SHARD_CASES = [(12, 3), (10, 3), (11, 4), (7, 1), (3, 4), (16, 2)]


def _shard_test(answer):
    g = torch.Generator().manual_seed(0)
    for n, w in _SHARD_CASES:
        order = torch.randperm(n, generator=g)  # an epoch's shuffled order: the same on every process
        got = [as_indices(answer(order.clone(), r, w), "indices (the images this process trains on)",
                          f"rank {r} of {w} processes") for r in range(w)]
        want = [shard_reference(order, r, w) for r in range(w)]
        if all(len(a) == len(b) and torch.equal(a, b) for a, b in zip(got, want)):
            continue
        _diagnose_shard(order, w, got)
        r = next(r for r in range(w) if not (len(got[r]) == len(want[r]) and torch.equal(got[r], want[r])))
        raise Hint(f"for an epoch of {n} images on {w} processes, process {r} should train on "
                   f"{want[r].tolist()} (order = {order.tolist()}), yours: {got[r].tolist()}")


def _diagnose_shard(order, w, got):
    """Name the mistake when the shards equal one of the common wrong ways to split the order."""
    n = len(order)
    usable = n - n % w
    same = lambda shards: all(len(a) == len(b) and torch.equal(a, b) for a, b in zip(got, shards))  # noqa: E731
    per = usable // w
    blocks = [order[r * per:(r + 1) * per] for r in range(w)]
    if same(blocks) or same(list(order.tensor_split(w))) or same(list(order[:usable].tensor_split(w))):
        raise Hint("the shards are contiguous blocks: process r takes every world_size-th index starting at r "
                   "(order[r::world_size]), as DistributedSampler does, so each process gets images from the whole "
                   "epoch's order")
    if same([order[:usable][::w]] * w):
        raise Hint("every process trains on the same images: start at the process's own rank (order[rank::...])")
    padded = torch.cat([order, order[:(-n) % w]]) if n >= w else order.repeat(w)[:w]
    if same([padded[r::w] for r in range(w)]):
        raise Hint("the order is padded to a multiple of world_size (DistributedSampler's default, drop_last=False), "
                   "so some images are seen twice in an epoch; sslkit cuts it instead (drop_last=True): "
                   "order[:len(order) - len(order) % world_size]")
    if same([order[r::w] for r in range(w)]):
        raise Hint(f"the shards have uneven lengths ({', '.join(str(len(s)) for s in got)}): with {n} images on {w} "
                   f"processes some take one step more, and DistributedDataParallel waits for ever for the others; "
                   f"cut the order to a multiple of world_size first")


def _shard_contiguous(order, rank, world_size):
    per = len(order) // world_size
    return order[rank * per:(rank + 1) * per]


def _shard_uncut(order, rank, world_size):
    return order[rank::world_size]


def _shard_padded(order, rank, world_size):
    padding = (-len(order)) % world_size
    padded = torch.cat([order, order[:padding]]) if len(order) >= world_size else order.repeat(world_size)[:world_size]
    return padded[rank::world_size]


def _shard_same_for_everyone(order, rank, world_size):
    usable = len(order) - len(order) % world_size
    return order[:usable][::world_size]


def _shard_float_column(order, rank, world_size):
    return shard_reference(order, rank, world_size).float()[:, None]


register(Exercise(
    name="shard", notebook="05_scaling", answer_name="my_shard", difficulty=2,
    idea="each process's part of an epoch's shuffled order: the order cut to a multiple of the number of processes, "
         "then every world_size-th index from the process's rank (DistributedSampler, drop_last=True)",
    test=_shard_test, reference=shard_reference,
    mistakes=(
        Mistake("contiguous blocks instead of strided shards", _shard_contiguous, "contiguous"),
        Mistake("the order not cut to a multiple of world_size", _shard_uncut, "uneven lengths"),
        Mistake("the order padded instead of cut", _shard_padded, "padded"),
        Mistake("the rank forgotten: every process the same images", _shard_same_for_everyone, "the same images"),
        Mistake("the indices as a float column (N, 1)", _shard_float_column, "1-d tensor (or list) of integer"),
    ),
))
