"""Exercises of notebook 01 (pretext tasks): the rotation batch and the jigsaw shuffle, from their definitions."""

from __future__ import annotations

import torch

from . import Exercise, Hint, Mistake, register


def _same(a, b) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.equal(a, b.to(a.dtype))


# ---------------------------------------------------------------------------------------------
# rotation: the batch of a step, every image in all four turns, with its target k


def rotation_batch_reference(images):
    """The batch ``sslkit.pretext.Rotation.training_step`` builds: all B images turned by 0, then by 90, 180, 270
    degrees counter-clockwise (``sslkit.pretext.rotate``); targets 0 (B times), 1 (B times), 2, 3."""
    from sslkit.pretext import rotate

    targets = torch.arange(4, device=images.device).repeat_interleave(len(images))  # (4B,)
    return rotate(images.repeat(4, 1, 1, 1), targets), targets  # (4B, C, H, W), (4B,)


def _rotation_cases(g):
    # first a batch whose four axes have one size: a turn of the wrong two axes keeps the shape and shows here
    return [torch.randn(4, 4, 4, 4, generator=g),
            torch.randint(0, 256, (3, 3, 8, 8), generator=g, dtype=torch.uint8),  # uint8 images, as the kit's
            torch.randn(5, 3, 12, 12, generator=g),  # float images
            torch.randn(1, 1, 5, 5, generator=g),  # one grey image of odd size
            torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)]  # the notebook's size


def _rotation_test(answer):
    g = torch.Generator().manual_seed(0)
    for images in _rotation_cases(g):
        b, c, h, w = images.shape
        before = images.clone()
        out = answer(images)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise Hint("return two things, the inputs and their targets: `return inputs, targets`")
        inputs, targets = out
        if not torch.equal(images, before):
            raise Hint("your function changed the images it was given (an in-place operation); build new tensors "
                       "(torch.rot90 and torch.cat do)")
        want_inputs, want_targets = rotation_batch_reference(images)
        if not isinstance(targets, torch.Tensor) or targets.shape != (4 * b,):
            raise Hint(f"for B={b} images the targets should be a tensor of shape ({4 * b},): one target per input, "
                       f"got {tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__}")
        if targets.dtype != torch.long:
            raise Hint(f"the targets are {targets.dtype}; cross_entropy wants class indices as torch.long "
                       f"(torch.arange gives them)")
        if not isinstance(inputs, torch.Tensor) or inputs.shape != (4 * b, c, h, w):
            got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            if isinstance(inputs, torch.Tensor) and inputs.dim() == 4 and sorted(inputs.shape[1:]) == sorted((c, h, w)):
                raise Hint(f"the inputs have shape {got}, not {(4 * b, c, h, w)}: the turn moved the channel axis. "
                           f"Rotate the two spatial axes only: torch.rot90(images, k, dims=(2, 3))")
            raise Hint(f"for images of shape {(b, c, h, w)} the inputs should have shape {(4 * b, c, h, w)} (all B "
                       f"images in each of the four turns), got {got}")
        if inputs.dtype != images.dtype:
            raise Hint(f"the inputs are {inputs.dtype} but the images were {images.dtype}: keep the images' dtype "
                       f"(a turn only moves pixels)")
        if _same(inputs, want_inputs) and _same(targets, want_targets):
            continue
        _rotation_diagnose(images, inputs, targets, want_inputs, want_targets)
        raise Hint(f"for images of shape {(b, c, h, w)} your inputs or targets differ from the kit's: input j should "
                   f"be image j % B turned by (j // B) * 90 degrees counter-clockwise, with target j // B")


