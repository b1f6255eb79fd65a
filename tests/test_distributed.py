"""Two gloo processes with batch B each compute what one process computes with batch 2B.

BatchNorm couples the samples of a batch and is per process on CPUs (SyncBatchNorm needs GPUs),
so BatchNorm layers run in eval mode here: what is tested is the distributed glue itself, i.e.
negatives gathered across processes (lightly's gather_distributed) and DDP's gradient averaging,
first for one loss and backward, then through ``sslkit.train.train`` (sharded epochs, two SGD steps).
"""
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslkit.checkpoint import CheckpointError
from sslkit.config import make_config
from sslkit.data import ImageData, to_float
from sslkit.distributed import DistInfo, ddp_step, init_distributed, scale_lr, shard
from sslkit.methods import make_method
from sslkit.models import make_backbone
from sslkit.train import train

B = 8  # per-process batch


def _build(name):
    torch.manual_seed(0)
    backbone, dim = make_backbone("resnet_tiny", width=8)
    knobs = {"gather_distributed": True} if name in ("simclr", "moco") else {}  # moco: every process's keys queued
    method = make_method(name, backbone, dim, **knobs)
    method.train()
    for m in method.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    return method


def _views():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2 * B, 3, 16, 16, generator=g), torch.randn(2 * B, 3, 16, 16, generator=g)


def _grads(method):
    return {n: p.grad.detach().clone() for n, p in method.named_parameters() if p.grad is not None}


def _worker(rank, port, out):
    """Process ``rank`` of 2: the loss and gradients of half the batch for each method (rank 0 saves them)."""
    # a collective that one process never joins fails after 2 minutes instead of hanging the suite
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(minutes=2))
    torch.set_num_threads(1)
    found = {}
    for name in ("simclr", "byol"):
        method = _build(name)
        x0, x1 = _views()
        step = ddp_step(method, DistInfo(rank, 2, rank, torch.device("cpu")), "loss")
        loss = step(x0[rank * B:(rank + 1) * B], x1[rank * B:(rank + 1) * B])
        loss.backward()
        total = loss.detach().clone()
        dist.all_reduce(total)
        found[name] = {"loss": total / 2, "grads": _grads(method)}
    found["loop"] = _train_loop(rank)
    found["resume"] = _resume(rank, Path(out).parent / "run")
    if rank == 0:
        torch.save(found, out)
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """What two gloo processes computed (one spawn for every test below: starting processes is slow)."""
    out = tmp_path_factory.mktemp("ddp") / "rank0.pt"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_two_processes_match_one_process_with_the_whole_batch(name, two_processes):
    two = two_processes[name]
    method = _build(name)
    x0, x1 = _views()
    loss = method.loss(x0, x1)
    loss.backward()
    one = _grads(method)

    assert torch.allclose(two["loss"], loss.detach(), atol=1e-5), (two["loss"], loss)
    assert one.keys() == two["grads"].keys() and one
    for n in one:
        assert torch.allclose(one[n], two["grads"][n], atol=1e-5, rtol=1e-4), n


def test_single_process_helpers():
    info = init_distributed("cpu")
    assert not info.distributed and info.is_main
    order = torch.arange(10)
    parts = [shard(order, DistInfo(r, 3)) for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3] and len(set(torch.cat(parts).tolist())) == 9
    assert scale_lr(0.1, 512, 256) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="choose one of: linear, sqrt"):
        scale_lr(0.1, 512, rule="cubic")


# ----------------------------------------------------------------------------------------------
# the same through the training loop: sharded epochs, DDP, gathered negatives, the reduced loss

N = 4 * B  # images: 2 steps of 2B in one process, 2 steps of B in each of two


