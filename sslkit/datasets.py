"""The real datasets on disk: CIFAR-10, STL-10 and Imagenette, read by torchvision's readers.

``sslkit.data.load_dataset("cifar10", ...)`` (and ``"stl10"``, ``"imagenette"``) reads them with the
loaders here, from the files under ``data_root()`` (``data/README.md`` says where each goes). A file
that is missing raises ``DatasetNotFoundError`` naming it and saying how to get it; files that are
there but not in the format torchvision reads raise a ValueError saying how to replace them.
``download`` (``python -m sslkit.data download NAME``) is the only code in the kit that downloads.

>>> import tempfile
>>> from sslkit.data import load_dataset
>>> try:
...     load_dataset("cifar10", "train", root=tempfile.mkdtemp())
... except DatasetNotFoundError as e:
...     print(str(e).split(":")[0])
dataset 'cifar10' is not on this machine
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .data import DatasetNotFoundError, _check_split, _pick, data_root
from .folders import _read_files

# name -> (folder under data/, the file or folder that shows it is there, how to get it)
_REAL = {
    "cifar10": ("cifar10", "cifar-10-batches-py/data_batch_1",
                "torchvision.datasets.CIFAR10(root, download=True), about 170 MB"),
    "stl10": ("stl10", "stl10_binary/train_X.bin",
              "torchvision.datasets.STL10(root, split='train+unlabeled', download=True), about 2.6 GB"),
    "imagenette": ("imagenette", "imagenette2-160/train",
                   "torchvision.datasets.Imagenette(root, size='160px', download=True), about 94 MB"),
}


def _missing(name: str, root: Path, expected: str, how: str, more: int = 0) -> DatasetNotFoundError:
    also = f" (and {more} more file(s) next to it)" if more else ""
    return DatasetNotFoundError(
        f"dataset {name!r} is not on this machine: expected {root / expected}{also}. sslkit never downloads "
        f"by itself. To get it (online): `python -m sslkit.data download {name}` (runs {how} into {root}), "
        f"or copy the files there; or set SSLKIT_DATA to the folder that holds '{root.name}/'. "
        f"The default dataset 'shapes' needs no download.")


def _require(name: str, path: Path, files: list[str]):
    """Raise DatasetNotFoundError naming the first of ``files`` (relative to ``path``) that is missing."""
    missing = [f for f in files if not (path / f).exists()]
    if missing:
        raise _missing(name, path, missing[0], _REAL[name][2], more=len(missing) - 1)


def _malformed(name: str, path: Path, problem: str) -> ValueError:
    return ValueError(f"the {name} files in {path} are not in the format torchvision reads ({problem}); "
                      f"delete them and run `python -m sslkit.data download {name}`, or copy the files "
                      f"from the official archive (data/README.md)")


def _resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> (N, 3, size, size), anti-aliased, in chunks to bound memory."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    out = [F.interpolate(images[i:i + 1024].float(), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).round().clamp(0, 255).to(torch.uint8)
           for i in range(0, len(images), 1024)]
    return torch.cat(out)


def _check_labels(name: str, path: Path, images, labels, num_classes: int):
    if len(labels) != len(images):
        raise _malformed(name, path, f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < -1 or labels.max() >= num_classes):
        raise _malformed(name, path, f"labels run from {int(labels.min())} to {int(labels.max())}, "
                                     f"outside 0..{num_classes - 1}")


# ----------------------------------------------------------------------------------------------
# CIFAR-10 and STL-10: torchvision's readers on the files under data/
#
# torchvision checks the md5 sum of every file of the dataset in ``_check_integrity`` before it
# reads any (and of ``batches.meta`` in CIFAR10._load_meta), so it refuses all but the official
# files. sslkit checks instead that the files the split needs exist (a clear DatasetNotFoundError
# when not) and that what they hold has the format's shape; ``download`` checks the archive's md5.


def _load_cifar10(split, root, image_size, n, seed):
    import pickle

    from torchvision.datasets import CIFAR10

    class CIFAR10Files(CIFAR10):  # torchvision's reader, minus the md5 sums (see above)
        meta = {**CIFAR10.meta, "md5": None}  # check_integrity(path, None): the file exists

        def _check_integrity(self):  # _require has checked the files this split reads
            return True

    _check_split("cifar10", split, ("unlabeled", "train", "test"))
    path = root / _REAL["cifar10"][0]
    batches = CIFAR10.test_list if split == "test" else CIFAR10.train_list
    _require("cifar10", path, [f"{CIFAR10.base_folder}/{f}" for f, _ in batches]
             + [f"{CIFAR10.base_folder}/{CIFAR10.meta['filename']}"])
    try:
        ds = CIFAR10Files(str(path), train=(split != "test"), download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise _malformed("cifar10", path / CIFAR10.base_folder, f"{type(e).__name__}: {e}") from e
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    labels = torch.tensor(ds.targets, dtype=torch.long)
    _check_labels("cifar10", path, images, labels, len(ds.classes))
    idx = _pick(len(images), n, seed)
    images = images if len(idx) == len(images) else images[idx]  # no copy of a whole split
    return _resize(images, image_size).contiguous(), labels[idx], list(ds.classes), path


def _load_stl10(split, root, image_size, n, seed):
    from torchvision.datasets import STL10

    class STL10Files(STL10):  # torchvision's reader, minus the md5 sums (see above)
        def _check_integrity(self):  # _require has checked the files this split reads
            return True

    _check_split("stl10", split, ("unlabeled", "train", "test"))
    path = root / _REAL["stl10"][0]
    needed = {"unlabeled": ["unlabeled_X.bin"], "train": ["train_X.bin", "train_y.bin"],
              "test": ["test_X.bin", "test_y.bin"]}[split] + [STL10.class_names_file]
    _require("stl10", path, [f"{STL10.base_folder}/{f}" for f in needed])
    try:
        ds = STL10Files(str(path), split=split, download=False)
    except ValueError as e:  # a file whose size is not a whole number of 3 x 96 x 96 images
        raise _malformed("stl10", path / STL10.base_folder, f"{type(e).__name__}: {e}") from e
    images = torch.from_numpy(ds.data)  # (N, 3, 96, 96) uint8 (a transposed view of the column-major file)
    labels = torch.from_numpy(ds.labels.astype("int64"))  # torchvision: 0-based, -1 for unlabeled
    _check_labels("stl10", path, images, labels, len(ds.classes))
    idx = _pick(len(images), n, seed)
    images = images if len(idx) == len(images) else images[idx]  # no copy of a whole split
    return _resize(images, image_size).contiguous(), labels[idx], list(ds.classes), path


# ----------------------------------------------------------------------------------------------
# Imagenette: image files in class folders, read as a folder of your own images is (sslkit.folders)


def _load_imagenette(split, root, image_size, n, seed):
    """Imagenette (10 easy ImageNet classes), torchvision's layout: imagenette2-160/{train,val}/<wnid>/*.JPEG."""
    from torchvision.datasets import Imagenette
    from torchvision.datasets.folder import make_dataset

    _check_split("imagenette", split, ("unlabeled", "train", "test"))
    path = root / _REAL["imagenette"][0]
    part = "val" if split == "test" else "train"  # Imagenette's val split is the kit's test split
    _require("imagenette", path, [f"imagenette2-160/{part}"])
    image_root = path / "imagenette2-160" / part
    try:
        ds = Imagenette(str(path), split=part, size="160px", download=False)
        samples = make_dataset(str(image_root), ds.wnid_to_idx, extensions=".jpeg")  # what torchvision reads
    except KeyError as e:  # a class folder that is not one of Imagenette's ten
        raise ValueError(f"{image_root} has a class folder {e} that is not one of Imagenette's ten classes; "
                         f"remove it, or load your own images with load_dataset('folder', root=...)") from None
    except FileNotFoundError as e:  # no class folders, or a class folder without .JPEG files
        if "no valid file" in str(e):
            raise ValueError(f"{image_root}: {e}; put the class's .JPEG files back (`python -m sslkit.data "
                             f"download imagenette` restores them) or remove its empty folder") from None
        raise _missing("imagenette", path, f"imagenette2-160/{part}/<wnid>/*.JPEG", _REAL["imagenette"][2]) from None
    files = [Path(p) for p, _ in samples]
    labels = torch.tensor([k for _, k in samples], dtype=torch.long)
    images, labels, skipped = _read_files(files, labels, n, seed, image_size or 160, image_root)
    classes = [names[0] for names in ds.classes]  # torchvision: a tuple of names per class, the first is short
    return images, labels, classes, path