def _rotation_diagnose(images, inputs, targets, want_inputs, want_targets):
    b = len(images)
    if _same(inputs, want_inputs):  # the right inputs, the wrong targets
        if _same(targets, torch.arange(4).repeat(b)):
            raise Hint("the targets do not match the inputs: the inputs are the B images turned by 0, then the B "
                       "images turned by 90 degrees, and so on, so the targets are 0 (B times), then 1 (B times), ...: "
                       "torch.arange(4).repeat_interleave(B), not .repeat(B)")
        raise Hint("the inputs are right but the targets are not: input j is turned by (j // B) * 90 degrees, so its "
                   "target is j // B")
    clockwise = torch.cat([torch.rot90(images, -k, dims=(2, 3)) for k in range(4)])
    if _same(inputs, clockwise) and _same(targets, want_targets):
        raise Hint("your turns go clockwise: target k means k quarter turns counter-clockwise, which is what "
                   "torch.rot90(images, k, dims=(2, 3)) does with a positive k (for k = 1 and 3 your labels do not "
                   "match the rotation)")
    second = inputs[b:2 * b]  # what should be the quarter turns
    mirrored = _same(second, images.transpose(2, 3)) or _same(second, images.flip(2)) or _same(second, images.flip(3))
    if _same(inputs[:b], images) and mirrored:
        raise Hint("a transpose or a flip is a mirror image, not a turn: use torch.rot90(images, k, dims=(2, 3)) for "
                   "k quarter turns")
    per_image = torch.arange(4).repeat(b)  # image i in its four turns, then image i + 1 ...
    interleaved = torch.stack([torch.rot90(images, k, dims=(2, 3)) for k in range(4)], 1).flatten(0, 1)
    if _same(inputs, interleaved) and _same(targets, per_image):
        raise Hint("your inputs and targets agree, but in another order: put the B images unturned first, then all B "
                   "turned by 90 degrees, and so on (targets 0 (B times), 1 (B times), ...), as the kit's "
                   "Rotation.training_step does and the figure below expects (one row per turn)")
    for dims in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]:
        if _same(inputs, torch.cat([torch.rot90(images, k, dims=dims) for k in range(4)])):
            raise Hint(f"you turned the axes {dims} of the (B, C, H, W) batch; turn the two spatial axes only: "
                       f"torch.rot90(images, k, dims=(2, 3)) (torch.rot90's default dims=(0, 1) are the batch "
                       f"and the channels)")


def _rotation_wrong_axes(images):
    inputs = torch.cat([torch.rot90(images, k, dims=(1, 2)) for k in range(4)])  # turns channels into rows
    return inputs, torch.arange(4).repeat_interleave(len(images))


def _rotation_default_dims(images):
    inputs = torch.cat([torch.rot90(images, k) for k in range(4)])  # dims=(0, 1): the batch and channel axes
    return inputs, torch.arange(4).repeat_interleave(len(images))


def _rotation_clockwise(images):
    inputs = torch.cat([torch.rot90(images, -k, dims=(2, 3)) for k in range(4)])
    return inputs, torch.arange(4).repeat_interleave(len(images))


def _rotation_labels_repeat(images):
    inputs = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    return inputs, torch.arange(4).repeat(len(images))  # 0 1 2 3 0 1 2 3 ...: not the order of the inputs


def _rotation_transpose(images):
    turned = [images, images.transpose(2, 3), images.flip(2), images.transpose(2, 3).flip(2)]
    return torch.cat(turned), torch.arange(4).repeat_interleave(len(images))


register(Exercise(
    name="rotation_batch", notebook="01_pretext", answer_name="my_rotation_batch", difficulty=1,
    idea="the rotation pretext's batch: every image turned by k * 90 degrees, k = 0..3, with the target k",
    test=_rotation_test, reference=rotation_batch_reference,
    mistakes=(
        Mistake("rotating the wrong axes (channels and rows)", _rotation_wrong_axes, "spatial axes"),
        Mistake("torch.rot90 with its default dims=(0, 1)", _rotation_default_dims, "spatial axes"),
        Mistake("turning clockwise: the labels do not match the rotation", _rotation_clockwise, "clockwise"),
        Mistake("targets 0 1 2 3 0 1 2 3 ... for inputs ordered by turn", _rotation_labels_repeat,
                "do not match the inputs"),
        Mistake("a transpose or a flip instead of a turn", _rotation_transpose, "not a turn"),
    ),
))


# ---------------------------------------------------------------------------------------------
# jigsaw: cut the image into tiles, put them back in the order of a permutation


def jigsaw_shuffle_reference(images, grid, permutation):
    """``sslkit.pretext``'s shuffle: position p (row-major) of the result holds original tile ``permutation[p]``."""
    from sslkit.pretext import cut_tiles, join_tiles, shuffle_tiles

    perm = torch.as_tensor(permutation, dtype=torch.long).expand(len(images), -1)  # (B, T): one per image
    return join_tiles(shuffle_tiles(cut_tiles(images, grid), perm))  # (B, C, H, W)


def _jigsaw_cases(g):
    cases = [(torch.randint(0, 256, (2, 3, 8, 8), generator=g, dtype=torch.uint8), 2, torch.tensor([1, 2, 0, 3])),
             (torch.randint(0, 256, (3, 3, 12, 12), generator=g, dtype=torch.uint8), 3, torch.randperm(9, generator=g)),
             (torch.randn(1, 1, 6, 6, generator=g), 3, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8])),  # the identity
             (torch.randn(2, 3, 10, 10, generator=g), 1, torch.tensor([0])),  # one tile: nothing moves
             (torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8), 2, torch.tensor([3, 0, 2, 1])),
             (torch.randn(2, 3, 12, 12, generator=g), 4, torch.randperm(16, generator=g))]
    return cases


