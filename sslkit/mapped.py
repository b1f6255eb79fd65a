"""A prepared folder (``sslkit.prepared``) read back: its meta.json, and each split as an ``ImageData`` whose images
are a memory map of ``images.u8``, so a training gathers batches from the file and the process's own memory stays
small."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np

FORMAT, FORMAT_VERSION = "sslkit-prepared", 1


class PreparationIncomplete(RuntimeError):
    """A prepared folder whose preparation has not finished (it resumes when run again)."""


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
        source = plan.get("source_id") or plan["source"] if plan else None  # a folder's absolute path: from anywhere
        how = (f"run `python -m sslkit.data prepare {shlex.quote(str(source))} --size {plan['size']} --out "
               f"{shlex.quote(str(path))}` again: it resumes where it stopped" if plan
               else "prepare the data with `python -m sslkit.data prepare SOURCE --size S`")
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
    if split != "unlabeled" and len(meta["classes"]) == 1:  # as the folder loader says (folders.py)
        raise ValueError(f"the prepared dataset {meta['name']!r} has a single class {meta['classes']}: a classifier "
                         f"needs at least two; add a subfolder per class to its source (folder/cat/..., folder/dog/...) "
                         f"and prepare it again")
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
