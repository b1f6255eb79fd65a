"""Datasets behind one interface: the offline default (``shapes``) and real ones.

``load_dataset(name, split, ...)`` returns an ``ImageData``: the whole split in memory as a
uint8 tensor (N, 3, S, S) with its labels (-1 where there are none), object masks where the
dataset has them, and the class names. In-memory tensors are what the fast batched
augmentation path trains on; ``ImageData`` is also a torch ``Dataset`` for the PIL path
(set ``.transform`` to a PIL transform such as lightly's ``SimCLRTransform``).

Datasets the kit knows (``DATASETS``; ``data/README.md`` says where their files go):

- ``shapes``: generated from a seed (``sslkit.shapes``), no files needed;
- ``cifar10``, ``stl10``, ``imagenette``: torchvision's loaders on files under ``data/``;
- ``folder``: any folder of images, with class subfolders (labeled) or flat (unlabeled).

Splits: ``unlabeled`` (training images, labels hidden: for STL-10 its own 100,000 unlabeled
images, for a flat folder all of its images), ``train`` (labeled), ``test``, and ``shifted``
(test images under a domain shift; only ``shapes`` has it).

sslkit never downloads by itself: a missing dataset raises ``DatasetNotFoundError`` saying
where the files are expected and how to get them (``python -m sslkit.data download NAME``).
The readers live apart: ``sslkit.datasets`` (CIFAR-10, STL-10, Imagenette, ``download``) and
``sslkit.folders`` (a folder of your own images); ``sslkit.prepared`` opens prepared ones.

>>> d = load_dataset("shapes", "train", n=50, image_size=32, seed=0)
>>> len(d), d.images.dtype, d.num_classes
(50, torch.uint8, 10)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

DATASETS = ("shapes", "cifar10", "stl10", "imagenette", "folder")
SPLITS = ("unlabeled", "train", "test", "shifted")

# uint8 images -> floats around 0: (x / 255 - MEAN) / STD, the same everywhere in the kit
MEAN, STD = 0.5, 0.25


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (..., 3, H, W) in [0, 255] -> normalised float32 images, centred at 0.

    >>> to_float(torch.tensor([0, 128, 255], dtype=torch.uint8))
    tensor([-2.0000,  0.0078,  2.0000])
    """
    return (images.float() / 255 - MEAN) / STD


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """The inverse of ``to_float`` (for plotting): float images -> uint8 in [0, 255]."""
    return ((images * STD + MEAN).clamp(0, 1) * 255).round().to(torch.uint8)


class DatasetNotFoundError(FileNotFoundError):
    """A real dataset's files are not on disk (sslkit never downloads by itself)."""


