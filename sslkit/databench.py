"""The data benchmarks (``python -m sslkit.bench data``) and the memory probe behind them.

A process's own memory is its *anonymous* resident memory (``RssAnon`` in ``/proc/self/status``): what
it allocated, as opposed to the pages of a memory-mapped file, which belong to the page cache and
which the operating system drops and re-reads as it needs. Training from a prepared dataset should
keep ``RssAnon`` near that of the same process without data, however large the file.

``python -m sslkit.databench PATH --steps 20`` trains SimCLR for some steps on the unlabeled split of
the prepared dataset at PATH in a fresh process and prints one JSON line: the peak ``RssAnon`` while
loading and training, the same before the data was opened, and the images per second
(``--in-memory`` reads the split into memory first: the comparison).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path


def rss_anon_mb() -> float:
    """This process's anonymous resident memory in MB (Linux; ``RssAnon`` of ``/proc/self/status``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise OSError("no RssAnon in /proc/self/status (Linux only)")


class PeakRssAnon:
    """The highest ``rss_anon_mb()`` seen while the ``with`` block runs, sampled every ``every_s`` seconds."""

    def __init__(self, every_s: float = 0.002):
        self.every_s, self.peak, self._stop = every_s, rss_anon_mb(), threading.Event()

    def _watch(self):
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, rss_anon_mb())

    def __enter__(self):
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_mb())
        return False


def simclr_method(seed: int = 0):
    """Notebook 02's lesson SimCLR (resnet_tiny, width 8, temperature 0.2), built from ``seed``."""
    import torch

    from .methods import make_method
    from .models import make_backbone

    torch.manual_seed(seed)
    backbone, dim = make_backbone("resnet_tiny", width=8)
    return make_method("simclr", backbone, dim, temperature=0.2)


def probe(path: str, steps: int, batch_size: int, in_memory: bool = False) -> dict:
    """Train ``steps`` SimCLR steps on the prepared dataset at ``path``; peak RssAnon and images/s."""
    import torch

    from .config import make_config
    from .data import ImageData, load_dataset
    from .train import train

    # the baseline: the same training on two batches held in memory, so that what the model, its optimizer and
    # the thread pools need is counted before the data is opened and only the data's share comes after
    warm = ImageData(torch.randint(0, 256, (2 * batch_size, 3, 32, 32), dtype=torch.uint8), torch.full(
        (2 * batch_size,), -1), [], "warm-up", "unlabeled")
    train(simclr_method(), warm, make_config("lesson", batch_size=batch_size, num_epochs=1, warmup_epochs=0.0,
                                             device="cpu"), progress=False)
    method = simclr_method()
    before = rss_anon_mb()
    with PeakRssAnon() as peak:
        data = load_dataset(path, "unlabeled", image_size=None)
        if in_memory:
            data.images = data.images.clone()  # the whole split read into this process's memory
        cfg = make_config("lesson", dataset=path, batch_size=batch_size, num_epochs=1, warmup_epochs=0.0,
                          device="cpu")
        history = train(method, data, cfg, progress=False, max_steps=steps)
    return {"peak_rss_anon_mb": round(peak.peak, 1), "rss_anon_before_data_mb": round(before, 1),
            "data_mb": round(data.images.numel() / 2**20, 1), "steps": history.steps,
            "images_per_s": round(history.images_per_s, 1), "in_memory": in_memory}


def run_probe(path, steps: int = 20, batch_size: int = 256, in_memory: bool = False) -> dict:
    """``probe`` in a fresh Python process (so nothing this process holds is counted)."""
    import subprocess

    cmd = [sys.executable, "-m", "sslkit.databench", str(path), "--steps", str(steps), "--batch-size",
           str(batch_size)] + (["--in-memory"] if in_memory else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _image_folder(root: Path, n: int, size: int, seed: int) -> Path:
    """``n`` shapes images of ``size`` px as files, half PNG and half JPEG, one subfolder per class."""
    from PIL import Image

    from .data import load_dataset

    d = load_dataset("shapes", "train", n=n, image_size=size, seed=seed)
    for i, (image, label) in enumerate(zip(d.images.permute(0, 2, 3, 1).numpy(), d.labels.tolist())):
        folder = root / d.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:06d}.{'png' if i % 2 else 'jpg'}")
    return root


