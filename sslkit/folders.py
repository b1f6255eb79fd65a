"""A folder of your own images as a dataset: ``load_dataset("path/to/folder", split)``.

Two layouts: ``folder/<class>/*.jpg`` (labeled: the class is the subfolder's name) and
``folder/*.jpg`` (flat: unlabeled only). A labeled folder's ``train`` and ``test`` splits are fixed
(``folder_test_mask``) and its ``unlabeled`` split is the ``train`` images with their labels hidden,
so pretraining never sees a test image. Files that are not readable images are skipped with one
warning that names them (``sslkit.imagefiles`` reads the files).

>>> import tempfile
>>> from PIL import Image
>>> from sslkit.data import load_dataset
>>> tmp = tempfile.TemporaryDirectory()
>>> for i in range(3):
...     Image.new("RGB", (20, 20), (0, 80 * i, 0)).save(Path(tmp.name) / f"{i}.png")
>>> d = load_dataset(tmp.name, "unlabeled", image_size=8)
>>> len(d), d.labels.tolist(), d.classes
(3, [-1, -1, -1], [])
>>> tmp.cleanup()
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .data import DatasetNotFoundError, ImageData, _check_split
from .imagefiles import list_folder, read_rgb, skipped_warning


def _read_files(files: list[Path], labels: torch.Tensor, n: int | None, seed: int, size: int | None,
                where: Path, others: list[Path] = (), split: str | None = None):
    """Read ``n`` images (None: all) picked at random with ``seed`` from ``files``.

    Files that are not readable images are skipped, with one warning that counts and names them;
    reading goes on through the random order until ``n`` images are read, so a subset has ``n``
    images whenever the folder has them. Returns (images (N, 3, S, S) uint8, labels, skipped files).
    ``files`` may be one ``split`` of the folder ``where``, ``others`` the rest of its files: when no file
    of the split is readable, the error counts the whole folder's unreadable files.
    """
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist() \
        if n is not None and n < len(files) else list(range(len(files)))
    want = len(files) if n is None else n
    read, skipped = {}, []
    for i in order:
        if len(read) == want:
            break
        img = read_rgb(files[i], size)
        if img is None:
            skipped.append(files[i])
        else:
            read[i] = img
    if skipped:
        warnings.warn(skipped_warning(skipped, where), stacklevel=4)
    if not read:
        readable_elsewhere = any(read_rgb(f, 8) is not None for f in others)  # stops at the first readable one
        if readable_elsewhere:
            raise ValueError(f"the {split!r} split of {where} holds no readable images ({len(skipped)} unreadable "
                             f"file(s)): all the readable ones fell in the other split; add image files (jpg, "
                             f"png, ...) to each class subfolder")
        raise ValueError(f"{where} holds no readable images ({len(skipped) + len(others)} unreadable file(s)); put "
                         f"image files (jpg, png, ...) in it")
    kept = sorted(read)
    images = [read[i] for i in kept]
    if size is None and len({tuple(im.shape) for im in images}) > 1:
        sizes = sorted({tuple(im.shape[1:]) for im in images})
        raise ValueError(f"the images in {where} have {len(sizes)} different sizes (e.g. {sizes[:3]}); "
                         f"give image_size=... to scale and centre-crop them to one square size")
    # np.stack, not torch.stack: torch's runs threaded and crawls on a busy CPU
    return torch.from_numpy(np.stack(images)), labels[torch.tensor(kept)], skipped


def folder_test_mask(labels: torch.Tensor, num_classes: int, test_fraction: float = 0.2) -> torch.Tensor:
    """Which images of a labeled folder are its ``test`` split: ``test_fraction`` of each class, drawn with
    seed 0, so the split never changes (``sslkit.prepared`` lays a prepared folder out by the same rule).

    >>> folder_test_mask(torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]), 2).sum().item()
    2
    """
    g = torch.Generator().manual_seed(0)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for k in range(num_classes):
        idx = (labels == k).nonzero().squeeze(1)
        n_test = int(round(len(idx) * test_fraction))
        is_test[idx[torch.randperm(len(idx), generator=g)[:n_test]]] = True
    return is_test


def _load_folder(split, folder, image_size, n, seed, test_fraction=0.2):
    """An image folder: ``folder/<class>/*.jpg`` (labeled) or ``folder/*.jpg`` (flat, unlabeled only).

    With class subfolders, ``train`` and ``test`` are a fixed split (``test_fraction`` of each
    class, drawn with seed 0 so it never changes) and ``unlabeled`` is the ``train`` images with
    their labels hidden (as for CIFAR-10), so pretraining never sees a test image. A flat folder
    has only ``unlabeled``: all of its images.

    torchvision's ``ImageFolder`` is not used: it ignores files by extension without a word,
    stops at the first unreadable image, and has no flat (unlabeled) layout.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetNotFoundError(f"image folder {folder} does not exist (or is not a folder); give the path of a "
                                   f"folder with class subfolders (folder/cat/1.jpg, folder/dog/2.jpg, ...) or "
                                   f"with images directly in it (unlabeled)")
    _check_split("folder", split, ("unlabeled", "train", "test"))
    files, file_labels, classes = list_folder(folder)
    if not files:
        raise ValueError(f"image folder {folder} holds no files; put images in it (unlabeled) or in one "
                         f"subfolder per class (folder/cat/1.jpg, folder/dog/2.jpg, ...)")
    if not classes and split != "unlabeled":
        raise ValueError(f"{folder} has no class subfolders, so it has only an 'unlabeled' split; for "
                         f"'{split}' put the images in one subfolder per class (folder/cat/1.jpg, "
                         f"folder/dog/2.jpg, ...)")
    labels = torch.tensor(file_labels, dtype=torch.long)
    others = []  # the folder's files outside the split: counted when none of the split's is readable
    if classes and test_fraction > 0:
        is_test = folder_test_mask(labels, len(classes), test_fraction)
        keep = is_test if split == "test" else ~is_test
        others = [f for f, t in zip(files, keep.tolist()) if not t]
        files, labels = [f for f, t in zip(files, keep.tolist()) if t], labels[keep]
        if not files:
            raise ValueError(f"the {split!r} split of {folder} is empty: its classes are too small for a "
                             f"{test_fraction:.0%} test split; add images to each class subfolder")
    images, labels, skipped = _read_files(files, labels, n, seed, image_size, folder, others, split)
    info = {"source": str(folder), "skipped": [str(p) for p in skipped]}
    return images, labels, classes, info


def _some(items, k: int = 8) -> str:
    """The first ``k`` of a list (or of a dict's ``name: count`` pairs), and how many there are in all: a folder with
    hundreds of subfolders gets a message of one line.

    >>> _some(["a", "b"]), _some({"a": 0, "b": 3}), _some(list("abcdefghij"), k=3)
    ('a, b', 'a: 0, b: 3', 'a, b, c, ... (10 in all)')
    """
    shown = [f"{key}: {items[key]}" for key in items] if isinstance(items, dict) else [str(i) for i in items]
    return ", ".join(shown[:k]) + (f", ... ({len(shown)} in all)" if len(shown) > k else "")


def _check_class_balance(data: ImageData):
    """A labeled folder split needs two classes or more; very unequal class sizes get a warning."""
    counts = data.class_counts()
    if data.split == "unlabeled" or not counts:
        return
    if len(counts) == 1:
        raise ValueError(f"{data.name} has a single class {list(counts)}: a classifier needs at least two; "
                         f"add a subfolder per class (folder/cat/..., folder/dog/...)")
    empty = [c for c, k in counts.items() if k == 0]
    if empty:
        warnings.warn(f"{data.name} has no images of {len(empty)} of its {len(counts)} classes in its "
                      f"{data.split!r} split ({_some(empty)}; counts: {_some(counts)}); add images to those class "
                      f"subfolders or remove them", stacklevel=3)
        return
    lo, hi = min(counts.values()), max(counts.values())
    if hi > 10 * lo:
        warnings.warn(f"classes of {data.name} ({data.split!r} split) have very different sizes: {_some(counts)}; "
                      f"accuracy will be dominated by the large classes (balance them, or compare "
                      f"per-class recall)", stacklevel=3)