class ImageData(torch.utils.data.Dataset):
    """One split of a dataset, held in memory.

    Attributes:
        images: (N, 3, S, S) uint8.
        labels: (N,) int64 class indices, -1 for unlabeled images.
        masks: (N, S, S) bool object masks, or None when the dataset has none.
        classes: class names; ``labels`` index into it.
        name, split: where the data came from.
        transform: optional PIL transform applied by ``__getitem__`` (None: uint8 tensors).
    """

    def __init__(self, images, labels, classes, name, split, masks=None, info=None):
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if masks is not None and masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"masks {tuple(masks.shape[-2:])} and images {tuple(images.shape[-2:])} differ in size")
        self.images, self.labels, self.masks = images, labels.long(), masks
        self.classes, self.name, self.split = list(classes), name, split
        self.info = info or {}  # what loading found (counts, skipped files, source path)
        self.transform = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def memory_mapped(self) -> bool:
        """True when ``images`` is a memory map of a prepared dataset (``sslkit.prepared``), not held in memory."""
        return bool(self.info.get("memory_mapped"))

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        if self.transform is not None:
            from torchvision.transforms.v2.functional import to_pil_image
            image = self.transform(to_pil_image(image))
        return image, int(self.labels[i])

    def __repr__(self):
        return (f"ImageData({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image_size={self.image_size}, classes={self.num_classes})")

    def subset(self, indices) -> "ImageData":
        """The images at ``indices`` (a tensor or list), as a new ImageData."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        masks = self.masks[indices] if self.masks is not None else None
        info = {**self.info, "memory_mapped": False} if self.memory_mapped else dict(self.info)  # read into memory
        return ImageData(self.images[indices], self.labels[indices], self.classes, self.name, self.split,
                         masks, info)

    def class_counts(self) -> dict[str, int]:
        """Images per class name (unlabeled images are not counted)."""
        counts = torch.bincount(self.labels[self.labels >= 0], minlength=self.num_classes)
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def per_class(self, n: int, seed: int = 0) -> "ImageData":
        """A labeled subset with exactly ``n`` images per class, drawn with ``seed``.

        Raises ValueError giving the counts per class when a class has fewer than ``n``.
        """
        return self.subset(self.per_class_indices(n, seed))

    def per_class_indices(self, n: int, seed: int = 0) -> torch.Tensor:
        """The sorted indices of the images ``per_class(n, seed)`` takes (to leave them out of a pool)."""
        counts = self.class_counts()
        if n < 1:
            raise ValueError(f"per_class(n={n}): ask for at least one image per class")
        if not any(counts.values()):
            raise ValueError(f"the {self.split!r} split of {self.name!r} has no labeled images; per_class needs "
                             f"labels: use the 'train' split (for a folder: one subfolder per class)")
        short = {c: k for c, k in counts.items() if k < n}
        if short:
            raise ValueError(f"asked for {n} labeled images per class but the {self.split!r} split of "
                             f"{self.name!r} has fewer for: {short} (all counts: {counts}); ask for at most "
                             f"{min(counts.values())} per class or use a larger split")
        g = torch.Generator().manual_seed(seed)
        picks = []
        for k in range(self.num_classes):
            idx = (self.labels == k).nonzero().squeeze(1)
            picks.append(idx[torch.randperm(len(idx), generator=g)[:n]])
        return torch.cat(picks).sort().values


# ----------------------------------------------------------------------------------------------
# where files go, and what every loader shares (sslkit.datasets, sslkit.folders, sslkit.prepared)


def data_root() -> Path:
    """The folder real datasets and caches live in: ``$SSLKIT_DATA``, else the kit's ``data/``."""
    if os.environ.get("SSLKIT_DATA"):
        return Path(os.environ["SSLKIT_DATA"]).expanduser()
    repo_data = Path(__file__).resolve().parents[1] / "data"
    return repo_data if repo_data.is_dir() else Path.cwd() / "data"


def _check_split(name: str, split: str, allowed: tuple[str, ...]):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if split not in allowed:
        hint = (" (only 'shapes' has a shifted split: load_dataset('shapes', 'shifted', n=...))"
                if split == "shifted" else "")
        raise ValueError(f"dataset {name!r} has no {split!r} split; choose one of: {', '.join(allowed)}{hint}")