# ----------------------------------------------------------------------------------------------
# download: the one place the kit goes online, and only when asked


def download(name: str, root: str | Path | None = None) -> Path:
    """Download a real dataset with torchvision (needs the internet; sslkit never does this by itself).

    The files go to ``<root>/<name>/`` (root: ``data_root()``); torchvision checks the archive's
    md5 sum. Returns that folder. Without a connection: a ConnectionError saying what to do.
    """
    import urllib.error

    from torchvision import datasets
    if name not in _REAL:
        raise ValueError(f"nothing to download for {name!r}; downloadable: {', '.join(_REAL)} "
                         f"('shapes' is generated, 'folder' is your own images)")
    folder, _, how = _REAL[name]
    path = (Path(root).expanduser() if root else data_root()) / folder
    path.mkdir(parents=True, exist_ok=True)
    try:
        if name == "cifar10":
            datasets.CIFAR10(str(path), train=True, download=True)
            datasets.CIFAR10(str(path), train=False, download=True)
        elif name == "stl10":
            datasets.STL10(str(path), split="train+unlabeled", download=True)
        else:
            datasets.Imagenette(str(path), split="train", size="160px", download=True)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise ConnectionError(f"could not download {name!r} ({reason}). This needs the internet: connect and "
                              f"run `python -m sslkit.data download {name}` again, or on a connected machine "
                              f"run {how} and copy the files into {path} (data/README.md)") from None
    return path

