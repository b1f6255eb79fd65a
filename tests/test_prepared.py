"""Prepared data (sslkit.prepared): decoded once into a memory map, read by load_dataset and the training loop.

Oracles: the in-memory folder loader (the same images, labels and splits, bit for bit), a training run on the
same images held in memory (the same losses), one process with twice the batch (torchrun), and the process's
own anonymous memory against the size of the data.
"""
import dataclasses
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sslkit
from sslkit.config import make_config
from sslkit.data import ImageData, load_dataset
from sslkit.prepared import (PreparationIncomplete, is_prepared, open_prepared, prepare, prepared_path, read_meta,
                             write_prepared)
from sslkit.train import train

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """120 shapes images in class subfolders, PNG and JPEG of 40 px, plus three files that are not images."""
    root = tmp_path_factory.mktemp("photos")
    d = load_dataset("shapes", "train", n=120, image_size=40, seed=3)
    for i, (image, label) in enumerate(zip(d.images.permute(0, 2, 3, 1).numpy(), d.labels.tolist())):
        (root / d.classes[label]).mkdir(exist_ok=True)
        Image.fromarray(image).save(root / d.classes[label] / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    (root / "circle" / "notes.txt").write_text("not an image")
    (root / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    good = (root / "star").glob("*.jpg").__next__().read_bytes()
    (root / "star" / "truncated.jpg").write_bytes(good[:40])
    return root


def _prepare(folder, out, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = prepare(folder, 32, out=out, progress=False, **kw)
    return path, [str(w.message) for w in caught]


def test_prepared_folder_equals_the_in_memory_loader(folder, tmp_path):
    path, said = _prepare(folder, tmp_path / "p", workers=2, chunk_size=16)
    meta = read_meta(path)
    assert sorted(meta["skipped"]) == ["circle/notes.txt", "square/broken.png", "star/truncated.jpg"]
    assert any("skipped 3 file(s)" in s for s in said)
    assert not (path / "parts").exists() and meta["count"] == 120
    assert len((path / "files.txt").read_text().splitlines()) == 120
    for split in ("train", "test", "unlabeled"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the folder loader warns about the same unreadable files
            memory = load_dataset(str(folder), split, image_size=32)
        mapped = load_dataset(str(path), split, image_size=32)
        assert mapped.memory_mapped and not memory.memory_mapped
        assert torch.equal(mapped.images, memory.images) and torch.equal(mapped.labels, memory.labels), split
        assert mapped.classes == memory.classes
    sub = load_dataset(str(path), "train", n=10, seed=1, image_size=None)
    assert len(sub) == 10 and not sub.memory_mapped  # a subset is read into memory
    assert prepare(folder, 32, out=path, progress=False) == path  # complete: returns at once


def _dies_on_the_third_chunk(task):
    """A decoding worker that stops on the third chunk, as a killed process or Ctrl-C would."""
    import sslkit.prepared as prepared
    if task[0].endswith("00-000002.npz"):
        raise RuntimeError("interrupted")
    return prepared.__dict__["_real_decode_part"](task)


def test_an_interrupted_preparation_resumes_and_is_never_read_as_complete(folder, tmp_path, monkeypatch):
    import sslkit.prepared as prepared

    monkeypatch.setattr(prepared, "_real_decode_part", prepared._decode_part, raising=False)
    monkeypatch.setattr(prepared, "_decode_part", _dies_on_the_third_chunk)  # module-level: workers unpickle it
    out = tmp_path / "p"
    with pytest.raises(RuntimeError, match="interrupted"):
        prepare(folder, 32, out=out, workers=1, chunk_size=16, progress=False)
    monkeypatch.setattr(prepared, "_decode_part", prepared._real_decode_part)
    assert not is_prepared(out)
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.npz")}
    assert finished and "00-000002.npz" not in finished
    (out / "parts" / "00-000002.npz.tmp").write_bytes(b"half a file")  # what a crash mid-write leaves
    with pytest.raises(PreparationIncomplete, match="again: it resumes") as e:
        load_dataset(str(out), "train", image_size=None)
    # the command that finishes it, from any folder: the source's absolute path and this --out
    assert f"prepare {Path(folder).resolve()} --size 32 --out {out}`" in str(e.value)
    path, _ = _prepare(folder, out, workers=1, chunk_size=16)
    fresh, _ = _prepare(folder, tmp_path / "fresh", workers=2, chunk_size=16)
    assert (path / "images.u8").read_bytes() == (fresh / "images.u8").read_bytes()
    assert np.array_equal(np.load(path / "labels.npy"), np.load(fresh / "labels.npy"))
    assert read_meta(path)["splits"] == read_meta(fresh)["splits"]


def test_the_key_follows_the_source_listing_and_the_size(folder, tmp_path):
    import shutil
    copy = tmp_path / "photos"
    shutil.copytree(folder, copy)
    before = prepared_path(copy, 32)
    assert before != prepared_path(copy, 48)
    assert before.name.startswith("photos-32px-")
    (copy / "ring" / "new.png").write_bytes((copy / "ring").glob("*.png").__next__().read_bytes())
    assert prepared_path(copy, 32) != before  # a changed folder is prepared anew, never read stale


def test_bad_input_says_how_to_fix_it(folder, tmp_path):
    with pytest.raises(ValueError, match="at least 8"):
        prepare(folder, 4, out=tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="neither an image folder"):
        prepare(tmp_path / "nowhere", 32)
    path, _ = _prepare(folder, tmp_path / "p")
    with pytest.raises(ValueError, match="set image_size=32"):
        load_dataset(str(path), "train", image_size=64)
    with pytest.raises(ValueError, match="no 'shifted' split"):
        load_dataset(str(path), "shifted", image_size=None)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("no image")
    with pytest.raises(ValueError, match="no readable images"):
        prepare(tmp_path / "junk", 32, out=tmp_path / "j", progress=False)
    assert not (tmp_path / "j").exists()  # no half-made folder that --dataset would offer to resume


def test_the_command_line(folder, tmp_path):
    env = {**os.environ, "SSLKIT_DATA": str(tmp_path / "data")}
    run = [sys.executable, "-m", "sslkit.data", "prepare"]
    proc = subprocess.run(run + [str(folder), "--size", "32", "--workers", "2"], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    made = list((tmp_path / "data" / "prepared").iterdir())
    assert len(made) == 1 and str(made[0]) in proc.stdout and "sslkit.train simclr --dataset" in proc.stdout
    bad = subprocess.run(run + [str(tmp_path / "nowhere"), "--size", "32"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "neither an image folder" in bad.stderr and "Traceback" not in bad.stderr
    # the shell trains from it; a config adopts its size and its whole unlabeled split
    cfg = make_config("smoke", dataset=str(made[0]))
    assert cfg.image_size == 32 and cfg.num_unlabeled is None
    assert sslkit.load_split(cfg, "unlabeled").memory_mapped
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "sslkit.train", "simclr", "--profile", "smoke", "--dataset",
                           str(made[0]), "--results", str(out), "--quiet", "--max-steps", "2"],
                          capture_output=True, text=True, env={**env, "SSLKIT_PROFILE": "smoke"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["config"]["image_size"] == 32
    (made[0] / "meta.json").unlink()  # as if the preparation had not finished
    proc = subprocess.run([sys.executable, "-m", "sslkit.train", "simclr", "--profile", "smoke", "--dataset",
                           str(made[0]), "--results", str(tmp_path / "r2.json")], capture_output=True, text=True,
                          env={**env, "SSLKIT_PROFILE": "smoke"})
    assert proc.returncode == 2 and "not a complete prepared dataset" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r2.json").exists()


def _small_folder(root):
    """Another source: two classes of four 20 px images."""
    for k, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (20, 20), (60 * k, 30 * i, 9)).save(root / name / f"{i}.png")
    return root


def test_a_folder_holding_another_finished_preparation_is_refused(folder, tmp_path):
    path, _ = _prepare(folder, tmp_path / "p")
    before = (path / "images.u8").read_bytes()
    other = _small_folder(tmp_path / "other")
    with pytest.raises(ValueError, match=r"holds a finished preparation of .*photos.* at 32 px, not of .*other at 32 "
                                         r"px: give another output folder \(--out\), or delete"):
        prepare(other, 32, out=path, progress=False)
    with pytest.raises(ValueError, match=r"at 32 px, not of .*photos.* at 40 px"):
        prepare(folder, 40, out=path, progress=False)
    assert prepare(f"{folder}/", 32, out=path, progress=False) == path  # the same source, named another way
    assert (path / "images.u8").read_bytes() == before
    env = {**os.environ, "SSLKIT_DATA": str(tmp_path / "data")}
    run = [sys.executable, "-m", "sslkit.data", "prepare"]
    bad = subprocess.run(run + [str(other), "--size", "32", "--out", str(path)], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and "holds a finished preparation" in bad.stderr and "Traceback" not in bad.stderr
    same = subprocess.run(run + [str(folder), "--size", "32", "--out", str(path)], capture_output=True, text=True,
                          env=env)
    assert same.returncode == 0 and same.stdout.startswith("already prepared 120 images"), same.stdout + same.stderr


def test_resuming_with_another_source_or_size_is_refused(folder, tmp_path, monkeypatch):
    import shutil

    import sslkit.prepared as prepared

    copy = tmp_path / "photos"
    shutil.copytree(folder, copy)
    monkeypatch.setattr(prepared, "_real_decode_part", prepared._decode_part, raising=False)
    monkeypatch.setattr(prepared, "_decode_part", _dies_on_the_third_chunk)
    out = tmp_path / "p"
    with pytest.raises(RuntimeError, match="interrupted"):
        prepare(copy, 32, out=out, workers=1, chunk_size=16, progress=False)
    monkeypatch.setattr(prepared, "_decode_part", prepared._real_decode_part)
    parts = sorted(p.name for p in (out / "parts").iterdir())
    with pytest.raises(ValueError, match=r"holds an unfinished preparation of .*photos at 32 px, not of .*other at "
                                         r"32 px"):
        prepare(_small_folder(tmp_path / "other"), 32, out=out, workers=1, progress=False)
    with pytest.raises(ValueError, match=r"unfinished preparation of .*photos at 32 px, not of .*photos at 16 px"):
        prepare(copy, 16, out=out, workers=1, progress=False)
    with pytest.raises(ValueError, match=r"unfinished preparation .* made before its files changed"):
        (copy / "ring" / "new.png").write_bytes(next((copy / "ring").glob("*.png")).read_bytes())
        prepare(copy, 32, out=out, workers=1, progress=False)
    (copy / "ring" / "new.png").unlink()
    assert not is_prepared(out) and sorted(p.name for p in (out / "parts").iterdir()) == parts  # left as it was
    path, _ = _prepare(copy, out, workers=1, chunk_size=64)  # resumes with the chunks it started with (16)
    fresh, _ = _prepare(folder, tmp_path / "fresh", workers=2, chunk_size=16)
    assert (path / "images.u8").read_bytes() == (fresh / "images.u8").read_bytes()


def test_a_size_too_large_is_refused_before_any_work(folder, tmp_path):
    with pytest.raises(ValueError, match=r"size=513: give at most 512 px .*3\*S\*S bytes"):
        prepare(folder, 513, out=tmp_path / "huge", progress=False)
    proc = subprocess.run([sys.executable, "-m", "sslkit.data", "prepare", str(folder), "--size", "513", "--out",
                           str(tmp_path / "huge")], capture_output=True, text=True)
    assert proc.returncode == 2 and "give at most 512 px" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "huge").exists()


def _killed(task):
    """A decoding worker killed by the system (as the out-of-memory killer does)."""
    import signal
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_dead_decoding_process_is_a_clear_error(folder, tmp_path, monkeypatch, capsys):
    import sslkit.prepared as prepared

    real = prepared._decode_part
    monkeypatch.setattr(prepared, "_decode_part", _killed)  # module-level: the forked workers see it
    out = tmp_path / "p"
    with pytest.raises(RuntimeError, match=r"a decoding process died .*lack of memory.*fewer --workers.* resumes"):
        prepare(folder, 32, out=out, workers=1, chunk_size=16, progress=False)
    assert prepared.main([str(folder), "--size", "32", "--out", str(out), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "error: a decoding process died" in err and "Traceback" not in err
    monkeypatch.setattr(prepared, "_decode_part", real)
    assert read_meta(_prepare(folder, out)[0])["count"] == 120  # running it again finishes it


def _simclr():
    torch.manual_seed(0)
    backbone, dim = sslkit.make_backbone("resnet_tiny", width=8)
    return sslkit.methods.make_method("simclr", backbone, dim, temperature=0.2)


def test_training_from_the_memory_map_equals_training_in_memory(tmp_path):
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mapped = open_prepared(write_prepared(tmp_path / "p", {"unlabeled": (images, [])}, []), "unlabeled")
    memory = ImageData(images.clone(), torch.full((96,), -1), [], "memory", "unlabeled")
    cfg = make_config("smoke", batch_size=32, num_epochs=2, device="cpu")
    cfg = dataclasses.replace(cfg, time_budget_s=None)  # planned steps only: the same on a busy machine
    a = train(_simclr(), memory, cfg, progress=False)
    b = train(_simclr(), mapped, cfg, progress=False)
    assert len(a.losses) == 6 and a.losses == b.losses


def test_training_from_a_set_four_times_a_memory_budget(tmp_path):
    """400 MB of prepared images, a budget of 100 MB: training reads batches, not the set (RssAnon, in a fresh
    process); reading the same set into memory instead goes over the budget (the check can fail)."""
    from sslkit.databench import run_probe

    budget_mb = 100
    block = np.random.default_rng(0).integers(0, 256, (8192, 3, 32, 32), dtype=np.uint8)
    path = write_prepared(tmp_path / "big", {"unlabeled": ((np.roll(block, k, 0) for k in range(17)), [])}, [])
    mapped = run_probe(path, steps=4, batch_size=64)
    assert mapped["data_mb"] >= 4 * budget_mb
    assert mapped["peak_rss_anon_mb"] - mapped["rss_anon_before_data_mb"] < budget_mb, mapped
    whole = run_probe(path, steps=1, batch_size=64, in_memory=True)
    assert whole["peak_rss_anon_mb"] - whole["rss_anon_before_data_mb"] > whole["data_mb"] * 0.9, whole


TORCHRUN_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_distributed import FixedViews, _build, _loop_cfg
from sslkit.data import load_dataset
from sslkit.distributed import init_distributed
from sslkit.train import train
info = init_distributed("cpu")
data = load_dataset({path!r}, "unlabeled", image_size=None)
assert data.memory_mapped
history = train(FixedViews(_build("simclr")), data, _loop_cfg({batch}), progress=False, dist_info=info)
if info.is_main:
    torch.save(history.losses, {out!r})
# both processes leave together: a process that exits while gloo's threads still talk to the other aborts it
torch.distributed.barrier()
torch.distributed.destroy_process_group()
"""


def test_torchrun_two_processes_on_prepared_data_match_one_with_twice_the_batch(tmp_path):
    from test_distributed import B, FixedViews, _build, _loop_cfg

    images = torch.randint(0, 256, (4 * B, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    path = write_prepared(tmp_path / "p", {"unlabeled": (images, [])}, [])
    script = tmp_path / "two.py"
    script.write_text(TORCHRUN_SCRIPT.format(tests=str(ROOT / "tests"), path=str(path), batch=B,
                                             out=str(tmp_path / "losses.pt")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr",
                           "127.0.0.1", f"--master_port={port}", str(script)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = train(FixedViews(_build("simclr")), open_prepared(path, "unlabeled"), _loop_cfg(2 * B), progress=False)
    two = torch.load(tmp_path / "losses.pt")
    assert len(one.losses) == 2 and two == pytest.approx(one.losses, rel=1e-5)


def test_a_prepared_folder_of_one_class_has_no_labeled_split_to_evaluate_with(tmp_path):
    """As the folder itself: a single class is an error for the labeled splits (a kNN of 1.000 over one class
    measured nothing), and the unlabeled split trains."""
    root = tmp_path / "oneclass" / "circle"
    root.mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (32, 32), (20 * i, 0, 0)).save(root / f"{i}.png")
    path, _ = _prepare(tmp_path / "oneclass", tmp_path / "prep", workers=1)
    for split in ("train", "test"):
        with pytest.raises(ValueError, match="has a single class"):
            load_dataset(str(path), split)
    assert len(load_dataset(str(path), "unlabeled")) == 8
