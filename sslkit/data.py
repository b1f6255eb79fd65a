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

>>> d = load_dataset("shapes", "train", n=50, image_size=32, seed=0)
>>> len(d), d.images.dtype, d.num_classes
(50, torch.uint8, 10)
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .imagefiles import list_folder, read_rgb, skipped_warning

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
        return self.subset(torch.cat(picks).sort().values)


# ----------------------------------------------------------------------------------------------
# where files go


def data_root() -> Path:
    """The folder real datasets and caches live in: ``$SSLKIT_DATA``, else the kit's ``data/``."""
    if os.environ.get("SSLKIT_DATA"):
        return Path(os.environ["SSLKIT_DATA"]).expanduser()
    repo_data = Path(__file__).resolve().parents[1] / "data"
    return repo_data if repo_data.is_dir() else Path.cwd() / "data"


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


def _check_split(name: str, split: str, allowed: tuple[str, ...]):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if split not in allowed:
        hint = (" (only 'shapes' has a shifted split: load_dataset('shapes', 'shifted', n=...))"
                if split == "shifted" else "")
        raise ValueError(f"dataset {name!r} has no {split!r} split; choose one of: {', '.join(allowed)}{hint}")


def _resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> (N, 3, size, size), anti-aliased, in chunks to bound memory."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    out = [F.interpolate(images[i:i + 1024].float(), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).round().clamp(0, 255).to(torch.uint8)
           for i in range(0, len(images), 1024)]
    return torch.cat(out)


def _pick(total: int, n: int | None, seed: int) -> torch.Tensor:
    """Indices of a random subset of ``n`` out of ``total`` (all when n is None), in their original order."""
    if n is None or n >= total:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


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
# image files: Imagenette and any folder of images


def _read_files(files: list[Path], labels: torch.Tensor, n: int | None, seed: int, size: int | None,
                where: Path):
    """Read ``n`` images (None: all) picked at random with ``seed`` from ``files``.

    Files that are not readable images are skipped, with one warning that counts and names them;
    reading goes on through the random order until ``n`` images are read, so a subset has ``n``
    images whenever the folder has them. Returns (images (N, 3, S, S) uint8, labels, skipped files).
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
        raise ValueError(f"{where} holds no readable images ({len(skipped)} unreadable file(s)); put image "
                         f"files (jpg, png, ...) in it")
    kept = sorted(read)
    images = [read[i] for i in kept]
    if size is None and len({tuple(im.shape) for im in images}) > 1:
        sizes = sorted({tuple(im.shape[1:]) for im in images})
        raise ValueError(f"the images in {where} have {len(sizes)} different sizes (e.g. {sizes[:3]}); "
                         f"give image_size=... to scale and centre-crop them to one square size")
    # np.stack, not torch.stack: torch's runs threaded and crawls on a busy CPU
    return torch.from_numpy(np.stack(images)), labels[torch.tensor(kept)], skipped


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
    if classes and test_fraction > 0:
        is_test = folder_test_mask(labels, len(classes), test_fraction)
        keep = is_test if split == "test" else ~is_test
        files, labels = [f for f, t in zip(files, keep.tolist()) if t], labels[keep]
        if not files:
            raise ValueError(f"the {split!r} split of {folder} is empty: its classes are too small for a "
                             f"{test_fraction:.0%} test split; add images to each class subfolder")
    images, labels, skipped = _read_files(files, labels, n, seed, image_size, folder)
    info = {"source": str(folder), "skipped": [str(p) for p in skipped]}
    return images, labels, classes, info


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
        warnings.warn(f"{data.name} has no images of {empty} in its {data.split!r} split (counts: {counts}); "
                      f"add images to those class subfolders or remove them", stacklevel=3)
        return
    lo, hi = min(counts.values()), max(counts.values())
    if hi > 10 * lo:
        warnings.warn(f"classes of {data.name} ({data.split!r} split) have very different sizes: {counts}; "
                      f"accuracy will be dominated by the large classes (balance them, or compare "
                      f"per-class recall)", stacklevel=3)


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
        if root is None:
            raise ValueError("dataset 'folder' needs the folder: load_dataset('folder', root='path/to/images')")
        images, labels, classes, info = _load_folder(split, root, image_size, n, seed)
        if split == "unlabeled":
            labels = torch.full_like(labels, -1)
        data = ImageData(images, labels, classes, f"folder:{Path(root).expanduser().resolve().name}", split,
                         info=info)
        _check_class_balance(data)
        return data
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


def _main(argv: list[str]) -> int:
    """``python -m sslkit.data download NAME`` and ``python -m sslkit.data prepare SOURCE --size S``."""
    if argv[:1] == ["prepare"]:
        from .prepared import main
        return main(argv[1:])
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
