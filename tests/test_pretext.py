"""Pretext tasks: targets checked by undoing them, permutation sets, the accounting of accuracy."""

import itertools

import pytest
import torch
from torch import nn

import sslkit
from sslkit.pretext import (PRETEXT_TASKS, Jigsaw, PretextTask, Rotation, cut_tiles, edge_solver_accuracy,
                            hamming_permutations, join_tiles, make_pretext, pretext_accuracy, rotate, shuffle_tiles)
from sslkit.train import train


@pytest.fixture(scope="module")
def images():
    return sslkit.load_dataset("shapes", "test", n=64, seed=0).images


def test_rotation_targets_are_undone_by_rotating_back(images):
    k = torch.arange(len(images)) % 4
    turned = rotate(images, k)
    for i in range(len(images)):
        assert torch.equal(torch.rot90(turned[i], -int(k[i]), dims=(1, 2)), images[i])
    assert torch.equal(turned[k == 0], images[k == 0])
    assert not torch.equal(turned[k == 2], images[k == 2])
    task = Rotation(*sslkit.make_backbone("resnet_tiny"))
    assert torch.equal(task.make_inputs(images, k), sslkit.to_float(turned))


def brute_force_greedy(num_tiles, n):
    """Greedy max-min Hamming written out with Python lists (lexicographic ties)."""
    perms = list(itertools.permutations(range(num_tiles)))
    chosen = [perms[0]]
    while len(chosen) < n:
        best = max(perms, key=lambda p: min(sum(a != b for a, b in zip(p, c)) for c in chosen))
        chosen.append(best)
    return [list(p) for p in chosen]


def test_hamming_permutations_match_the_greedy_max_min_reference():
    assert hamming_permutations(4, 10).tolist() == brute_force_greedy(4, 10)
    assert hamming_permutations(5, 12).tolist() == brute_force_greedy(5, 12)


def test_hamming_permutations_are_distinct_far_apart_and_deterministic():
    p = hamming_permutations(9, 64)
    assert p.shape == (64, 9) and p.dtype == torch.long
    assert torch.equal(p[0], torch.arange(9))
    assert all(sorted(row) == list(range(9)) for row in p.tolist())
    d = (p[:, None] != p[None]).sum(2) + 9 * torch.eye(64, dtype=torch.long)
    assert d.min() >= 7  # far apart: any two differ in at least 7 of the 9 positions
    assert torch.equal(p, hamming_permutations(9, 64))
    with pytest.raises(ValueError, match="1 to 24"):
        hamming_permutations(4, 25)


def test_tiles_cut_join_and_shuffle_round_trip(images):
    tiles = cut_tiles(images, 3)
    assert tiles.shape == (64, 9, 3, 10, 10)
    assert torch.equal(join_tiles(tiles), images[:, :, 1:31, 1:31])  # the centre 30x30 crop
    assert torch.equal(tiles[:, 4], images[:, :, 11:21, 11:21])  # the centre tile
    perms = hamming_permutations(9, 64)[torch.arange(64)]
    shuffled = shuffle_tiles(tiles, perms)
    for i in range(3):
        for pos in range(9):
            assert torch.equal(shuffled[i, pos], tiles[i, perms[i, pos]])
    assert torch.equal(shuffle_tiles(shuffled, perms.argsort(1)), tiles)  # undo with the inverse


def test_jigsaw_inputs_are_the_shuffled_tiles_and_gap_blanks_the_borders(images):
    torch.manual_seed(0)
    task = Jigsaw(*sslkit.make_backbone("resnet_tiny", width=8), num_permutations=16)
    targets = torch.arange(len(images)) % 16
    x = task.make_inputs(images, targets)  # (B, 9, 3, 10, 10)
    expected = shuffle_tiles(cut_tiles(images, 3), task.permutations[targets])
    assert torch.equal(x, sslkit.to_float(expected))
    assert torch.equal(task.shuffled_images(images, targets), join_tiles(expected))
    gapped = Jigsaw(task.backbone, 64, num_permutations=16, gap=2).make_inputs(images, targets)
    assert (gapped[..., :2, :] == 0).all() and (gapped[..., :, -2:] == 0).all()
    assert torch.equal(gapped[..., 2:-2, 2:-2], x[..., 2:-2, 2:-2])
    assert task(x).shape == (64, 16)


