"""Pretext tasks: make labels from the images themselves, then train a classifier on them.

The oldest idea in self-supervised learning. The network never sees a class label; it learns
to undo a transformation we applied, and the features it needs for that are what we keep.

- ``Rotation`` (Gidaris et al. 2018, "Unsupervised representation learning by predicting image
  rotations"): each image is turned by 0, 90, 180 or 270 degrees; predict which.
- ``Jigsaw`` (Noroozi & Favaro 2016, "Unsupervised learning of visual representations by solving
  jigsaw puzzles"): cut the image into a grid of tiles, shuffle them by one of a fixed set of
  permutations chosen to be far apart (``hamming_permutations``), predict which permutation.
  As in the paper, every tile goes through the backbone on its own (shared weights) and a small
  head reads the tiles' features in their shuffled order.

Both are methods for ``sslkit.train.train``: ``training_step(images, labels)`` draws a random
target per image, builds the inputs and returns the cross-entropy; the class labels are unused.
``pretext_accuracy`` measures how well a task is solved, per class, which shows what a task
cannot tell apart (a circle looks the same at every rotation). ``edge_solver_accuracy`` solves
jigsaw puzzles with no learning at all, from edge continuity: the shortcut the task allows.

>>> import sslkit
>>> backbone, dim = sslkit.make_backbone("resnet_tiny")
>>> task = make_pretext("rotation", backbone, dim)
>>> images = sslkit.load_dataset("shapes", "train", n=8).images
>>> task.training_step(images, None).shape
torch.Size([])
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageData, to_float


class PretextTask(nn.Module):
    """A classification task whose targets come from the images: the shared part of every task.

    Subclasses set ``num_targets`` and fill in ``make_inputs(images, targets)``; ``forward``
    maps the inputs to (B, num_targets) logits.
    """

    num_targets: int

    def make_inputs(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, H, W) and targets (B,) -> the network's float inputs."""
        raise NotImplementedError

    def training_step(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        targets = torch.randint(self.num_targets, (len(images),), device=images.device)  # (B,)
        logits = self(self.make_inputs(images, targets))  # (B, num_targets)
        return F.cross_entropy(logits, targets)


# ----------------------------------------------------------------------------------------------
# rotation


def rotate(images: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Turn image i by k[i] * 90 degrees counter-clockwise. images (B, C, H, W) with H == W; k (B,).

    >>> x = torch.tensor([[[[1, 2], [3, 4]]]])
    >>> rotate(x, torch.tensor([1]))[0, 0].tolist()  # the top-right corner moves to the top-left
    [[2, 4], [1, 3]]
    """
    out = images.clone()
    for r in range(1, 4):
        m = k == r
        if m.any():
            out[m] = torch.rot90(images[m], r, dims=(2, 3))
    return out


class Rotation(PretextTask):
    """Predict the rotation (0, 90, 180, 270 degrees) applied to the image (Gidaris et al. 2018).

    A linear head on the backbone's features predicts the turn. Target k means "turned by
    k * 90 degrees counter-clockwise". With ``all_rotations=True`` (the paper's choice) every image
    of a batch appears in all four turns at once (the step sees 4B inputs), so the network must
    tell apart four versions of the *same* image and cannot lean on what the image shows; with
    ``False`` each image gets one turn drawn at random.
    """

    num_targets = 4

    def __init__(self, backbone: nn.Module, feature_dim: int | None = None, all_rotations: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim or backbone.feature_dim, self.num_targets)
        self.all_rotations = all_rotations

    def training_step(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        if not self.all_rotations:
            return super().training_step(images, labels)
        b = len(images)
        targets = torch.arange(4, device=images.device).repeat_interleave(b)  # (4B,): 0...0 1...1 2...2 3...3
        logits = self(self.make_inputs(images.repeat(4, 1, 1, 1), targets))  # (4B, 4)
        return F.cross_entropy(logits, targets)

    def make_inputs(self, images, targets):
        return to_float(rotate(images, targets))  # (B, 3, H, W)

    def forward(self, x):
        return self.head(self.backbone(x))  # (B, 4)


# ----------------------------------------------------------------------------------------------
# jigsaw


@functools.lru_cache(maxsize=8)
def _all_permutations(num_tiles: int) -> np.ndarray:
    flat = np.fromiter(itertools.chain.from_iterable(itertools.permutations(range(num_tiles))), dtype=np.int8)
    return flat.reshape(-1, num_tiles)  # (T!, T) in lexicographic order


def hamming_permutations(num_tiles: int, n: int) -> torch.Tensor:
    """``n`` permutations of ``num_tiles`` tiles, far apart in Hamming distance (Noroozi & Favaro 2016).

    Greedy max-min: start from the identity; repeatedly add the permutation whose smallest Hamming
    distance to those already chosen is largest (ties: the first in lexicographic order), so the
    set is the same on every machine. Returns (n, num_tiles) int64; row p lists, for each position,
    the original tile placed there.

    >>> hamming_permutations(3, 3).tolist()
    [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    """
    if num_tiles > 10:
        raise ValueError(f"num_tiles={num_tiles} is too many to enumerate; use a grid of at most 3x3")
    candidates = _all_permutations(num_tiles)
    if not 1 <= n <= len(candidates):
        raise ValueError(f"n={n}: {num_tiles} tiles have {len(candidates)} permutations; ask for 1 to {len(candidates)}")
    columns = np.ascontiguousarray(candidates.T)  # (T, T!): numpy, one thread, fast here

    def distance_to(j):  # (T!,) Hamming distance of every candidate to candidate j
        return (columns != candidates[j][:, None]).sum(0)

    chosen = [0]  # the identity is the lexicographically first permutation
    dmin = distance_to(0)  # (T!,) distance to the chosen set
    for _ in range(n - 1):
        j = int(dmin.argmax())  # the first of the farthest
        chosen.append(j)
        dmin = np.minimum(dmin, distance_to(j))
    return torch.from_numpy(candidates[chosen].astype(np.int64))


def cut_tiles(images: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, grid*grid, C, t, t) tiles in row-major order, t = H // grid (the centre crop)."""
    b, c, h, w = images.shape
    t = min(h, w) // grid
    top, left = (h - grid * t) // 2, (w - grid * t) // 2
    x = images[:, :, top:top + grid * t, left:left + grid * t]
    return x.reshape(b, c, grid, t, grid, t).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, t, t)


def join_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """The inverse of ``cut_tiles``: (B, g*g, C, t, t) -> (B, C, g*t, g*t)."""
    b, n, c, t, _ = tiles.shape
    g = int(round(n ** 0.5))
    return tiles.reshape(b, g, g, c, t, t).permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * t, g * t)


def shuffle_tiles(tiles: torch.Tensor, permutations: torch.Tensor) -> torch.Tensor:
    """Put original tile ``permutations[i, p]`` at position p of image i. tiles (B, T, ...), permutations (B, T)."""
    return tiles[torch.arange(len(tiles), device=tiles.device)[:, None], permutations]


class Jigsaw(PretextTask):
    """Predict which of ``num_permutations`` fixed shuffles was applied to a grid of tiles.

    As in Noroozi & Favaro (2016), each tile goes through the backbone on its own (a
    "context-free network": no tile sees its neighbours), and an MLP reads the concatenated
    tile features in shuffled order. ``gap`` blanks that many pixels at every tile's border to
    mid-grey, removing the edge-continuity shortcut (the paper's gaps between tiles).
    ``per_tile=False`` instead shows the backbone the whole shuffled image (B, 3, g*t, g*t), with a
    linear head: cheaper, and the edges between tiles are in plain sight.

    Args:
        backbone, feature_dim: the network shared by all tiles and its output size.
        grid: tiles per side (3: nine tiles of 10x10 px from a 32 px image).
        num_permutations: the number of classes (the paper: 1,000 of the 9! shuffles).
        gap: pixels blanked at each tile's border (0: none).
        per_tile: True: each tile through the backbone on its own (the paper); False: the whole puzzle.
        hidden: width of the per-tile head's hidden layer.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int | None = None, grid: int = 3,
                 num_permutations: int = 64, gap: int = 0, per_tile: bool = True, hidden: int = 256):
        super().__init__()
        self.backbone, self.grid, self.gap, self.per_tile = backbone, grid, gap, per_tile
        dim = feature_dim or backbone.feature_dim
        self.register_buffer("permutations", hamming_permutations(grid * grid, num_permutations), persistent=False)
        self.num_targets = num_permutations
        if per_tile:
            self.head = nn.Sequential(nn.Linear(grid * grid * dim, hidden), nn.ReLU(inplace=True),
                                      nn.Linear(hidden, num_permutations))
        else:
            self.head = nn.Linear(dim, num_permutations)

    def make_inputs(self, images, targets):
        tiles = shuffle_tiles(cut_tiles(images, self.grid), self.permutations[targets])  # (B, T, 3, t, t)
        x = to_float(tiles)
        if self.gap:
            g, border = self.gap, torch.zeros_like(x[:1, :1], dtype=torch.bool)
            border[..., :g, :] = border[..., -g:, :] = border[..., :, :g] = border[..., :, -g:] = True
            x = x.masked_fill(border, 0.0)  # 0 is mid-grey after to_float
        return x if self.per_tile else join_tiles(x)  # (B, T, 3, t, t) or (B, 3, g*t, g*t)

    def forward(self, x):
        if not self.per_tile:
            return self.head(self.backbone(x))  # the whole shuffled image at once: (B, num_permutations)
        b, n = x.shape[:2]
        features = self.backbone(x.flatten(0, 1))  # (B*T, D): every tile on its own
        return self.head(features.view(b, -1))  # (B, T*D) -> (B, num_permutations)

    def shuffled_images(self, images, targets):
        """The shuffled puzzles as images (B, 3, g*t, g*t), uint8 in, uint8 out, for figures."""
        return join_tiles(shuffle_tiles(cut_tiles(images, self.grid), self.permutations[targets]))


# ----------------------------------------------------------------------------------------------
# by name, and how well a task is solved


PRETEXT_TASKS = {"rotation": Rotation, "jigsaw": Jigsaw}


def make_pretext(name: str, backbone: nn.Module, feature_dim: int | None = None, **kwargs) -> PretextTask:
    """Build a pretext task by name ("rotation", "jigsaw") around ``backbone``; kwargs go to its class."""
    if name not in PRETEXT_TASKS:
        raise ValueError(f"unknown pretext task {name!r}; choose one of: {', '.join(PRETEXT_TASKS)}")
    return PRETEXT_TASKS[name](backbone, feature_dim, **kwargs)


def _eval_targets(task: PretextTask, n: int, views: int, generator: torch.Generator) -> list[torch.Tensor]:
    if task.num_targets <= views:  # every target for every image (rotation: all four turns)
        return [torch.full((n,), t, dtype=torch.long) for t in range(task.num_targets)]
    return [torch.randint(task.num_targets, (n,), generator=generator) for _ in range(views)]


@torch.no_grad()
def pretext_accuracy(task: PretextTask, data: ImageData, views: int = 4, batch_size: int = 256, seed: int = 0) -> dict:
    """How often ``task`` predicts its own targets on ``data``, overall and per class.

    Every image is scored under ``views`` targets (all of them when the task has that few, e.g.
    the four rotations; otherwise drawn with ``seed``). Returns ``{"overall": acc, "per_class":
    {class name: acc}}``; the per-class split needs labels (classes without labels are skipped).
    """
    device = next(task.parameters()).device
    was_training = task.training
    task.eval()
    g = torch.Generator().manual_seed(seed)
    correct = torch.zeros(len(data))
    try:
        targets_list = _eval_targets(task, len(data), views, g)
        for targets in targets_list:
            for s in range(0, len(data), batch_size):
                images = data.images[s:s + batch_size].to(device)
                t = targets[s:s + batch_size].to(device)
                pred = task(task.make_inputs(images, t)).argmax(1)
                correct[s:s + batch_size] += (pred == t).float().cpu()
    finally:
        task.train(was_training)
    correct /= len(targets_list)
    per_class = {name: correct[data.labels == k].mean().item() for k, name in enumerate(data.classes)
                 if (data.labels == k).any()}
    return {"overall": correct.mean().item(), "per_class": per_class}


def edge_solver_accuracy(images: torch.Tensor, grid: int = 3, num_permutations: int = 64, gap: int = 0,
                         seed: int = 0) -> float:
    """Solve jigsaw puzzles with no learning, from edge continuity alone; returns the accuracy.

    Each image (uint8 (N, 3, H, W)) is shuffled by a random one of the task's permutations; the
    solver picks the permutation whose un-shuffling makes neighbouring tiles' touching edges most
    alike (least summed squared difference). High accuracy means the task can be shortcut
    without understanding the image; ``gap`` blanks the tile borders as ``Jigsaw(gap=...)`` does.
    """
    perms = hamming_permutations(grid * grid, num_permutations)  # (P, T)
    targets = torch.randint(num_permutations, (len(images),), generator=torch.Generator().manual_seed(seed))
    tiles = shuffle_tiles(cut_tiles(images, grid), perms[targets]).float()  # (N, T, C, t, t)
    if gap:
        tiles[..., :gap, :] = tiles[..., -gap:, :] = tiles[..., :, :gap] = tiles[..., :, -gap:] = 127.5
    right, left = tiles[..., :, -1], tiles[..., :, 0]  # (N, T, C, t) the columns at the edges
    bottom, top = tiles[..., -1, :], tiles[..., 0, :]
    lr = (right[:, :, None] - left[:, None]).pow(2).flatten(3).sum(3)  # (N, T, T): tile a left of tile b
    tb = (bottom[:, :, None] - top[:, None]).pow(2).flatten(3).sum(3)  # (N, T, T): tile a above tile b
    inverse = perms.argsort(1)  # (P, T): where original tile j sits in the shuffled image
    pos = torch.arange(grid * grid).view(grid, grid)
    h_pairs = torch.stack([pos[:, :-1].flatten(), pos[:, 1:].flatten()], 1)  # original neighbours, left-right
    v_pairs = torch.stack([pos[:-1, :].flatten(), pos[1:, :].flatten()], 1)  # top-bottom
    n = torch.arange(len(images))[:, None, None]
    cost = lr[n, inverse[None, :, h_pairs[:, 0]], inverse[None, :, h_pairs[:, 1]]].sum(2) \
        + tb[n, inverse[None, :, v_pairs[:, 0]], inverse[None, :, v_pairs[:, 1]]].sum(2)  # (N, P)
    return (cost.argmin(1) == targets).float().mean().item()