def _pick(total: int, n: int | None, seed: int) -> torch.Tensor:
    """Indices of a random subset of ``n`` out of ``total`` (all when n is None), in their original order."""
    if n is None or n >= total:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def load_dataset(name: str = "shapes", split: str = "train", n: int | None = None, image_size: int | None = 32,
                 seed: int = 0, root: str | Path | None = None, cache: bool = False) -> ImageData:
    """Load one split of a dataset into memory.

    Args:
        name: one of ``DATASETS``, or the path of an image folder.
        split: "unlabeled", "train", "test" or "shifted" (shapes only).
        n: number of images (None: all; for ``shapes``, required). A random subset for real data,
            the same for the same ``seed``.
        image_size: resize to this square size (None: keep; CIFAR-10 is 32, STL-10 96, Imagenette
            is centre-cropped to 160; a folder needs one when its images differ in size).
        seed: generation seed for ``shapes``; subset seed for real datasets.
        root: for ``folder``, the image folder; otherwise the data folder (default ``data_root()``).
        cache: for ``shapes``, keep the generated split under ``data/cache``.

    Returns:
        ImageData: images (N, 3, S, S) uint8, labels (N,) (-1 in the unlabeled split), classes.

    A folder with one subfolder per class is a labeled dataset (its train/test split is fixed):

    >>> import tempfile
    >>> from PIL import Image
    >>> tmp = tempfile.TemporaryDirectory()
    >>> for name, colour in [("blue", (0, 0, 255)), ("red", (255, 0, 0))]:
    ...     (Path(tmp.name) / name).mkdir()
    ...     for i in range(5):
    ...         Image.new("RGB", (48, 32), colour).save(Path(tmp.name) / name / f"{i}.png")
    >>> d = load_dataset(tmp.name, "train", image_size=16)
    >>> tuple(d.images.shape), d.classes, d.labels.tolist()
    ((8, 3, 16, 16), ['blue', 'red'], [0, 0, 0, 0, 1, 1, 1, 1])
    >>> d.images[4, :, 0, 0].tolist()  # a red image: RGB
    [255, 0, 0]
    >>> tmp.cleanup()
    """
    if name not in DATASETS:
        from .prepared import looks_prepared, open_prepared
        if looks_prepared(str(name)):  # python -m sslkit.data prepare made it: a memory map, nothing read yet
            return open_prepared(name, split, n=n, seed=seed, image_size=image_size)
        if Path(str(name)).expanduser().is_dir():
            name, root = "folder", name
        elif os.sep in str(name) or "/" in str(name) or str(name).startswith((".", "~")):
            raise DatasetNotFoundError(f"image folder {name} does not exist; check the path (relative paths "
                                       f"start from {Path.cwd()}), or choose one of: {', '.join(DATASETS)}")
        else:
            raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}, "
                             f"or give the path of an image folder")
    if name == "shapes":
        from .shapes import CLASSES, make_shapes
        if n is None:
            raise ValueError("the shapes dataset is generated: say how many images with n=...")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
        s = make_shapes(split, n, image_size or 32, seed, cache_dir=(data_root() / "cache") if cache else None)
        return ImageData(s.images, s.labels, CLASSES, "shapes", split, s.masks, {"seed": seed})
    if n is not None and n < 1:
        raise ValueError(f"n={n}: ask for at least one image (or n=None for the whole split)")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size={image_size}: give a size in pixels (e.g. 32), or None to keep the files' size")
    if name == "folder":
        from .folders import _check_class_balance, _load_folder
        if root is None:
            raise ValueError("dataset 'folder' needs the folder: give its path as the dataset (DATASET = "
                             "'path/to/images' in a notebook, --dataset path/to/images in the shell), or "
                             "load_dataset('folder', root='path/to/images')")
        images, labels, classes, info = _load_folder(split, root, image_size, n, seed)
        if split == "unlabeled":
            labels = torch.full_like(labels, -1)
        data = ImageData(images, labels, classes, f"folder:{Path(root).expanduser().resolve().name}", split,
                         info=info)
        _check_class_balance(data)
        return data
    from .datasets import _load_cifar10, _load_imagenette, _load_stl10
    base = Path(root).expanduser() if root is not None else data_root()
    loader = {"cifar10": _load_cifar10, "stl10": _load_stl10, "imagenette": _load_imagenette}[name]
    images, labels, classes, path = loader(split, base, image_size, n, seed)
    if split == "unlabeled":
        labels = torch.full_like(labels, -1)
    return ImageData(images, labels, classes, name, split, info={"source": str(path)})


def load_split(cfg, split: str, n: int | None = None) -> ImageData:
    """One split of the dataset a ``Config`` names, at its image size, seed and split sizes.

    ``n`` defaults to ``cfg.num_unlabeled`` for "unlabeled", ``cfg.num_train`` for "train" and
    ``cfg.num_test`` for "test" and "shifted". The notebooks load their data with this.

    >>> from sslkit.config import make_config
    >>> load_split(make_config("smoke"), "test")
    ImageData('shapes', split='test', n=200, image_size=32, classes=10)
    """
    sizes = {"unlabeled": cfg.num_unlabeled, "train": cfg.num_train, "test": cfg.num_test, "shifted": cfg.num_test}
    if split not in sizes:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(sizes)}")
    return load_dataset(cfg.dataset, split, n=n or sizes[split], image_size=cfg.image_size, seed=cfg.seed,
                        root=cfg.data_dir)


def _main(argv: list[str]) -> int:
    """``python -m sslkit.data download NAME`` and ``python -m sslkit.data prepare SOURCE --size S``."""
    if argv[:1] == ["prepare"]:
        from .prepared import main
        return main(argv[1:])
    from .datasets import _REAL, download
    if len(argv) != 2 or argv[0] != "download" or argv[1] not in _REAL:
        print(f"usage: python -m sslkit.data download {{{','.join(_REAL)}}}\n"
              f"       python -m sslkit.data prepare SOURCE --size S [--workers N] [--out DIR]", file=sys.stderr)
        return 2
    try:
        path = download(argv[1])
    except ConnectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{argv[1]} is in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
