"""Two gloo processes with batch B each compute what one process computes with batch 2B.

BatchNorm couples the samples of a batch and is per process on CPUs (SyncBatchNorm needs GPUs),
so BatchNorm layers run in eval mode here: what is tested is the distributed glue itself, i.e.
negatives gathered across processes (lightly's gather_distributed) and DDP's gradient averaging.
"""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslkit.distributed import DistInfo, ddp_step, init_distributed, scale_lr, shard
from sslkit.methods import make_method
from sslkit.models import make_backbone

B = 8  # per-process batch


def _build(name):
    torch.manual_seed(0)
    backbone, dim = make_backbone("resnet_tiny", width=4)
    knobs = {"gather_distributed": True} if name == "simclr" else {}
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


def _worker(rank, name, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    method = _build(name)
    x0, x1 = _views()
    step = ddp_step(method, DistInfo(rank, 2, rank, torch.device("cpu")), "loss")
    loss = step(x0[rank * B:(rank + 1) * B], x1[rank * B:(rank + 1) * B])
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    if rank == 0:
        torch.save({"loss": total / 2, "grads": _grads(method)}, out)
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_two_processes_match_one_process_with_the_whole_batch(name, tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(name, _free_port(), str(out)), nprocs=2, join=True)
    two = torch.load(out, weights_only=True)

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