@pytest.mark.parametrize("name", list(PRETEXT_TASKS))
def test_every_task_trains_through_the_shared_loop(name, images):
    torch.manual_seed(0)
    backbone, dim = sslkit.make_backbone("resnet_tiny", width=8)
    task = make_pretext(name, backbone, dim)
    cfg = sslkit.make_config("smoke", num_epochs=1, batch_size=32, time_budget_s=None, device="cpu")
    h = train(task, sslkit.load_dataset("shapes", "unlabeled", n=64, seed=0), cfg, progress=False)
    assert h.steps == 2 and all(torch.isfinite(torch.tensor(h.losses)))
    assert any(p.grad is not None for p in backbone.parameters())


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(ValueError, match="rotation, jigsaw"):
        make_pretext("colorization", *sslkit.make_backbone("resnet_tiny"))


class Oracle(PretextTask):
    """Writes the target into the input and reads it back (or always answers 0): known accuracies."""

    num_targets = 4

    def __init__(self, cheat):
        super().__init__()
        self.backbone, self.cheat = nn.Linear(1, 1), cheat

    def make_inputs(self, images, targets):
        return targets.float()

    def forward(self, x):
        logits = torch.zeros(len(x), 4)
        logits[torch.arange(len(x)), x.long() if self.cheat else 0] = 1
        return logits


def test_pretext_accuracy_counts_every_target_and_splits_by_class():
    data = sslkit.load_dataset("shapes", "test", n=30, seed=0)
    perfect = pretext_accuracy(Oracle(cheat=True), data)
    assert perfect["overall"] == 1.0 and set(perfect["per_class"]) == set(data.classes)
    constant = pretext_accuracy(Oracle(cheat=False), data)  # right for one of the four rotations
    assert constant["overall"] == pytest.approx(0.25)
    assert all(v == pytest.approx(0.25) for v in constant["per_class"].values())


def test_rotation_is_learned_when_images_have_an_up():
    """Images bright at the top: the rotation is visible, so a few steps learn it."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(255, 0, 16)[None, None, :, None].expand(1, 3, 16, 16)
    noise = torch.randint(0, 60, (256, 3, 16, 16), generator=g)
    data = sslkit.ImageData((ramp * 0.7 + noise).clamp(0, 255).to(torch.uint8), torch.zeros(256), ["up"], "ramp", "train")
    torch.manual_seed(0)
    task = Rotation(*sslkit.make_backbone("resnet_tiny", width=8))
    before = pretext_accuracy(task, data)["overall"]
    cfg = sslkit.make_config("smoke", num_epochs=8, batch_size=64, lr=1e-2, time_budget_s=None, device="cpu")
    train(task, data, cfg, progress=False)
    after = pretext_accuracy(task, data)["overall"]
    assert after > 0.9 and after > before + 0.3


def test_edge_continuity_solves_jigsaw_without_learning_unless_tiles_have_gaps(images):
    assert edge_solver_accuracy(images, grid=3, num_permutations=64) > 0.7
    assert edge_solver_accuracy(images, grid=3, num_permutations=64, gap=1) < 0.2  # chance is 1/64


def test_jigsaw_can_show_the_whole_puzzle_to_the_backbone(images):
    torch.manual_seed(0)
    task = Jigsaw(*sslkit.make_backbone("resnet_tiny", width=8), grid=2, num_permutations=24, per_tile=False)
    targets = torch.arange(len(images)) % 24
    x = task.make_inputs(images, targets)
    assert x.shape == (64, 3, 32, 32)
    assert torch.equal(x, sslkit.to_float(task.shuffled_images(images, targets)))
    assert task(x).shape == (64, 24)
    assert hamming_permutations(4, 24).unique(dim=0).shape == (24, 4)  # 2x2: every permutation


def test_all_rotations_scores_every_turn_of_every_image(images):
    """all_rotations=True: the loss is the cross-entropy over the four turns of each image, in one step."""
    torch.manual_seed(0)
    task = Rotation(*sslkit.make_backbone("resnet_tiny", width=8)).eval()
    x = images[:3]
    expected = torch.stack([
        torch.nn.functional.cross_entropy(task(task.make_inputs(x, torch.full((3,), k))), torch.full((3,), k))
        for k in range(4)]).mean()
    assert torch.allclose(task.training_step(x), expected, atol=1e-5)
    one = Rotation(*sslkit.make_backbone("resnet_tiny", width=8), all_rotations=False).eval()
    assert one.training_step(x).ndim == 0