def bench_data(args) -> dict:
    """Preparation speed, training throughput from prepared vs in-memory data, and peak RssAnon of both."""
    import os
    import shutil
    import tempfile

    import numpy as np
    import torch

    from .trainbench import measure_training
    from .config import make_config
    from .data import data_root, load_dataset
    from .prepared import open_prepared, prepare, write_prepared

    data_root().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-data-", dir=data_root()))  # on disk (not a RAM-backed /tmp)
    out, load_before = {}, os.getloadavg()[0]
    try:
        # 1. preparation: 64 px PNG and JPEG files, decoded by 1 and 2 processes
        n_files = 8000
        folder = _image_folder(tmp / "files", n_files, 64, args.seed)
        for workers in (1, 2):
            for size in (32, 64):
                start = time.perf_counter()
                prepare(folder, size, out=tmp / f"prep-{size}-{workers}", workers=workers, progress=False)
                out[f"prepare_images_per_s_{size}px_{workers}proc"] = round(n_files / (time.perf_counter() - start))
        # 2. throughput at batch 256, 32 px: the same images in memory and memory-mapped, alternating
        unlabeled = load_dataset("shapes", "unlabeled", n=256 * 24, image_size=32, seed=args.seed)
        prepared = open_prepared(write_prepared(tmp / "same", {"unlabeled": (unlabeled.images, [])}, []), "unlabeled")
        cfg = make_config("lesson", batch_size=256, num_epochs=1, warmup_epochs=0.0, device="cpu", seed=args.seed)
        speeds = {"memory": [], "prepared": []}
        for _ in range(2):
            for name, data in (("memory", unlabeled), ("prepared", prepared)):
                r = measure_training(simclr_method, data, cfg, steps=args.steps, warmup=2)
                speeds[name].append(r["images_per_s"])
        best = {k: max(v) for k, v in speeds.items()}
        out.update({"train_images_per_s_memory": round(best["memory"], 1),
                    "train_images_per_s_prepared": round(best["prepared"], 1),
                    "train_ratio": round(best["prepared"] / best["memory"], 3), "target_train_ratio": 0.9,
                    "train_images_per_s_all": {k: [round(x, 1) for x in v] for k, v in speeds.items()}})
        # 3. memory: a 3 GB prepared set (1,000,000 images of 32 px), trained from the map and from memory
        base = load_dataset("shapes", "unlabeled", n=20_000, image_size=32, seed=args.seed).images.numpy()
        big = write_prepared(tmp / "big", {"unlabeled": ((np.roll(base, k, axis=0) for k in range(50)), [])}, [])
        mapped = run_probe(big, steps=args.steps, batch_size=256)
        whole = run_probe(big, steps=args.steps, batch_size=256, in_memory=True)
        out.update({"big_set_gb": round((big / "images.u8").stat().st_size / 1e9, 2),
                    "peak_rss_anon_mb_prepared": mapped["peak_rss_anon_mb"],
                    "peak_rss_anon_mb_in_memory": whole["peak_rss_anon_mb"],
                    "rss_anon_before_data_mb": mapped["rss_anon_before_data_mb"], "target_peak_rss_anon_mb": 1536,
                    "big_set_images_per_s_prepared": mapped["images_per_s"],
                    "big_set_images_per_s_in_memory": whole["images_per_s"]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out.update({"backbone": "resnet_tiny(width=8)", "method": "simclr", "batch_size": 256, "image_size": 32,
                "steps": args.steps, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]})
    return out


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sslkit.databench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="a prepared dataset (python -m sslkit.data prepare ...)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--in-memory", action="store_true", help="read the split into memory first")
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.path, args.steps, args.batch_size, args.in_memory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