def _jigsaw_test(answer):
    g = torch.Generator().manual_seed(0)
    for images, grid, permutation in _jigsaw_cases(g):
        before, perm_before = images.clone(), permutation.clone()
        got = answer(images, grid, permutation)
        if not torch.equal(images, before) or not torch.equal(permutation, perm_before):
            raise Hint("your function changed its input (an in-place write into `images` or `permutation`); write "
                       "the tiles into a new tensor, e.g. out = torch.empty_like(images)")
        if not isinstance(got, torch.Tensor) or got.shape != images.shape:
            raise Hint(f"return the shuffled images with the images' shape {tuple(images.shape)}, got "
                       f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
        if got.dtype != images.dtype:
            raise Hint(f"the result is {got.dtype} but the images were {images.dtype}: keep the dtype (tiles only "
                       f"move)")
        want = jigsaw_shuffle_reference(images, grid, permutation)
        if torch.equal(got, want):
            continue
        _jigsaw_diagnose(answer)
        raise Hint(f"for a {grid}x{grid} grid and the permutation {permutation.tolist()} your puzzle differs from the "
                   f"kit's: tile p is the square at row p // grid, column p % grid, and position p of the result "
                   f"holds original tile permutation[p]")


def _jigsaw_diagnose(answer):
    """Name the mistake from a puzzle on which each common mistake gives its own result: a 3x3 grid of distinct
    pixel values and a permutation that differs from its inverse and from its column-major reading."""
    images = torch.arange(36).reshape(1, 1, 6, 6)
    permutation = torch.tensor([3, 7, 1, 8, 0, 5, 2, 6, 4])
    try:
        got = answer(images, 3, permutation)
    except Exception:  # noqa: BLE001 - the generic hint of the caller applies
        return
    if not isinstance(got, torch.Tensor) or got.shape != images.shape:
        return
    if torch.equal(got, _jigsaw_column_major(images, 3, permutation)):
        raise Hint("tiles are numbered row by row (tile p is at row p // grid, column p % grid), yours go column by "
                   "column: the row and column of a tile are swapped")
    if torch.equal(got, _jigsaw_inverse(images, 3, permutation)):
        raise Hint("position p of the result takes original tile permutation[p]; you moved tile p to position "
                   "permutation[p], which applies the inverse permutation")
    if torch.equal(got, _jigsaw_strips(images, 3, permutation)):
        raise Hint("a plain reshape of (H, W) into (grid * grid, t, t) cuts the image into strips of rows, not "
                   "square tiles: take tile (row r, column c) as images[..., r*t:(r+1)*t, c*t:(c+1)*t]")


def _tile_loop(images, grid, permutation, order=lambda p, grid: divmod(p, grid), inverse=False):
    t = images.shape[-1] // grid
    tiles = []
    for p in range(grid * grid):
        r, c = order(p, grid)
        tiles.append(images[..., r * t:(r + 1) * t, c * t:(c + 1) * t])
    out = torch.empty_like(images)
    for p, j in enumerate(permutation.tolist()):
        src, dst = (p, j) if inverse else (j, p)
        r, c = order(dst, grid)
        out[..., r * t:(r + 1) * t, c * t:(c + 1) * t] = tiles[src]
    return out


def _jigsaw_column_major(images, grid, permutation):
    return _tile_loop(images, grid, permutation, order=lambda p, grid: divmod(p, grid)[::-1])


def _jigsaw_inverse(images, grid, permutation):
    return _tile_loop(images, grid, permutation, inverse=True)


def _jigsaw_strips(images, grid, permutation):
    b, c, h, w = images.shape
    t = h // grid
    strips = images.reshape(b, c, grid * grid, t, t)[:, :, permutation]  # rows of pixels, not squares
    return strips.reshape(b, c, h, w)


register(Exercise(
    name="jigsaw_shuffle", notebook="01_pretext", answer_name="my_jigsaw_shuffle", difficulty=2,
    idea="the jigsaw puzzle: cut an image into grid x grid tiles and put them back in the order of a permutation",
    test=_jigsaw_test, reference=jigsaw_shuffle_reference,
    mistakes=(
        Mistake("tiles numbered column by column (row and column swapped)", _jigsaw_column_major, "row by row"),
        Mistake("the inverse permutation (tile p moved to position permutation[p])", _jigsaw_inverse,
                "inverse permutation"),
        Mistake("a plain reshape: strips of rows instead of square tiles", _jigsaw_strips, "strips"),
    ),
))
