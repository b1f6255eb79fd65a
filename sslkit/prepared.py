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
# the format and its readers (sslkit.mapped), named here too: sslkit.prepared is where a user looks for them
from .mapped import (FORMAT, FORMAT_VERSION, PreparationIncomplete, is_prepared, looks_prepared,  # noqa: F401
                     open_prepared, read_meta)

CHUNK_SIZE = 512  # images per part file: the unit of parallel work and of resuming
CHUNK_BYTES = 256 * 2**20  # at most this much image data per chunk: each decoding process holds a chunk (twice)
# One image of S px takes 3*S*S bytes (768 KB at 512): the kit's models train on 32 to 224 px, and far larger
# sizes make the set (N * 3*S*S bytes on disk) and every decoding process's memory grow past a machine's.
MAX_SIZE = 512
REAL = ("cifar10", "stl10", "imagenette")  # real datasets are prepared through their loaders, split by split


class PreparationFailed(RuntimeError):
    """A preparation stopped by a failure outside the data (a decoding process died); running it again resumes."""


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


def _key(size: int, listing) -> str:
    """What a preparation is of: the format version, the size and the source's listing, hashed."""
    return hashlib.sha1(json.dumps([FORMAT_VERSION, size, listing]).encode()).hexdigest()[:12]


def _keyed_path(name: str, size: int, listing, root=None) -> Path:
    from .data import data_root

    return Path(root or data_root() / "prepared") / f"{name}-{size}px-{_key(size, listing)}"


def _source_id(source: str) -> str:
    """The same for every way of naming one source: a real dataset's name, or a folder's absolute path (so
    ``photos``, ``./photos/`` and ``~/data/photos`` from any working directory compare equal)."""
    return source if source in REAL else str(Path(source).expanduser().resolve())


def _check_out(out: Path, source: str, size: int, key: str) -> dict | None:
    """What ``out`` holds when it is a preparation of this request: meta.json (finished), plan.json (unfinished),
    or None (nothing yet). A folder that holds another source, size or state of the source, or files that are
    no preparation, is refused (``ValueError`` saying what it holds), so two preparations never mix."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder; give a new folder as the output (--out)")
    done = is_prepared(out)
    held_file = out / ("meta.json" if done else "plan.json")
    if not held_file.is_file():
        other = sorted(p.name for p in out.iterdir() if p.name != "parts")
        if other:
            from .folders import _some
            raise ValueError(f"{out} holds files that are not a preparation ({_some(other, 5)}); give a new or "
                             f"empty folder as the output (--out)")
        return None
    state = "a finished" if done else "an unfinished"
    try:
        held = json.loads(held_file.read_text())
        held_source, held_size = str(held["source"]), held["size"]
        held_id = str(held.get("source_id") or _source_id(held_source))  # files without source_id: from "source"
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{held_file} is not readable; delete {out} and prepare again") from None
    if done and (held.get("format") != FORMAT or held.get("version") != FORMAT_VERSION):
        raise ValueError(f"{out} holds a preparation in format {held.get('format')} v{held.get('version')}, this "
                         f"sslkit writes {FORMAT} v{FORMAT_VERSION}: delete {out} to prepare {source} there, or "
                         f"give another output folder (--out)")
    if held_size != size or held_id != _source_id(str(source)):
        raise ValueError(f"{out} holds {state} preparation of {held_source} at {held_size} px, not of {source} at "
                         f"{size} px: give another output folder (--out), or delete {out} to prepare {source} "
                         f"there")
    if held.get("key") not in (None, key):  # None: written by write_prepared, or before keys were recorded
        raise ValueError(f"{out} holds {state} preparation of {held_source} at {size} px made before its files "
                         f"changed (added, removed or modified): delete {out} to prepare it again, or give another "
                         f"output folder (--out)")
    return held


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
        chunk_size: images per part file (fewer for large images: a chunk holds at most ``CHUNK_BYTES``).
        progress: a progress bar.

    Running it again on a complete folder returns at once; on an interrupted one it decodes only the
    chunks that are missing. Unreadable files are skipped with one warning, and listed in meta.json.
    A folder ``out`` that holds (or is preparing) another source or size is refused with a ``ValueError``.
    """
    return _prepare(source, size, out, workers, chunk_size, progress)[0]


