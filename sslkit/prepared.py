"""Data bigger than memory: decode a dataset once into a memory-mapped uint8 array, then train from it.

``load_dataset`` holds a split in memory as one uint8 tensor; that is fastest for small sets, but
memory grows with the data and every run decodes the files again. ``prepare`` decodes an image folder
(or a real dataset) once, in worker processes, into ``images.u8``: the raw (N, 3, S, S) uint8 array
that the batched augmentation path trains on, read through a memory map. A training step then
gathers its batch by index from the map (the same ``images[idx]`` as for in-memory data, so the
numbers are identical); the operating system keeps the hot pages in its cache, the process's own
memory stays small, and under torchrun every process reads only its shard of each epoch.

    python -m sslkit.data prepare photos/ --size 64      # -> data/prepared/photos-64px-<key>/
    python -m sslkit.train simclr --dataset data/prepared/photos-64px-<key>

A prepared folder (``data/prepared/`` under ``sslkit.data.data_root()``; the key hashes the source's
listing of names, sizes and modification times, the size and the format version, so a changed
source is prepared anew, never read stale):

- ``images.u8``: (N, 3, S, S) uint8, the splits one after another (a labeled folder: train, then test);
- ``labels.npy``: (N,) int64, -1 where there is no label; ``files.txt``: the source file of each image;
- ``meta.json``: format, size, classes, each split's (start, stop), skipped files. Written last, so a
  folder without it is never read as complete;
- ``parts/`` and ``plan.json``: while preparing, one file per finished chunk of images and what is
  being prepared; an interrupted preparation resumes from them, and they are removed at the end.

Images are scaled and centre-cropped as ``load_dataset`` does (a labeled folder keeps its fixed
train/test split); files that are not readable images are skipped and listed.

>>> import tempfile, torch
>>> tmp = tempfile.TemporaryDirectory()
>>> images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
>>> path = write_prepared(f"{tmp.name}/toy", {"train": (images[:4], [0, 1, 0, 1]), "test": (images[4:], [1, 0])},
...                       classes=["a", "b"])
>>> d = open_prepared(path, "test")
>>> d, d.memory_mapped, torch.equal(d.images, images[4:])
(ImageData('prepared:toy', split='test', n=2, image_size=8, classes=2), True, True)
>>> tmp.cleanup()
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

from .imagefiles import read_rgb, skipped_warning

FORMAT, FORMAT_VERSION = "sslkit-prepared", 1
CHUNK_SIZE = 512  # images per part file: the unit of parallel work and of resuming
REAL = ("cifar10", "stl10", "imagenette")  # real datasets are prepared through their loaders, split by split


class PreparationIncomplete(RuntimeError):
    """A prepared folder whose preparation has not finished (it resumes when run again)."""


# ----------------------------------------------------------------------------------------------
# what a source holds: segments (split, items) in the order they are laid out


def _plan(source: str, size: int):
    """(name, classes, segments, unlabeled_is, listing) of a source.

    ``segments`` is a list of (split, files, labels) for an image folder, or (split, None, None) for a
    real dataset (its loader reads the split); ``unlabeled_is`` names the split whose images the
    unlabeled split reuses (None: it is a segment of its own, or the only one); ``listing`` is what
    the key hashes.
    """
    from .data import data_root
    from .datasets import _REAL
    from .folders import folder_test_mask
    from .imagefiles import list_folder

    if source in REAL:
        root = data_root() / _REAL[source][0]
        if not (root / _REAL[source][1]).exists():
            from .data import load_dataset
            load_dataset(source, "test", n=1, image_size=size)  # raises DatasetNotFoundError, saying how to get it
        listing = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                         for p in root.rglob("*") if p.is_file())
        splits = ("unlabeled", "train", "test") if source == "stl10" else ("train", "test")
        segments = [(s, None, None) for s in splits]
        return source, None, segments, (None if source == "stl10" else "train"), listing
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot prepare {source!r}: it is neither an image folder nor one of "
                                f"{', '.join(REAL)}; give the path of a folder of images")
    files, labels, classes = list_folder(folder)
    if not files:
        raise ValueError(f"image folder {folder} holds no files; put images in it (unlabeled) or in one "
                         f"subfolder per class (folder/cat/1.jpg, ...)")
    listing = [(str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    if not classes:
        return folder.resolve().name, [], [("unlabeled", files, labels)], None, listing
    import torch
    is_test = folder_test_mask(torch.tensor(labels), len(classes)).tolist()
    train = [(f, y) for f, y, t in zip(files, labels, is_test) if not t]
    test = [(f, y) for f, y, t in zip(files, labels, is_test) if t]
    segments = [(split, [f for f, _ in part], [y for _, y in part]) for split, part in (("train", train),
                                                                                       ("test", test))]
    return folder.resolve().name, classes, segments, "train", listing


def prepared_path(source: str | Path, size: int, root: str | Path | None = None) -> Path:
    """Where ``prepare(source, size)`` puts its folder: ``<root>/<name>-<size>px-<key>``.

    ``root`` defaults to ``data/prepared`` under ``sslkit.data.data_root()``.
    """
    name, _, _, _, listing = _plan(str(source), size)
    return _keyed_path(name, size, listing, root)


def _keyed_path(name: str, size: int, listing, root=None) -> Path:
    from .data import data_root

    key = hashlib.sha1(json.dumps([FORMAT_VERSION, size, listing]).encode()).hexdigest()[:12]
    return Path(root or data_root() / "prepared") / f"{name}-{size}px-{key}"


# ----------------------------------------------------------------------------------------------
# preparing: parts written by worker processes, then one array


def _save_part(path: Path, images: np.ndarray, labels, files: list[str]):
    """One finished chunk, written atomically (a crash leaves a .tmp file that resuming ignores)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, images=images, labels=np.asarray(labels, dtype=np.int64), files=np.asarray(files, dtype=str))
    os.replace(tmp, path)


