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

Splits: ``unlabeled`` (training images, labels hidden), ``train`` (labeled), ``test``, and
``shifted`` (test images under a domain shift; only ``shapes`` has it).

sslkit never downloads by itself: a missing dataset raises ``DatasetNotFoundError`` saying
where the files are expected and how to get them (``python -m sslkit.data download NAME``).

>>> d = load_dataset("shapes", "train", n=50, image_size=32, seed=0)
>>> len(d), d.images.dtype, d.num_classes
(50, torch.uint8, 10)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

DATASETS = ("shapes", "cifar10", "stl10", "imagenette", "folder")
SPLITS = ("unlabeled", "train", "test", "shifted")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

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
        return ImageData(self.images[indices], self.labels[indices], self.classes, self.name, self.split,
                         masks, dict(self.info))

    def class_counts(self) -> dict[str, int]:
        """Images per class name (unlabeled images are not counted)."""
        counts = torch.bincount(self.labels[self.labels >= 0], minlength=self.num_classes)
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def per_class(self, n: int, seed: int = 0) -> "ImageData":
        """A labeled subset with exactly ``n`` images per class, drawn with ``seed``.

        Raises ValueError giving the counts per class when a class has fewer than ``n``.
        """
        counts = self.class_counts()
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
        return self.subset(torch.cat(picks).sort().values)


# ----------------------------------------------------------------------------------------------
# where files go


def data_root() -> Path:
    """The folder real datasets and caches live in: ``$SSLKIT_DATA``, else the kit's ``data/``."""
    if os.environ.get("SSLKIT_DATA"):
        return Path(os.environ["SSLKIT_DATA"])
    repo_data = Path(__file__).resolve().parents[1] / "data"
    return repo_data if repo_data.is_dir() else Path.cwd() / "data"


# name -> (folder under data/, what must exist inside it, how to get it)
_REAL = {
    "cifar10": ("cifar10", "cifar-10-batches-py/data_batch_1",
                "torchvision.datasets.CIFAR10(root, download=True), 170 MB"),
    "stl10": ("stl10", "stl10_binary/train_X.bin",
              "torchvision.datasets.STL10(root, split='train+unlabeled', download=True), 2.6 GB"),
    "imagenette": ("imagenette", "imagenette2-160/train",
                   "torchvision.datasets.Imagenette(root, size='160px', download=True), 94 MB"),
}


def _missing(name: str, root: Path, expected: str, how: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"dataset {name!r} is not on this machine: expected {root / expected}. sslkit never downloads "
        f"by itself. To get it (online): `python -m sslkit.data download {name}` (runs {how} into {root}), "
        f"or copy the files there; or set SSLKIT_DATA to the folder that holds '{root.name}/'. "
        f"The default dataset 'shapes' needs no download.")


def _check_split(name: str, split: str, allowed: tuple[str, ...]):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if split not in allowed:
        raise ValueError(f"dataset {name!r} has no {split!r} split; it has: {', '.join(allowed)}"
                         + (" (only 'shapes' has a shifted split)" if split == "shifted" else ""))


def _resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> (N, 3, size, size), anti-aliased, in chunks to bound memory."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    out = [F.interpolate(images[i:i + 1024].float(), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).round().clamp(0, 255).to(torch.uint8)
           for i in range(0, len(images), 1024)]
    return torch.cat(out)


def _take(images, labels, n, seed):
    if n is None or n >= len(images):
        return images, labels
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return images[idx], labels[idx]


def _load_cifar10(split, root, image_size, n, seed):
    from torchvision.datasets import CIFAR10
    _check_split("cifar10", split, ("unlabeled", "train", "test"))
    folder, expected, how = _REAL["cifar10"]
    path = root / folder
    if not (path / expected).exists():
        raise _missing("cifar10", path, expected, how)
    ds = CIFAR10(str(path), train=(split != "test"), download=False)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    labels = torch.tensor(ds.targets)
    images, labels = _take(images, labels, n, seed)
    return _resize(images, image_size), labels, ds.classes, path


