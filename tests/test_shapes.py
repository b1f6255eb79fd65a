import torch
import pytest

from sslkit.shapes import CLASSES, GENERATOR_VERSION, SPLITS, fingerprint, make_shapes


def test_sizes_types_and_balance():
    d = make_shapes("train", 200, image_size=48, seed=1)
    assert d.images.shape == (200, 3, 48, 48) and d.images.dtype == torch.uint8
    assert d.masks.shape == (200, 48, 48) and d.masks.dtype == torch.bool
    assert len(CLASSES) >= 10
    assert torch.bincount(d.labels, minlength=len(CLASSES)).tolist() == [20] * len(CLASSES)


def test_same_seed_same_bits_other_seed_other_images():
    a, b = make_shapes("test", 64, seed=3), make_shapes("test", 64, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
    assert fingerprint(a) == fingerprint(b)
    assert not torch.equal(a.images, make_shapes("test", 64, seed=4).images)


def test_splits_are_distinct_and_unlabeled_has_no_labels():
    imgs = {s: make_shapes(s, 32, seed=0) for s in SPLITS}
    for s in SPLITS:
        for t in SPLITS:
            if s < t:
                assert not torch.equal(imgs[s].images, imgs[t].images)
    assert (imgs["unlabeled"].labels == -1).all()
    assert (imgs["train"].labels >= 0).all()


def test_masks_cover_the_object_and_mark_its_colour():
    d = make_shapes("train", 300, seed=0)
    frac = d.masks.float().mean(dim=(1, 2))
    assert (frac > 0.03).all() and (frac < 0.6).all(), (frac.min(), frac.max())
    # inside the mask the image is (mostly) one colour: the object's, unlike the background
    img = d.images.float()
    inside_std = torch.stack([img[i][:, d.masks[i]].std(dim=1).mean() for i in range(50)])
    outside_std = torch.stack([img[i][:, ~d.masks[i]].std(dim=1).mean() for i in range(50)])
    assert inside_std.median() < outside_std.median()


def test_shifted_split_has_unseen_backgrounds():
    # stripes and checkers: strong high-frequency energy in the background, unlike the other splits
    def background_roughness(split):
        d = make_shapes(split, 200, seed=0)
        x = d.images.float()
        diff = (x[..., 1:] - x[..., :-1]).abs().mean(1)  # (N, H, W-1)
        bg = ~(d.masks[..., 1:] | d.masks[..., :-1])
        return (diff * bg).sum() / bg.sum()
    assert background_roughness("shifted") > 2 * background_roughness("test")


def test_bad_arguments_say_what_works(tmp_path):
    with pytest.raises(ValueError, match="unknown split 'valid'; choose one of: unlabeled, train, test, shifted"):
        make_shapes("valid", 10)
    with pytest.raises(ValueError, match="use 16 or more"):
        make_shapes("train", 10, image_size=8)


def test_cache_is_keyed_by_version_and_seed(tmp_path):
    a = make_shapes("test", 30, seed=2, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and f"v{GENERATOR_VERSION}" in files[0].name and "seed2" in files[0].name
    b = make_shapes("test", 30, seed=2, cache_dir=tmp_path)
    assert torch.equal(a.images, b.images)
