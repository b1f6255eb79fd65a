"""Exercises of notebook 04 (masked image modelling): cutting images into patch vectors, and drawing the random
token mask of MAE."""

from __future__ import annotations

import torch

from . import Exercise, Hint, Mistake, register, same_dtype


# ---------------------------------------------------------------------------------------------
# patchify: images (B, C, H, W) -> patch vectors (B, N, p*p*C)


def patchify_reference(images, patch_size):
    """lightly's ``patchify``: patches numbered row by row, each flattened pixel by pixel, channels last."""
    from lightly.models.utils import patchify

    return patchify(images, patch_size)


def _layout(images, p, order):
    """The patch vectors of ``images`` in the einsum layout ``order`` (lightly's is "nhwpqc")."""
    n, c, h, w = images.shape
    grid = images.reshape(n, c, h // p, p, w // p, p)
    return torch.einsum(f"nchpwq->{order}", grid).reshape(n, (h // p) * (w // p), p * p * c)


def _patchify_test(answer):
    g = torch.Generator().manual_seed(0)
    # (B, C, H, p): MAE's 32 px images in 4 px patches, one channel, one patch per image, 1 px patches
    for b, c, h, p in ((2, 3, 32, 4), (3, 3, 12, 4), (1, 1, 8, 2), (2, 3, 6, 6), (2, 2, 4, 1), (1, 3, 8, 2)):
        images = torch.randn(b, c, h, h, generator=g)
        want = patchify_reference(images, p)
        got = answer(images.clone(), p)
        if not isinstance(got, torch.Tensor):
            raise Hint(f"return a tensor of shape (B, N, p*p*C), not {type(got).__name__}")
        if tuple(got.shape) != tuple(want.shape):
            raise Hint(f"for images {tuple(images.shape)} and patch_size {p} the shape should be {tuple(want.shape)} "
                       f"= (B, N, p*p*C) with N = (H / p) ** 2 patches; yours is {tuple(got.shape)}")
        same_dtype(got, images, "your patch vectors")
        if torch.allclose(got, want):
            continue
        same = lambda order: torch.allclose(got, _layout(images, p, order))  # noqa: E731
        if same("nhwcpq"):
            raise Hint("the values inside each patch vector are in the wrong order: the channels come first in yours "
                       "(all of R, then G, then B; what F.unfold gives); lightly lays a patch out pixel by pixel with "
                       "the C channel values of each pixel together (channels last, 'nchpwq->nhwpqc')")
        if same("nwhpqc"):
            raise Hint("the patches are numbered column by column: number them row by row, left to right and top to "
                       "bottom (patch k is at row k // (W / p), column k % (W / p)), as the ViT's position "
                       "embeddings expect")
        if same("nhwqpc"):
            raise Hint("the pixels inside each patch are transposed (column by column): flatten each patch row by row")
        if torch.allclose(got, images.reshape(want.shape)) or torch.allclose(
                got, images.permute(0, 2, 3, 1).reshape(want.shape)):
            raise Hint("a plain reshape mixes pixels of different patches: split H into (H / p, p) and W into "
                       "(W / p, p), move the two patch-grid axes to the front (permute or einsum), then flatten")
        raise Hint(f"for images {tuple(images.shape)} and patch_size {p} your patch vectors differ from lightly's "
                   f"patchify: patch k should hold the pixels of grid row k // (W / p), column k % (W / p), pixel "
                   f"by pixel, channels last")


def _patchify_factory(order="nhwpqc", plain=False):
    def wrong(images, patch_size):
        n, c, h, w = images.shape
        if plain:
            return images.reshape(n, (h // patch_size) * (w // patch_size), patch_size * patch_size * c)
        return _layout(images, patch_size, order)

    return wrong


def _patchify_float64(images, patch_size):
    """The right patch vectors, converted to float64."""
    return patchify_reference(images, patch_size).double()


register(Exercise(
    name="patchify", notebook="04_masked", answer_name="my_patchify", difficulty=2,
    idea="patchify: images (B, C, H, W) -> (B, N, p*p*C), patches row by row, pixels row by row, channels last",
    test=_patchify_test, reference=patchify_reference,
    mistakes=(
        Mistake("channels first in the patch vector (F.unfold's layout)", _patchify_factory("nhwcpq"),
                "channels come first"),
        Mistake("patches numbered column by column", _patchify_factory("nwhpqc"), "column by column"),
        Mistake("the pixels of a patch transposed", _patchify_factory("nhwqpc"), "transposed"),
        Mistake("a plain reshape, without splitting the grid", _patchify_factory(plain=True), "plain reshape"),
        Mistake("the patch vectors converted to float64", _patchify_float64, "return a float32 tensor, as the inputs"),
    ),
))


# ---------------------------------------------------------------------------------------------
# random token masking: which tokens the encoder keeps and which it hides


def random_token_mask_reference(batch_size, num_tokens, mask_ratio, generator):
    """lightly's ``random_token_mask`` (the class token, index 0, never masked), with its random numbers drawn
    from ``generator`` instead of torch's global random state."""
    from lightly.models.utils import random_token_mask

    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return random_token_mask((batch_size, num_tokens), mask_ratio=mask_ratio)


def _num_keep(num_tokens, mask_ratio):
    """Tokens kept by lightly's random_token_mask: the class token and int((L - 1) * (1 - mask_ratio)) patches."""
    return max(1, int((num_tokens - 1) * (1 - mask_ratio)) + 1)


def _token_mask_test(answer):
    # (B, L, mask_ratio): L tokens = 1 class token + L - 1 patch tokens (65: MAE's 8 x 8 grid)
    for b, tokens, ratio in ((8, 65, 0.75), (8, 65, 0.6), (4, 65, 0.7), (6, 17, 0.9), (3, 10, 0.01), (5, 2, 0.5)):
        out = answer(b, tokens, ratio, torch.Generator().manual_seed(1))
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
            raise Hint("return a tuple (idx_keep, idx_mask) of two tensors of token indices")
        keep, mask = out
        if keep.dtype != torch.long or mask.dtype != torch.long:
            raise Hint(f"return token indices as integer (torch.long) tensors, not {keep.dtype} and {mask.dtype} "
                       f"(a boolean mask would be another format: lightly's is two index tensors)")
        if keep.ndim != 2 or mask.ndim != 2 or len(keep) != b or len(mask) != b:
            raise Hint(f"idx_keep and idx_mask should be (B, number kept) and (B, number hidden) with B = {b}: one "
                       f"row per image; yours are {tuple(keep.shape)} and {tuple(mask.shape)}")
        if (mask == 0).any() or not (keep == 0).any(dim=1).all():
            raise Hint("the class token (index 0) is hidden in some images (or missing from idx_keep): it is always "
                       "kept (lightly's mask_class_token=False); draw the random order over the patch tokens "
                       "1 .. L - 1 only, and put token 0 in idx_keep")
        every = torch.cat([keep, mask], dim=1).sort(dim=1).values
        if every.shape[1] != tokens or not torch.equal(every, torch.arange(tokens).expand(b, tokens)):
            raise Hint(f"idx_keep and idx_mask must split the {tokens} tokens: every index 0 .. {tokens - 1} in "
                       f"exactly one of them, once (take both from one random permutation per image)")
        kept, want = keep.shape[1], _num_keep(tokens, ratio)
        if kept != want:
            patches = tokens - 1
            if kept - 1 == int(patches * ratio):
                raise Hint(f"mask_ratio is the share of patches *hidden*: with {patches} patches and mask_ratio "
                           f"{ratio} keep int({patches} * (1 - {ratio})) = {want - 1} patches, not {kept - 1}")
            raise Hint(f"with {patches} patch tokens and mask_ratio {ratio} you keep {kept} tokens; lightly's "
                       f"random_token_mask keeps {want}: the class token and int((L - 1) * (1 - mask_ratio)) = "
                       f"{want - 1} patches, the count rounded down (compute the kept count first, with int(), not "
                       f"round() or L - 1 minus the hidden count)")
    b, tokens, ratio = 64, 65, 0.75
    keep, _ = answer(b, tokens, ratio, torch.Generator().manual_seed(2))
    if len({tuple(sorted(row.tolist())) for row in keep}) == 1:
        raise Hint("every image got the same mask: draw the random numbers per image (noise of shape (B, L), or one "
                   "permutation per row), so that each image hides its own patches")
    again, _ = answer(b, tokens, ratio, torch.Generator().manual_seed(2))
    other, _ = answer(b, tokens, ratio, torch.Generator().manual_seed(3))
    if not torch.equal(keep.sort(1).values, again.sort(1).values) or torch.equal(keep.sort(1).values,
                                                                                 other.sort(1).values):
        raise Hint("the same generator seed gave different masks (or different seeds the same): draw every random "
                   "number from the `generator` argument (torch.rand(..., generator=generator))")
    # every patch is hidden with the same probability, mask_ratio (up to the rounding of the count)
    b, tokens, ratio = 3000, 17, 0.5
    keep, _ = answer(b, tokens, ratio, torch.Generator().manual_seed(4))
    kept_share = torch.zeros(tokens).scatter_add_(0, keep.flatten(), torch.ones(keep.numel()))[1:] / b
    expected = (_num_keep(tokens, ratio) - 1) / (tokens - 1)
    if (kept_share - expected).abs().max() > 0.06:
        worst = int((kept_share - expected).abs().argmax()) + 1
        raise Hint(f"the patches are not kept equally often: token {worst} is kept in {kept_share[worst - 1]:.2f} of "
                   f"the images, the others about {expected:.2f}; draw the kept patches uniformly at random "
                   f"(argsort of uniform noise, or torch.randperm)")


def _mask_factory(shared=False, count="floor", class_token=True, use_generator=True):
    def wrong(batch_size, num_tokens, mask_ratio, generator):
        rows = 1 if shared else batch_size
        g = dict(generator=generator) if use_generator else {}
        noise = torch.rand(rows, num_tokens, **g).expand(batch_size, num_tokens)
        patches = num_tokens - 1
        if count == "floor":
            num_keep = int(patches * (1 - mask_ratio))
        elif count == "round":
            num_keep = round(patches * (1 - mask_ratio))
        else:  # the hidden count first, rounded down: one patch too many kept
            num_keep = patches - int(patches * mask_ratio)
        if class_token:
            noise = noise.clone()
            noise[:, 0] = -1  # sorts first: always kept
            num_keep += 1
        else:
            num_keep = int(num_tokens * (1 - mask_ratio))  # drawn over every token, the class token too
        order = noise.argsort(dim=1)
        return order[:, :num_keep], order[:, num_keep:]

    return wrong


register(Exercise(
    name="random_token_mask", notebook="04_masked", answer_name="my_random_token_mask", difficulty=2,
    idea="random token masking: per image, a random int((L - 1) * (1 - mask_ratio)) patch tokens and the class token "
         "kept, the rest hidden",
    test=_token_mask_test, reference=random_token_mask_reference,
    mistakes=(
        Mistake("the same mask for every image", _mask_factory(shared=True), "same mask"),
        Mistake("the kept count rounded with round()", _mask_factory(count="round"), "rounded down"),
        Mistake("the hidden count rounded down first, so one patch too many kept", _mask_factory(count="hidden"),
                "rounded down"),
        Mistake("the class token drawn with the patches, so sometimes masked", _mask_factory(class_token=False),
                "class token"),
        Mistake("the generator ignored (torch's global random state)", _mask_factory(use_generator=False),
                "generator"),
    ),
))