def _load_stl10(split, root, image_size, n, seed):
    from torchvision.datasets import STL10
    _check_split("stl10", split, ("unlabeled", "train", "test"))
    folder, expected, how = _REAL["stl10"]
    path = root / folder
    needed = {"unlabeled": "unlabeled_X.bin", "train": "train_X.bin", "test": "test_X.bin"}[split]
    if not (path / "stl10_binary" / needed).exists():
        raise _missing("stl10", path, f"stl10_binary/{needed}", how)
    ds = STL10(str(path), split=split, download=False)
    images = torch.from_numpy(ds.data)  # (N, 3, 96, 96) uint8
    labels = torch.from_numpy(ds.labels).long() if ds.labels is not None else torch.full((len(images),), -1)
    images, labels = _take(images, labels, n, seed)
    return _resize(images, image_size), labels, ds.classes, path


def _read_rgb(path: Path, size: int | None):
    """One image file -> uint8 (3, S, S) RGB, or None when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "LA", "RGBA") else im.convert("RGB")
            if size is not None:
                im = im.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
            return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.height, im.width, 3).permute(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _read_files(files: list[Path], size: int | None, where: Path):
    """Read image files; unreadable ones are skipped with one warning that counts and names them."""
    images, kept, skipped = [], [], []
    for i, f in enumerate(files):
        img = _read_rgb(f, size)
        if img is None:
            skipped.append(f)
        else:
            images.append(img)
            kept.append(i)
    if skipped:
        names = ", ".join(str(p.relative_to(where)) for p in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        warnings.warn(f"skipped {len(skipped)} file(s) in {where} that are not readable images: {names}",
                      stacklevel=3)
    if images and size is None:
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) > 1:
            raise ValueError(f"the images in {where} have different sizes ({len(shapes)} of them); "
                             f"give image_size=... to resize them to one square size")
    return images, kept, skipped


def _load_imagenette(split, root, image_size, n, seed):
    _check_split("imagenette", split, ("unlabeled", "train", "test"))
    folder, expected, how = _REAL["imagenette"]
    path = root / folder
    if not (path / expected).exists():
        raise _missing("imagenette", path, expected, how)
    images, labels, classes, _ = _load_folder(split="train" if split == "unlabeled" else split,
                                              folder=path / "imagenette2-160" / ("val" if split == "test" else "train"),
                                              image_size=image_size or 64, n=n, seed=seed, test_fraction=0.0)
    names = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
             "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
             "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
             "n03888605": "parachute"}
    return images, labels, [names.get(c, c) for c in classes], path


def _load_folder(split, folder, image_size, n, seed, test_fraction=0.2):
    """An image folder: ``folder/<class>/*.jpg`` (labeled) or ``folder/*.jpg`` (unlabeled only).

    With class subfolders, ``train`` and ``test`` are a fixed split (``test_fraction`` of each
    class, drawn with seed 0 so it never changes) and ``unlabeled`` is every image.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetNotFoundError(f"image folder {folder} does not exist; give the path of a folder with "
                                   f"class subfolders (folder/cat/1.jpg, folder/dog/2.jpg, ...) or with images")
    _check_split("folder", split, ("unlabeled", "train", "test"))
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, file_labels = [], []
    if class_dirs:
        for k, d in enumerate(class_dirs):
            fs = sorted(f for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))
            files += fs
            file_labels += [k] * len(fs)
        classes = [d.name for d in class_dirs]
    else:
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        file_labels = [-1] * len(files)
        classes = []
        if split != "unlabeled":
            raise ValueError(f"{folder} has no class subfolders, so it has only an 'unlabeled' split; for "
                             f"'{split}' put the images in one subfolder per class (folder/cat/1.jpg, ...)")
    if not files:
        raise ValueError(f"image folder {folder} holds no files; put images in it (or in one subfolder per class)")
    labels = torch.tensor(file_labels)
    if class_dirs and split != "unlabeled" and test_fraction > 0:
        g = torch.Generator().manual_seed(0)  # the train/test split of a folder never changes
        is_test = torch.zeros(len(files), dtype=torch.bool)
        for k in range(len(classes)):
            idx = (labels == k).nonzero().squeeze(1)
            n_test = int(round(len(idx) * test_fraction))
            is_test[idx[torch.randperm(len(idx), generator=g)[:n_test]]] = True
        keep = is_test if split == "test" else ~is_test
        files = [f for f, t in zip(files, keep) if t]
        labels = labels[keep]
    if n is not None and n < len(files):
        idx = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        files, labels = [files[i] for i in idx], labels[idx]
    images, kept, skipped = _read_files(files, image_size, folder)
    if not images:
        raise ValueError(f"image folder {folder} holds no readable images ({len(skipped)} unreadable files)")
    labels = labels[torch.tensor(kept)]
    if split == "unlabeled":
        labels = torch.full_like(labels, -1)
    info = {"source": str(folder), "skipped": [str(p) for p in skipped]}
    return torch.stack(images), labels, classes, info


def _check_class_balance(data: ImageData):
    counts = {c: k for c, k in data.class_counts().items()}
    if data.split == "unlabeled" or not counts:
        return
    if len(counts) == 1:
        raise ValueError(f"{data.name} has a single class {list(counts)}: a classifier needs at least two; "
                         f"add a subfolder per class")
    lo, hi = min(counts.values()), max(counts.values())
    if lo == 0 or hi > 10 * lo:
        warnings.warn(f"classes of {data.name} have very different sizes: {counts}; accuracy will be dominated "
                      f"by the large classes (balance them, or compare per-class recall)", stacklevel=3)


def load_dataset(name: str = "shapes", split: str = "train", n: int | None = None, image_size: int | None = 32,
                 seed: int = 0, root: str | Path | None = None, cache: bool = False) -> ImageData:
    """Load one split of a dataset into memory.

    Args:
        name: one of ``DATASETS``, or the path of an image folder.
        split: "unlabeled", "train", "test" or "shifted" (shapes only).
        n: number of images (None: all; for ``shapes``, required). A random subset for real data.
        image_size: resize to this square size (None: keep, when all images share one size).
        seed: generation seed for ``shapes``; subset seed for real datasets.
        root: for ``folder``, the image folder; otherwise the data folder (default ``data_root()``).
        cache: for ``shapes``, keep the generated split under ``data/cache``.
    """
    if name not in DATASETS:
        if Path(str(name)).expanduser().is_dir():
            name, root = "folder", name
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
    if name == "folder":
        if root is None:
            raise ValueError("dataset 'folder' needs the folder: load_dataset('folder', root='path/to/images')")
        images, labels, classes, info = _load_folder(split, root, image_size, n, seed)
        data = ImageData(images, labels, classes, f"folder:{Path(root).name}", split, info=info)
        _check_class_balance(data)
        return data
    base = Path(root) if root is not None else data_root()
    loader = {"cifar10": _load_cifar10, "stl10": _load_stl10, "imagenette": _load_imagenette}[name]
    images, labels, classes, path = loader(split, base, image_size, n, seed)
    if split == "unlabeled":
        labels = torch.full_like(labels, -1)
    return ImageData(images, labels, classes, name, split, info={"source": str(path)})


def download(name: str, root: str | Path | None = None):
    """Download a real dataset with torchvision (needs the internet; sslkit never does this by itself)."""
    from torchvision import datasets
    if name not in _REAL:
        raise ValueError(f"nothing to download for {name!r}; downloadable: {', '.join(_REAL)}")
    path = (Path(root) if root else data_root()) / _REAL[name][0]
    path.mkdir(parents=True, exist_ok=True)
    if name == "cifar10":
        datasets.CIFAR10(str(path), train=True, download=True)
        datasets.CIFAR10(str(path), train=False, download=True)
    elif name == "stl10":
        datasets.STL10(str(path), split="train+unlabeled", download=True)
    else:
        datasets.Imagenette(str(path), split="train", size="160px", download=True)
    print(f"{name} is in {path}")


if __name__ == "__main__":  # python -m sslkit.data download cifar10
    import sys
    if len(sys.argv) != 3 or sys.argv[1] != "download":
        sys.exit(f"usage: python -m sslkit.data download {{{','.join(_REAL)}}}")
    download(sys.argv[2])