class FixedViews(torch.nn.Module):
    """A method's loss on views without randomness (the image and its mirror image), BatchNorm frozen,
    so that one process and two compute the very same thing."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    @property
    def backbone(self):
        return self.method.backbone

    def training_step(self, images, labels):
        x = to_float(images)
        return self.method.loss(x, x.flip(-1))

    def on_step_end(self, step, total_steps):
        if hasattr(self.method, "on_step_end"):
            self.method.on_step_end(step, total_steps)

    def train(self, mode=True):
        super().train(mode)
        for m in self.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def _loop_cfg(batch_size, lr=0.05):
    return make_config("smoke", num_epochs=1, batch_size=batch_size, lr=lr, warmup_epochs=0.0, optimizer="sgd",
                       time_budget_s=None, device="cpu", seed=0)


def _data():
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (N, 3, 16, 16), dtype=torch.uint8, generator=g)
    return ImageData(images, torch.full((N,), -1), [], "random", "unlabeled")


def _train_loop(rank):
    found = {}
    for name in ("simclr", "byol", "moco"):
        method = FixedViews(_build(name))
        history = train(method, _data(), _loop_cfg(B), progress=False,
                        dist_info=DistInfo(rank, 2, rank, torch.device("cpu")))
        found[name] = {"losses": history.losses, "state": method.state_dict()}
    return found


@pytest.mark.parametrize("name", ["simclr", "byol", "moco"])
def test_training_loop_on_two_processes_matches_one_process_with_the_whole_batch(name, two_processes):
    """(MoCo: the second step's loss reads the queue the first filled, so it holds only when every process queues
    the keys of all; its queue, in the state, too.)"""
    two = two_processes["loop"][name]
    method = FixedViews(_build(name))
    history = train(method, _data(), _loop_cfg(2 * B), progress=False)
    assert len(history.losses) == 2
    assert two["losses"] == pytest.approx(history.losses, rel=1e-5)
    for key, value in method.state_dict().items():
        other = two["state"][key]
        if key.endswith("memory_bank.bank"):  # the same keys; queued as process 0's, then 1's: rows in another order
            value, other = (v[v[:, 0].argsort()] for v in (value, other))
        assert torch.allclose(value, other, atol=1e-5, rtol=1e-4), key


def _resume(rank, run_dir):
    """Stopped after 1 step and resumed on 2 processes: every process continues with its own random views."""
    info = DistInfo(rank, 2, rank, torch.device("cpu"))
    full = train(full_method := _build("simclr"), _data(), _loop_cfg(B), progress=False, dist_info=info)
    first = train(_build("simclr"), _data(), _loop_cfg(B), progress=False, dist_info=info, run_dir=run_dir, max_steps=1)
    resumed = train(method := _build("simclr"), _data(), _loop_cfg(B), progress=False, dist_info=info, run_dir=run_dir)

    def stop(history):  # a stop raised inside the loop (a second Ctrl-C, a callback): nothing is gathered then
        if history.steps == 1:
            raise KeyboardInterrupt
    raised = Path(f"{run_dir}-raised")
    train(_build("simclr"), _data(), _loop_cfg(B), progress=False, dist_info=info, run_dir=raised, callbacks=[stop])
    dist.barrier()  # process 1's random state is written before either resumes
    again = train(other := _build("simclr"), _data(), _loop_cfg(B), progress=False, dist_info=info, run_dir=raised)
    same = lambda m: all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), full_method.state_dict().values()))
    try:  # the run directory of another run (another lr): rank 0 finds it out, and every process stops with it
        train(_build("simclr"), _data(), _loop_cfg(B, lr=0.07), progress=False, dist_info=info, run_dir=run_dir)
        refused = None
    except CheckpointError as error:
        refused = str(error)
    everyone = [None, None]
    dist.all_gather_object(everyone, refused)
    return {"first_steps": first.steps, "resumed_from": resumed.resumed_from_step,
            "same_losses": resumed.losses == full.losses, "same_weights": same(method),
            "raised": (again.resumed_from_step, again.losses == full.losses, same(other)), "refused": everyone}


def test_a_run_on_two_processes_resumes_exactly(two_processes):
    """Stopped at a step (max_steps, or Ctrl-C: every random state gathered) or by a KeyboardInterrupt raised in
    the loop (each process saves its own), the resumed run is the uninterrupted one on every process."""
    found = dict(two_processes["resume"])
    refused = found.pop("refused")
    assert found == {"first_steps": 1, "resumed_from": 1, "same_losses": True, "same_weights": True,
                     "raised": (1, True, True)}


def test_a_run_directory_of_another_run_stops_every_process(two_processes):
    """Rank 0 checks the checkpoint; the others learn its verdict instead of waiting for it in a collective."""
    refused = two_processes["resume"]["refused"]
    assert all(r is not None and "lr: 0.05 there, 0.07 now" in r for r in refused), refused
    assert refused[0] == refused[1]