def _prepare(source, size, out, workers, chunk_size, progress) -> tuple[Path, bool]:
    """``prepare``, and whether ``out`` was complete already (the command line says so)."""
    from tqdm.auto import tqdm

    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size={size!r}: give the prepared images' side in pixels, at least 8 (e.g. --size 64)")
    if size > MAX_SIZE:
        raise ValueError(f"size={size}: give at most {MAX_SIZE} px (e.g. --size 64 or --size 224); one image of S "
                         f"px takes 3*S*S bytes ({3 * size * size / 2**20:,.0f} MB at {size}), too much for the "
                         f"prepared set on disk and for the decoding processes' memory")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: give at least 1 decoding process")
    name, classes, segments, unlabeled_is, listing = _plan(str(source), size)  # lists the source once
    key = _key(size, listing)
    out = Path(out).expanduser() if out is not None else _keyed_path(name, size, listing)
    held = _check_out(out, str(source), size, key)  # refuses a folder that holds another preparation
    if is_prepared(out):
        shutil.rmtree(out / "parts", ignore_errors=True)  # left by a run stopped after it completed
        (out / "plan.json").unlink(missing_ok=True)
        return out, True
    # a resumed preparation keeps the chunks it started with, so its part files mean the same images
    chunk_size = held.get("chunk_size", chunk_size) if held else chunk_size
    chunk_size = max(1, min(chunk_size, CHUNK_BYTES // (3 * size * size)))
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    plan = {"source": str(source), "source_id": _source_id(str(source)), "size": size, "key": key,
            "chunk_size": chunk_size}
    (out / "plan.json").write_text(json.dumps(plan))  # for "run again to resume", and to check what resumes
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
            from concurrent.futures.process import BrokenProcessPool
            with _pool(min(workers, len(file_tasks))) as pool:
                futures = {pool.submit(_decode_part, t): len(t[1]) for t in file_tasks}
                try:
                    for future in as_completed(futures):
                        future.result()
                        bar.update(futures[future])
                except BrokenProcessPool:  # a process was killed (most often by the system, out of memory)
                    raise PreparationFailed(
                        f"a decoding process died while preparing {source} at {size} px (killed by the system, "
                        f"most often for lack of memory); run again with fewer --workers (now {workers}) or a "
                        f"smaller --size: it resumes from the chunks already in {out / 'parts'}") from None
                except BaseException:  # Ctrl-C or a failure: finished parts stay, the rest is not started
                    for future in futures:
                        future.cancel()
                    raise
    return _assemble(out, name, size, classes, segments, unlabeled_is, [t[0] for t in tasks], source, key), False


def _assemble(out: Path, name, size, classes, segments, unlabeled_is, part_paths, source, key=None) -> Path:
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
    if start == 0:  # nothing to keep: the half-made folder goes, so that nothing offers to resume it
        tmp.unlink(missing_ok=True)
        shutil.rmtree(out / "parts", ignore_errors=True)
        (out / "plan.json").unlink(missing_ok=True)
        if not any(out.iterdir()):  # (a folder of --out that held files of its own keeps them)
            out.rmdir()
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
            "source_id": _source_id(str(source)), "key": key, "count": start, "classes": classes, "splits": splits,
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
                raise ValueError(f"split {split!r}: images must be uint8 (N, 3, S, S), got {chunk.dtype} "
                                 f"{chunk.shape}")
            size = chunk.shape[-1]
            path = parts / f"{s:02d}-{k:06d}.npz"
            _save_part(path, chunk, labels[at:at + len(chunk)] if len(labels) else np.full(len(chunk), -1), [])
            part_paths.append(path)
            at += len(chunk)
        segments.append((split, None, None))
    unlabeled_is = "train" if "train" in splits and "unlabeled" not in splits else None
    return _assemble(out, name or out.name, size, list(classes), segments, unlabeled_is, part_paths, out)


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
        path, already = _prepare(args.source, args.size, args.out, args.workers, CHUNK_SIZE, True)
        meta = read_meta(path)
    except (ValueError, FileNotFoundError, OSError) as e:
        parser.error(str(e))
    except PreparationFailed as e:  # not a bad input: the message and exit 1, no traceback
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the finished chunks stay: the same command goes on from them
        print("\ninterrupted: run the same command again to go on from the chunks already prepared", file=sys.stderr)
        return 130
    splits = ", ".join(f"{s} {b - a}" for s, (a, b) in meta["splits"].items())
    print(f"{'already ' if already else ''}prepared {meta['count']} images of {meta['size']} px ({splits}; "
          f"{len(meta['skipped'])} unreadable skipped) in {path}\n"
          f"train from it: python -m sslkit.train simclr --dataset {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
