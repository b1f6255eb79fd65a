"""Image files on disk: list a folder, decode one file to a square RGB array.

Used by ``sslkit.folders`` (folders and Imagenette, read into memory) and ``sslkit.prepared`` (the same
files decoded once into a memory-mapped array). It imports only numpy and PIL, not torch, so the
worker processes that ``sslkit.prepared`` starts to decode in parallel start in a fraction of a second.

>>> import tempfile
>>> from PIL import Image
>>> tmp = tempfile.TemporaryDirectory()
>>> Image.new("RGBA", (40, 20), (255, 0, 0, 255)).save(f"{tmp.name}/red.png")
>>> a = read_rgb(Path(tmp.name) / "red.png", 16)
>>> a.shape, a.dtype, a[:, 0, 0].tolist()
((3, 16, 16), dtype('uint8'), [255, 0, 0])
>>> read_rgb(Path(tmp.name) / "missing.png", 16) is None
True
>>> tmp.cleanup()
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def to_rgb(im):
    """A PIL image in any mode -> RGB; transparent pixels become white, as a viewer shows them. Grey images of more
    than 8 bits (16-bit PNG and TIFF: modes I;16 and I; 32-bit float: F) are scaled to 8 bits (``to_8bit``)."""
    from PIL import Image
    if im.mode.startswith("I") or im.mode == "F":
        im = to_8bit(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
    return im.convert("RGB")


def to_8bit(im):
    """A grey image of 16-bit integers (0-65535), 32-bit integers or floats -> 8 bits (mode L). PIL's own
    ``convert`` clips them at 255 (a 16-bit image turns almost white, a float one in [0, 1] black). A 16-bit mode
    (I;16) is divided by 257; otherwise the values decide: floats up to 1 count as [0, 1], values up to 255 as 8-bit,
    up to 65535 as 16-bit, and anything else is scaled from its minimum to its maximum. NaN or infinite pixels
    take the image's minimum."""
    from PIL import Image
    a = np.asarray(im, dtype=np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    a = np.where(np.isfinite(a), a, lo)  # NaN or infinite pixels: the image's minimum
    if im.mode.startswith("I;16"):
        a = a / 257.0
    elif lo >= 0 and hi <= 1.0 and im.mode == "F":
        a = a * 255.0
    elif lo >= 0 and hi <= 255:
        pass
    elif lo >= 0 and hi <= 65535:
        a = a / 257.0
    else:
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def read_rgb(path: Path, size: int | None) -> np.ndarray | None:
    """One image file -> uint8 array (3, S, S) RGB, or None when it is not a readable image.

    With ``size``, the shorter side is scaled to ``size`` and the centre cropped to a square
    (the usual Resize + CenterCrop), so objects keep their aspect ratio.
    """
    from PIL import Image, ImageOps
    try:
        with Image.open(path) as im:
            if size is not None:
                im.draft(None, (size, size))  # JPEG: decode at 1/2, 1/4, 1/8 scale while still >= size
            im = to_rgb(im)
            if size is not None:
                im = ImageOps.fit(im, (size, size), Image.Resampling.BILINEAR)
            # (H, W, 3) -> (3, H, W), made contiguous by numpy (torch's uint8 permute-copy is slow)
            return np.ascontiguousarray(np.asarray(im).transpose(2, 0, 1))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # incl. UnidentifiedImageError
        return None


def list_folder(folder: Path):
    """(files, labels, class names) of an image folder; labels are -1 when it has no class subfolders.

    Class names are the sorted subfolder names (their index is the label); images in nested folders
    count for their class; hidden files and folders are not looked at.
    """
    def visible(p: Path) -> bool:  # skip .DS_Store, .ipynb_checkpoints/ and other hidden entries
        return not any(part.startswith(".") for part in p.relative_to(folder).parts)

    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and visible(d))
    loose = sorted(f for f in folder.iterdir() if f.is_file() and visible(f))
    if not class_dirs:
        return loose, [-1] * len(loose), []
    stray = [f.name for f in loose if f.suffix.lower() in IMAGE_EXTENSIONS]
    if stray:
        warnings.warn(f"{folder} has class subfolders, so the {len(stray)} image(s) directly in it are not used: "
                      f"{', '.join(stray[:10])}{' ...' if len(stray) > 10 else ''}; move them into a class "
                      f"subfolder", stacklevel=4)
    files, labels = [], []
    for k, d in enumerate(class_dirs):
        fs = sorted(f for f in d.rglob("*") if f.is_file() and visible(f))
        files += fs
        labels += [k] * len(fs)
    return files, labels, [d.name for d in class_dirs]


def skipped_warning(skipped: list[Path], where: Path) -> str:
    """The one warning that names the unreadable files of ``where`` that were skipped."""
    names = ", ".join(str(p.relative_to(where)) for p in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
    return (f"skipped {len(skipped)} file(s) in {where} that are not readable images: {names} "
            f"(delete or fix them to silence this warning)")