def _decode_part(task) -> tuple[int, list[str]]:
    """Worker: decode one chunk of files into a part file; returns (images kept, unreadable files)."""
    path, files, labels, size = task
    kept, kept_labels, kept_files, skipped = [], [], [], []
    for f, y in zip(files, labels):
        a = read_rgb(Path(f), size)
        if a is None:
            skipped.append(f)
        else:
            kept.append(a)
            kept_labels.append(y)
            kept_files.append(f)
    images = np.stack(kept) if kept else np.zeros((0, 3, size, size), np.uint8)
    _save_part(Path(path), images, kept_labels, kept_files)
    return len(kept), skipped


def _pool(workers: int):
    """Decoding processes: forked where the platform forks safely (Linux: they start at once, and a caller's
    script needs no ``if __name__ == "__main__":`` guard), spawned elsewhere."""
    import multiprocessing as mp
    import platform
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if platform.system() == "Linux" else "spawn"  # macOS's fork is unsafe with system libraries
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method))


def prepare(source: str | Path, size: int, *, out: str | Path | None = None, workers: int = 2,
            chunk_size: int = CHUNK_SIZE, progress: bool = True) -> Path:
    """Decode ``source`` once into a prepared folder and return its path (see the module docstring).

    Args:
        source: an image folder (class subfolders: labeled; flat: unlabeled), or "cifar10", "stl10",
            "imagenette" (their files under ``data/``, read split by split by their loaders).
        size: the square size in pixels of the prepared images (scale the shorter side, crop the centre).
        out: the folder to write (default ``prepared_path(source, size)``).
        workers: decoding processes for an image folder.
        chunk_size: images per part file.
        progress: a progress bar.

    Running it again on a complete folder returns at once; on an interrupted one it decodes only the
    chunks that are missing. Unreadable files are skipped with one warning, and listed in meta.json.
    """
    from tqdm.auto import tqdm

    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size={size!r}: give the prepared images' side in pixels, at least 8 (e.g. --size 64)")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: give at least 1 decoding process")
    name, classes, segments, unlabeled_is, listing = _plan(str(source), size)  # lists the source once
    out = Path(out) if out is not None else _keyed_path(name, size, listing)
    if is_prepared(out):
        shutil.rmtree(out / "parts", ignore_errors=True)  # left by a run stopped after it completed
        (out / "plan.json").unlink(missing_ok=True)
        return out
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps({"source": str(source), "size": size}))  # for "run again to resume"
    tasks = []  # (part path, files, labels) per chunk of a folder segment; real datasets go whole
    for s, (split, files, labels) in enumerate(segments):
        if files is None:
            tasks.append((parts / f"{s:02d}-real.npz", split))
            continue
        for k in range(0, max(len(files), 1), chunk_size):
            tasks.append((parts / f"{s:02d}-{k // chunk_size:06d}.npz", [str(f) for f in files[k:k + chunk_size]],
                          labels[k:k + chunk_size]))
    todo = [t for t in tasks if not t[0].exists()]
    total = sum(len(seg[1]) for seg in segments if seg[1] is not None)
    done = total - sum(len(t[1]) for t in todo if len(t) == 3)
    with tqdm(total=total or None, initial=done, desc=f"prepare {name} at {size}px", unit="img",
              disable=not progress) as bar:
        for path, split in [t for t in todo if len(t) == 2]:  # a real dataset: its loader, split by split
            from .data import load_dataset
            d = load_dataset(name, split, image_size=size)
            _save_part(path, d.images.numpy(), d.labels.tolist(), [])
        file_tasks = [(str(p), files, labels, size) for p, files, labels in (t for t in todo if len(t) == 3)]
        if file_tasks:
            from concurrent.futures import as_completed
            with _pool(min(workers, len(file_tasks))) as pool:
                futures = {pool.submit(_decode_part, t): len(t[1]) for t in file_tasks}
                try:
                    for future in as_completed(futures):
                        future.result()
                        bar.update(futures[future])
                except BaseException:  # Ctrl-C or a failure: finished parts stay, the rest is not started
                    for future in futures:
                        future.cancel()
                    raise
    return _assemble(out, name, size, classes, segments, unlabeled_is, [t[0] for t in tasks], source)


