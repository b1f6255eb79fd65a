"""Real datasets behind ``load_dataset``: small files in each real on-disk format, written here.

Each writer follows the format's own definition (CIFAR-10's python batches, STL-10's column-major
binaries, Imagenette's wnid folders), so the loaders are checked against the format, not against
themselves. Nothing is downloaded; the md5 sums of these files are not the official ones.
"""

import pickle
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from sslkit import data as sd
from sslkit.data import DatasetNotFoundError, ImageData, load_dataset
from sslkit.datasets import download

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
# three of Imagenette's wnids and their names (https://github.com/fastai/imagenette)
IMAGENETTE = {"n01440764": "tench", "n02102040": "English springer", "n03888257": "parachute"}


# ----------------------------------------------------------------------------------------------
# writers of the real formats


def write_cifar10(root, per_batch=4, n_test=10, seed=0):
    """cifar-10-batches-py/: pickled dicts, 'data' (N, 3072) uint8 = R, G, B planes of 32 x 32, row-major."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    train_labels = rng.permutation(np.arange(5 * per_batch) % 10).tolist()  # every class in the train set
    for name, k in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        images = rng.integers(0, 256, (k, 3, 32, 32), dtype=np.uint8)
        labels = rng.permutation(np.arange(k) % 10).tolist() if name == "test_batch" else \
            train_labels[(int(name[-1]) - 1) * k:int(name[-1]) * k]
        batch = {"batch_label": f"{name} of 6", "labels": labels, "data": images.reshape(k, 3072),
                 "filenames": [f"img_{name}_{i}.png" for i in range(k)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = (images, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f, protocol=2)
    train = [written[f"data_batch_{i}"] for i in range(1, 6)]
    return (np.concatenate([x for x, _ in train]), sum((y for _, y in train), []),
            written["test_batch"][0], written["test_batch"][1])


def write_stl10(root, n_train=20, n_test=10, n_unlabeled=7, seed=0):
    """stl10_binary/: uint8 images of 3 x 96 x 96, each channel stored column-major; labels 1..10."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10" / "stl10_binary"
    folder.mkdir(parents=True)
    out = {}
    for split, k in [("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)]:
        images = rng.integers(0, 256, (k, 3, 96, 96), dtype=np.uint8)  # (N, C, H, W)
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # column-major: W before H
        labels = rng.permutation(np.arange(k) % 10)
        if split != "unlabeled":
            (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        out[split] = (images, labels)
    (folder / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    return out


def save_image(path, colour, size=(24, 16), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def write_imagenette(root, per_class=(5, 4, 3), n_val=2):
    """imagenette2-160/{train,val}/<wnid>/*.JPEG; each class a colour, images wider than tall."""
    base = root / "imagenette" / "imagenette2-160"
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    for (wnid, _), colour, k in zip(IMAGENETTE.items(), colours, per_class):
        for i in range(k):
            save_image(base / "train" / wnid / f"{wnid}_{i}.JPEG", colour, size=(40, 30))
        for i in range(n_val):
            save_image(base / "val" / wnid / f"ILSVRC2012_val_{wnid}_{i}.JPEG", colour, size=(40, 30))
    return base


def write_class_folder(folder, counts, size=(20, 20)):
    """folder/<class>/<i>.png, class k filled with a grey level that encodes (k, i)."""
    for k, (name, count) in enumerate(counts.items()):
        for i in range(count):
            save_image(folder / name / f"{i}.png", (10 * k, i, 7), size=size)
    return folder


def only_warning(record, match):
    msgs = [str(w.message) for w in record]
    assert len(msgs) == 1, msgs
    assert match in msgs[0], msgs[0]
    return msgs[0]


# ----------------------------------------------------------------------------------------------
# CIFAR-10


def test_cifar10_reads_the_python_batches(tmp_path):
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path)
    d = load_dataset("cifar10", "train", image_size=32, root=tmp_path)
    assert isinstance(d, ImageData) and d.images.dtype == torch.uint8 and d.labels.dtype == torch.int64
    assert tuple(d.images.shape) == (20, 3, 32, 32)
    assert torch.equal(d.images, torch.from_numpy(train_x))  # R, G, B planes -> (3, 32, 32), batches in order
    assert d.labels.tolist() == train_y
    assert d.classes == CIFAR10_CLASSES and d.masks is None
    t = load_dataset("cifar10", "test", image_size=None, root=tmp_path)
    assert torch.equal(t.images, torch.from_numpy(test_x)) and t.labels.tolist() == test_y
    u = load_dataset("cifar10", "unlabeled", image_size=32, root=tmp_path)
    assert torch.equal(u.images, d.images) and (u.labels == -1).all()  # the train images, labels hidden


def test_cifar10_resize_matches_torchvision(tmp_path):
    from torchvision.transforms.v2.functional import resize
    train_x, *_ = write_cifar10(tmp_path)
    d = load_dataset("cifar10", "train", image_size=16, root=tmp_path)
    assert tuple(d.images.shape) == (20, 3, 16, 16) and d.images.dtype == torch.uint8
    ref = resize(torch.from_numpy(train_x), [16, 16], antialias=True)  # the reference: torchvision
    assert (d.images.int() - ref.int()).abs().max() <= 1


def test_cifar10_subset_is_deterministic(tmp_path):
    train_x, train_y, *_ = write_cifar10(tmp_path)
    a = load_dataset("cifar10", "train", n=7, seed=3, root=tmp_path)
    b = load_dataset("cifar10", "train", n=7, seed=3, root=tmp_path)
    c = load_dataset("cifar10", "train", n=7, seed=4, root=tmp_path)
    assert len(a) == 7 and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    rows = {x.tobytes(): y for x, y in zip(train_x, train_y)}
    for img, y in zip(a.images, a.labels):  # every picked image is one of the file's, with its own label
        assert rows[img.numpy().tobytes()] == int(y)
    assert len(load_dataset("cifar10", "train", n=1000, root=tmp_path)) == 20  # n above the size: all


def test_cifar10_from_sslkit_data_env(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    monkeypatch.setenv("SSLKIT_DATA", str(tmp_path))
    assert sd.data_root() == tmp_path
    assert len(load_dataset("cifar10", "test")) == 10


def test_cifar10_only_needs_the_files_of_its_split(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3").unlink()
    assert len(load_dataset("cifar10", "test", root=tmp_path)) == 10
    with pytest.raises(DatasetNotFoundError, match=r"cifar-10-batches-py/data_batch_3.*download cifar10"):
        load_dataset("cifar10", "train", root=tmp_path)


def test_cifar10_malformed_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"not in the format torchvision reads.*download cifar10"):
        load_dataset("cifar10", "train", root=tmp_path)


def test_cifar10_wrong_label_count(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(path.read_bytes())
    batch["labels"] = batch["labels"][:-1]
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=r"10 images but 9 labels"):
        load_dataset("cifar10", "test", root=tmp_path)


# ----------------------------------------------------------------------------------------------
# STL-10


def test_stl10_reads_the_binaries(tmp_path):
    written = write_stl10(tmp_path)
    for split in ("train", "test"):
        d = load_dataset("stl10", split, image_size=None, root=tmp_path)
        images, labels = written[split]
        assert tuple(d.images.shape) == (len(images), 3, 96, 96) and d.images.dtype == torch.uint8
        assert torch.equal(d.images, torch.from_numpy(images)) and d.images.is_contiguous()  # upright (3, H, W)
        assert d.labels.tolist() == labels.tolist()  # 1..10 in the file -> 0..9
        assert d.classes == STL10_CLASSES


def test_stl10_unlabeled_split_is_its_own_images(tmp_path):
    written = write_stl10(tmp_path)
    u = load_dataset("stl10", "unlabeled", image_size=None, root=tmp_path)
    assert torch.equal(u.images, torch.from_numpy(written["unlabeled"][0]))
    assert u.labels.tolist() == [-1] * 7 and u.classes == STL10_CLASSES
    with pytest.raises(ValueError, match=r"no labeled images.*'train' split"):
        u.per_class(1)


def test_stl10_resize_and_subset(tmp_path):
    write_stl10(tmp_path)
    d = load_dataset("stl10", "train", n=5, image_size=32, seed=1, root=tmp_path)
    assert tuple(d.images.shape) == (5, 3, 32, 32) and d.images.is_contiguous()
    e = load_dataset("stl10", "train", n=5, image_size=32, seed=1, root=tmp_path)
    assert torch.equal(d.images, e.images) and torch.equal(d.labels, e.labels)


def test_stl10_unlabeled_alone_is_enough_for_its_split(tmp_path):
    write_stl10(tmp_path)
    for f in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"):
        (tmp_path / "stl10" / "stl10_binary" / f).unlink()
    assert len(load_dataset("stl10", "unlabeled", root=tmp_path)) == 7
    with pytest.raises(DatasetNotFoundError, match=r"stl10_binary/train_X.bin \(and 1 more"):
        load_dataset("stl10", "train", root=tmp_path)


def test_stl10_truncated_file(tmp_path):
    write_stl10(tmp_path)
    path = tmp_path / "stl10" / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"stl10 files .* not in the format"):
        load_dataset("stl10", "test", root=tmp_path)


def test_stl10_label_out_of_range(tmp_path):
    write_stl10(tmp_path)
    path = tmp_path / "stl10" / "stl10_binary" / "test_y.bin"
    np.zeros(10, dtype=np.uint8).tofile(path)  # 0 is not a label (they run 1..10)
    with pytest.raises(ValueError, match=r"labels run from 255 to 255, outside 0..9"):
        load_dataset("stl10", "test", root=tmp_path)


# ----------------------------------------------------------------------------------------------
# Imagenette


def test_imagenette_reads_the_folders(tmp_path):
    write_imagenette(tmp_path)
    d = load_dataset("imagenette", "train", image_size=16, root=tmp_path)
    assert tuple(d.images.shape) == (12, 3, 16, 16) and d.images.dtype == torch.uint8
    assert d.classes == list(IMAGENETTE.values())  # wnids -> torchvision's names, in wnid order
    assert d.labels.tolist() == [0] * 5 + [1] * 4 + [2] * 3
    red = d.images[0].float().mean(dim=(1, 2))  # JPEG: colours come back close, not exact
    assert red[0] > 150 and red[1] < 80 and red[2] < 80
    t = load_dataset("imagenette", "test", image_size=16, root=tmp_path)  # Imagenette's val folder
    assert len(t) == 6 and t.labels.tolist() == [0, 0, 1, 1, 2, 2]
    u = load_dataset("imagenette", "unlabeled", image_size=16, root=tmp_path)
    assert len(u) == 12 and (u.labels == -1).all()


def test_imagenette_default_size_is_a_160_crop(tmp_path):
    base = write_imagenette(tmp_path, per_class=(1, 1, 1), n_val=1)
    save_image(base / "train" / "n01440764" / "big.JPEG", (0, 0, 0), size=(240, 180))
    d = load_dataset("imagenette", "train", image_size=None, root=tmp_path)
    assert tuple(d.images.shape) == (4, 3, 160, 160)


def test_imagenette_skips_a_corrupt_jpeg(tmp_path):
    base = write_imagenette(tmp_path)
    (base / "train" / "n02102040" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        d = load_dataset("imagenette", "train", image_size=16, root=tmp_path)
    only_warning(record, "skipped 1 file(s)")
    assert len(d) == 12


def test_imagenette_unknown_class_folder(tmp_path):
    base = write_imagenette(tmp_path)
    save_image(base / "train" / "n99999999" / "x.JPEG", (0, 0, 0))
    with pytest.raises(ValueError, match=r"n99999999.*not one of Imagenette's ten.*load_dataset\('folder'"):
        load_dataset("imagenette", "train", root=tmp_path)


# ----------------------------------------------------------------------------------------------
# missing datasets and bad splits


@pytest.mark.parametrize("name, expected", [
    ("cifar10", "cifar10/cifar-10-batches-py/data_batch_1"),
    ("stl10", "stl10/stl10_binary/train_X.bin"),
    ("imagenette", "imagenette/imagenette2-160/train"),
])
def test_missing_dataset_is_one_clear_error(tmp_path, name, expected):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, "train", root=tmp_path)
    msg = str(info.value)
    assert f"dataset {name!r} is not on this machine" in msg
    assert str(tmp_path / expected) in msg
    assert f"python -m sslkit.data download {name}" in msg and "SSLKIT_DATA" in msg
    assert info.value.__cause__ is None and info.value.__context__ is None  # no stack trace underneath


@pytest.mark.parametrize("name", ["cifar10", "stl10", "imagenette"])
def test_shifted_split_of_a_real_dataset(tmp_path, name):
    with pytest.raises(ValueError, match=r"no 'shifted' split.*only 'shapes' has a shifted split"):
        load_dataset(name, "shifted", root=tmp_path)


def test_bad_arguments(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(ValueError, match=r"unknown split 'val'; choose one of"):
        load_dataset("cifar10", "val", root=tmp_path)
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar100'; choose one of"):
        load_dataset("cifar100", "train")
    with pytest.raises(DatasetNotFoundError, match=r"image folder .*nowhere does not exist; check the path"):
        load_dataset(str(tmp_path / "nowhere"), "unlabeled")
    with pytest.raises(ValueError, match=r"n=0: ask for at least one image"):
        load_dataset("cifar10", "train", n=0, root=tmp_path)
    with pytest.raises(ValueError, match=r"image_size=0: give a size in pixels"):
        load_dataset("cifar10", "train", image_size=0, root=tmp_path)
    with pytest.raises(ValueError, match=r"needs the folder: give its path as the dataset .*--dataset path/to/images"):
        load_dataset("folder", "unlabeled")


# ----------------------------------------------------------------------------------------------
# image folders


def test_class_folder_splits(tmp_path):
    folder = write_class_folder(tmp_path / "pets", {"cat": 10, "dog": 5})
    train = load_dataset(str(folder), "train", image_size=None)
    test = load_dataset("folder", "test", image_size=None, root=folder)
    assert train.name == "folder:pets" and train.classes == ["cat", "dog"]
    assert train.class_counts() == {"cat": 8, "dog": 4} and test.class_counts() == {"cat": 2, "dog": 1}
    key = lambda d: {(int(x[0, 0, 0]), int(x[1, 0, 0])) for x in d.images}  # (10 * class, index) of each
    assert len(key(train) | key(test)) == 15 and not key(train) & key(test)  # disjoint, together all
    assert all(int(x[0, 0, 0]) == 10 * int(y) for x, y in zip(train.images, train.labels))  # labels match
    unlabeled = load_dataset(str(folder), "unlabeled", image_size=None)
    assert key(unlabeled) == key(train) and (unlabeled.labels == -1).all()  # never a test image
    again = load_dataset(str(folder), "train", image_size=None, seed=5)
    assert torch.equal(again.images, train.images)  # the split does not depend on the seed


def test_folder_subset_is_deterministic_and_skips_unreadable_files(tmp_path):
    folder = write_class_folder(tmp_path / "f", {"a": 12, "b": 12})
    for i in range(4):
        (folder / "a" / f"notes{i}.txt").write_text("not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the skipped files (tested below)
        a, b, c = (load_dataset(str(folder), "unlabeled", n=10, seed=s, image_size=8) for s in (0, 0, 1))
    assert len(a) == 10 and torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    for i in range(5):  # mostly junk: reading goes on past unreadable files until n images are read
        save_image(tmp_path / "junk" / f"img{i}.png", (i, 0, 0))
    for i in range(20):
        (tmp_path / "junk" / f"z{i}.txt").write_text("x")
    with pytest.warns(UserWarning, match=r"skipped \d+ file"):
        d = load_dataset(str(tmp_path / "junk"), "unlabeled", n=5, seed=0, image_size=None)
    assert sorted(d.images[:, 0, 0, 0].tolist()) == [0, 1, 2, 3, 4]


def test_folder_resizes_by_centre_crop(tmp_path):
    folder = tmp_path / "wide" / "x"
    folder.mkdir(parents=True)
    im = Image.new("RGB", (40, 20), (255, 0, 0))  # red, green over the middle 28 columns
    im.paste((0, 255, 0), (6, 0, 34, 20))  # (the crop is the middle 20; the filter reaches 2 beyond)
    im.save(folder / "0.png")
    d = load_dataset(str(folder), "unlabeled", image_size=10)
    assert tuple(d.images.shape) == (1, 3, 10, 10)
    assert (d.images[0, 1] == 255).all() and (d.images[0, 0] == 0).all()  # all green: cropped, not squashed


def test_folder_converts_modes_to_rgb(tmp_path):
    folder = tmp_path / "modes"
    save_image(folder / "gray.png", 100, mode="L")
    save_image(folder / "rgba.png", (10, 20, 30, 255), mode="RGBA")
    clear = Image.new("RGBA", (24, 16), (10, 20, 30, 0))  # fully transparent: shows as white
    clear.save(folder / "rgba_clear.png")
    palette = Image.new("P", (24, 16), 1)
    palette.putpalette([0, 0, 0, 40, 50, 60] + [0] * 762)
    palette.save(folder / "palette.png")
    palette.save(folder / "palette.gif")
    d = load_dataset(str(folder), "unlabeled", image_size=None)
    assert d.images.shape == (5, 3, 16, 24) and d.classes == []
    colours = [d.images[i, :, 0, 0].tolist() for i in range(5)]  # sorted by name
    assert colours == [[100, 100, 100], [40, 50, 60], [40, 50, 60], [10, 20, 30], [255, 255, 255]]


def test_grey_images_of_more_than_8_bits_are_scaled_not_clipped(tmp_path):
    """A 16-bit PNG (mode I;16), a 32-bit integer TIFF (I) holding 16-bit values and a float TIFF (F) in [0, 1]: each
    a left-to-right ramp over its range, read as the same 8-bit ramp (PIL's convert clips them: white or black)."""
    import numpy as np

    folder = tmp_path / "deep"
    folder.mkdir()
    ramp = np.tile(np.linspace(0, 1, 24), (16, 1))
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(folder / "a_16bit.png")
    Image.fromarray((ramp * 65535).astype(np.int32)).save(folder / "b_int32.tif")
    Image.fromarray(ramp.astype(np.float32)).save(folder / "c_float.tif")
    assert [Image.open(folder / n).mode for n in ("a_16bit.png", "b_int32.tif", "c_float.tif")] == ["I;16", "I", "F"]
    d = load_dataset(str(folder), "unlabeled", image_size=None)
    want = torch.from_numpy(np.rint(ramp[0] * 255)).to(torch.uint8)
    for i in range(3):
        assert (d.images[i, :, 0] - want).abs().max() <= 1, d.images[i, 0, 0]  # the ramp, in every channel


def test_folder_unreadable_files_one_warning(tmp_path):
    folder = write_class_folder(tmp_path / "f", {"a": 3, "b": 3})
    (folder / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "b" / "labels.csv").write_text("x,y\n")
    (folder / "b" / ".DS_Store").write_bytes(b"\0\1")  # hidden: not even looked at
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        d = load_dataset(str(folder), "unlabeled", image_size=8)
    msg = only_warning(record, "skipped 2 file(s)")
    assert "a/broken.jpg" in msg and "b/labels.csv" in msg and ".DS_Store" not in msg
    assert len(d) == 4 and len(d.info["skipped"]) == 2  # the train part: 2 of each 3


def test_folder_with_nothing_readable(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.txt").write_text("text")
    with pytest.warns(UserWarning, match="skipped 1"), \
            pytest.raises(ValueError, match=r"no readable images.*put image"):
        load_dataset(str(tmp_path / "f"), "unlabeled")


def test_a_split_with_nothing_readable_counts_the_folders_unreadable_files(tmp_path):
    """The error counts the whole folder (6 files), not the 4 of the split asked for; a split whose readable files
    all fell in the other split says so, instead of calling the folder unreadable."""
    from sslkit.folders import folder_test_mask

    for name in ("a", "b"):
        for i in range(3):
            (tmp_path / "bad" / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / "bad" / name / f"{i}.png").write_bytes(b"nope")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning names the split's skipped files
        for split in ("train", "test", "unlabeled"):
            with pytest.raises(ValueError, match=r"bad holds no readable images \(6 unreadable file\(s\)\)"):
                load_dataset(str(tmp_path / "bad"), split, image_size=8)
    folder = write_class_folder(tmp_path / "f", {"a": 5, "b": 5})
    files = sorted(folder.rglob("*.png"))
    is_test = folder_test_mask(torch.tensor([0] * 5 + [1] * 5), 2).tolist()
    for f, t in zip(files, is_test):
        if t:
            f.write_bytes(b"nope")  # only the test split's files are unreadable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"'test' split of .*f holds no readable images \(2 unread.*other split"):
            load_dataset(str(folder), "test", image_size=8)
    assert len(load_dataset(str(folder), "train", image_size=8)) == 8


def test_folder_of_different_sizes_needs_image_size(tmp_path):
    save_image(tmp_path / "f" / "a.png", (0, 0, 0), size=(10, 10))
    save_image(tmp_path / "f" / "b.png", (0, 0, 0), size=(12, 10))
    with pytest.raises(ValueError, match=r"2 different sizes.*give image_size="):
        load_dataset(str(tmp_path / "f"), "unlabeled", image_size=None)
    assert load_dataset(str(tmp_path / "f"), "unlabeled", image_size=8).images.shape == (2, 3, 8, 8)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no files; put images in it"):
        load_dataset(str(tmp_path / "empty"), "unlabeled")


def test_flat_folder_has_only_unlabeled(tmp_path):
    for i in range(3):
        save_image(tmp_path / "flat" / f"{i}.jpg", (i, i, i))
    u = load_dataset(str(tmp_path / "flat"), "unlabeled", image_size=8)
    assert len(u) == 3 and u.labels.tolist() == [-1, -1, -1] and u.num_classes == 0
    for split in ("train", "test"):
        with pytest.raises(ValueError, match=rf"only an 'unlabeled' split; for '{split}' put the images in one "
                                             rf"subfolder per class"):
            load_dataset(str(tmp_path / "flat"), split)
    with pytest.raises(ValueError, match=r"no 'shifted' split"):
        load_dataset(str(tmp_path / "flat"), "shifted")
    with pytest.raises(ValueError, match=r"no labeled images"):
        u.per_class(1)


def test_folder_with_one_class(tmp_path):
    folder = write_class_folder(tmp_path / "f", {"only": 5})
    with pytest.raises(ValueError, match=r"single class \['only'\].*add a subfolder per class"):
        load_dataset(str(folder), "train")
    assert len(load_dataset(str(folder), "unlabeled")) == 4  # pretraining on one folder is fine


def test_folder_unbalanced_classes_warn_with_counts(tmp_path):
    folder = write_class_folder(tmp_path / "f", {"big": 60, "small": 5})
    with pytest.warns(UserWarning, match=r"very different sizes: big: 48, small: 4;"):
        d = load_dataset(str(folder), "train", image_size=8)
    assert d.class_counts() == {"big": 48, "small": 4}


def test_folder_with_an_empty_class_warns(tmp_path):
    folder = write_class_folder(tmp_path / "f", {"a": 5, "b": 5})
    (folder / "c").mkdir()
    with pytest.warns(UserWarning, match=r"no images of 1 of its 3 classes in its 'train' split \(c; counts: .*c: 0\).*"
                                         r"remove them"):
        d = load_dataset(str(folder), "train", image_size=8)
    assert d.classes == ["a", "b", "c"]


def test_a_folder_of_many_empty_subfolders_warns_in_one_short_line(tmp_path):
    """Pointing --dataset at a folder of folders (say, a home directory) names a few of them, not hundreds."""
    folder = write_class_folder(tmp_path / "f", {"a": 5, "b": 5})
    for k in range(300):
        (folder / f"empty{k:03d}").mkdir()
    with pytest.warns(UserWarning) as caught:
        load_dataset(str(folder), "train", image_size=8)
    message = str(caught[0].message)
    assert "no images of 300 of its 302 classes" in message and "... (300 in all)" in message
    assert len(message) < 600


def test_stray_images_next_to_class_folders_warn(tmp_path):
    folder = write_class_folder(tmp_path / "f", {"a": 5, "b": 5})
    save_image(folder / "loose.png", (0, 0, 0))
    with pytest.warns(UserWarning, match=r"1 image\(s\) directly in it are not used: loose.png; move them"):
        d = load_dataset(str(folder), "train", image_size=8)
    assert len(d) == 8


# ----------------------------------------------------------------------------------------------
# ImageData.per_class and download


def test_per_class(tmp_path):
    write_cifar10(tmp_path)  # 20 train images, 2 of each class
    d = load_dataset("cifar10", "train", root=tmp_path)
    p = d.per_class(2, seed=0)
    assert p.class_counts() == {c: 2 for c in CIFAR10_CLASSES}
    assert torch.equal(p.images, d.per_class(2, seed=0).images)
    one = d.per_class(1, seed=0)
    assert len(one) == 10 and sorted(one.labels.tolist()) == list(range(10))
    with pytest.raises(ValueError, match=r"asked for 3 labeled images per class.*'airplane': 2.*at most 2 per class"):
        d.per_class(3)
    with pytest.raises(ValueError, match=r"per_class\(n=0\): ask for at least one"):
        d.per_class(0)


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match=r"could not download 'cifar10'.*needs the internet.*copy the files"):
        download("cifar10", root=tmp_path)
    with pytest.raises(ValueError, match=r"nothing to download for 'shapes'; downloadable: cifar10"):
        download("shapes", root=tmp_path)
    assert sd._main(["download", "cifar100"]) == 2
    monkeypatch.setenv("SSLKIT_DATA", str(tmp_path))
    assert sd._main(["download", "stl10"]) == 1  # the message, not a traceback