def _assemble(out: Path, name, size, classes, segments, unlabeled_is, part_paths, source) -> Path:
    """Parts -> images.u8, labels.npy, files.txt, then meta.json (last), then the parts go."""
    splits, labels, files, skipped, start = {}, [], [], [], 0
    tmp = out / "images.u8.tmp"
    with open(tmp, "wb") as f:
        for s, (split, seg_files, _) in enumerate(segments):
            count = 0
            for path in (p for p in part_paths if p.name.startswith(f"{s:02d}-")):
                with np.load(path) as part:
                    images = part["images"]
                    f.write(np.ascontiguousarray(images).tobytes())
                    labels.append(part["labels"])
                    files += part["files"].tolist()
                    count += len(images)
            if seg_files is not None:
                kept = set(files[start:start + count])
                skipped += [str(p) for p in seg_files if str(p) not in kept]
            splits[split] = [start, start + count]
            start += count
    if start == 0:
        raise ValueError(f"{source} holds no readable images ({len(skipped)} unreadable file(s)); put image "
                         f"files (jpg, png, ...) in it")
    os.replace(tmp, out / "images.u8")
    np.save(out / "labels.npy", np.concatenate(labels).astype(np.int64))
    base = Path(str(source)).expanduser()
    rel = [os.path.relpath(p, base) for p in files] if base.is_dir() else files
    (out / "files.txt").write_text("".join(f"{p}\n" for p in rel))
    if unlabeled_is is not None:
        splits["unlabeled"] = splits[unlabeled_is]
    if classes is None:  # a real dataset: its loader knows the class names
        from .data import load_dataset
        classes = load_dataset(name, "test", n=1, image_size=size).classes
    if skipped:
        warnings.warn(skipped_warning([Path(p) for p in skipped], base if base.is_dir() else Path("/")),
                      stacklevel=3)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "name": name, "source": str(source), "size": size,
            "count": start, "classes": classes, "splits": splits,
            "skipped": [os.path.relpath(p, base) if base.is_dir() else p for p in skipped]}
    tmp_meta = out / "meta.json.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, out / "meta.json")
    shutil.rmtree(out / "parts", ignore_errors=True)
    (out / "plan.json").unlink(missing_ok=True)  # needed only to say how to resume an unfinished preparation
    return out


def write_prepared(out: str | Path, splits: dict, classes: list[str], name: str | None = None) -> Path:
    """Write in-memory images straight into the prepared format (tests, benchmarks, generated data).

    ``splits`` maps a split name to (images uint8 (N, 3, S, S) as a tensor or array, labels); images
    may also be an iterable of such chunks, to write a set larger than memory. Returns ``out``.
    """
    out = Path(out)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    segments, part_paths, size = [], [], None
    for s, (split, (images, labels)) in enumerate(splits.items()):
        chunks = [images] if hasattr(images, "shape") else images
        labels = np.asarray(labels, dtype=np.int64)
        at = 0
        for k, chunk in enumerate(chunks):
            chunk = np.asarray(chunk)
            if chunk.dtype != np.uint8 or chunk.ndim != 4 or chunk.shape[1] != 3 or chunk.shape[2] != chunk.shape[3]:
                raise ValueError(f"split {split!r}: images must be uint8 (N, 3, S, S), got {chunk.dtype} {chunk.shape}")
            size = chunk.shape[-1]
            path = parts / f"{s:02d}-{k:06d}.npz"
            _save_part(path, chunk, labels[at:at + len(chunk)] if len(labels) else np.full(len(chunk), -1), [])
            part_paths.append(path)
            at += len(chunk)
        segments.append((split, None, None))
    unlabeled_is = "train" if "train" in splits and "unlabeled" not in splits else None
    return _assemble(out, name or out.name, size, list(classes), segments, unlabeled_is, part_paths, out)


# ----------------------------------------------------------------------------------------------
# reading


def is_prepared(path: str | Path) -> bool:
    """True when ``path`` is a prepared folder whose preparation completed."""
    return (Path(path).expanduser() / "meta.json").is_file()


def looks_prepared(path: str | Path) -> bool:
    """True for a prepared folder, complete or not (``load_dataset`` then reads it as one)."""
    p = Path(path).expanduser()
    return any((p / name).exists() for name in ("meta.json", "plan.json", "images.u8"))


def read_meta(path: str | Path) -> dict:
    """A prepared folder's meta.json; ``PreparationIncomplete`` saying how to finish it when it has none."""
    path = Path(path).expanduser()
    if not is_prepared(path):
        plan = json.loads((path / "plan.json").read_text()) if (path / "plan.json").is_file() else None
        how = (f"run `python -m sslkit.data prepare {plan['source']} --size {plan['size']}` again: it resumes where "
               f"it stopped" if plan else "prepare the data with `python -m sslkit.data prepare SOURCE --size S`")
        raise PreparationIncomplete(f"{path} is not a complete prepared dataset (no meta.json): {how}")
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} was prepared in format {meta.get('format')} v{meta.get('version')}, this sslkit "
                         f"reads {FORMAT} v{FORMAT_VERSION}: prepare the source again")
    return meta


def open_prepared(path: str | Path, split: str = "train", n: int | None = None, seed: int = 0,
                  image_size: int | None = None):
    """One split of a prepared folder as an ``ImageData`` whose images are a memory map (nothing is read yet).

    With ``n`` smaller than the split, a random subset (the same for the same ``seed``) is read into
    memory instead. ``image_size``, when given, must be the prepared size (prepare again for another).
    """
    import torch

    from .data import ImageData, _pick

    path = Path(path).expanduser()
    meta = read_meta(path)
    size, count = meta["size"], meta["count"]
    if image_size is not None and image_size != size:
        raise ValueError(f"{path} holds images of {size} px, not {image_size}: set image_size={size} (IMAGE_SIZE "
                         f"in a notebook, --set image_size={size} in the shell), or prepare the source again with "
                         f"--size {image_size}")
    if split not in meta["splits"]:
        raise ValueError(f"the prepared dataset {meta['name']!r} has no {split!r} split; choose one of: "
                         f"{', '.join(meta['splits'])}")
    start, stop = meta["splits"][split]
    if stop == start:
        raise ValueError(f"the {split!r} split of the prepared dataset {meta['name']!r} is empty (all of its files "
                         f"were unreadable: {len(meta['skipped'])} skipped)")
    file = path / "images.u8"
    if not file.is_file() or file.stat().st_size != count * 3 * size * size:
        raise ValueError(f"{file} is missing or not {count} images of {size} px; delete {path} and prepare again")
    # copy-on-write: pages stay the file's (no memory of the process's own) unless written, and never reach the file
    images = torch.from_numpy(np.memmap(file, dtype=np.uint8, mode="c", shape=(count, 3, size, size))[start:stop])
    labels = torch.from_numpy(np.load(path / "labels.npy")[start:stop])
    if split == "unlabeled":
        labels = torch.full_like(labels, -1)
    info = {"source": meta["source"], "prepared": str(path), "memory_mapped": True}
    if n is not None and n < len(images):
        idx = _pick(len(images), n, seed)
        images, labels, info["memory_mapped"] = images[idx], labels[idx], False  # a subset: read into memory
    return ImageData(images, labels, meta["classes"], f"prepared:{meta['name']}", split, info=info)


def main(argv: list[str]) -> int:
    """``python -m sslkit.data prepare SOURCE --size S [--workers N] [--out DIR]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sslkit.data prepare",
                                     description="Decode an image folder or a real dataset once into a memory-mapped "
                                                 "array under data/prepared/, to train on data bigger than memory.")
    parser.add_argument("source", help=f"an image folder, or one of: {', '.join(REAL)}")
    parser.add_argument("--size", type=int, required=True, help="side of the prepared square images, in pixels")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8), help="decoding processes")
    parser.add_argument("--out", help="the folder to write (default: data/prepared/NAME-SIZEpx-KEY)")
    args = parser.parse_args(argv)
    try:
        path = prepare(args.source, args.size, out=args.out, workers=args.workers)
        meta = read_meta(path)
    except (ValueError, FileNotFoundError, OSError) as e:
        parser.error(str(e))
    splits = ", ".join(f"{s} {b - a}" for s, (a, b) in meta["splits"].items())
    print(f"prepared {meta['count']} images of {meta['size']} px ({splits}; {len(meta['skipped'])} unreadable "
          f"skipped) in {path}\ntrain from it: python -m sslkit.train simclr --dataset {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
