"""MAE: hide most of the image, predict the hidden pixels (He et al. 2022, "Masked autoencoders are
scalable vision learners").

The image is cut into patches (4x4 px: an 8x8 grid on a 32 px image) and a random 75% of them are
dropped. The encoder, a ViT (``sslkit.models.TinyViT``), sees only the visible quarter (16 patch
tokens plus the class token), which is what makes MAE cheap. A small decoder gets the encoded
visible tokens back in their places, a shared learned *mask token* in every hidden place, and
predicts the pixels of every patch; the loss is the mean squared error on the hidden patches
only. With ``norm_pix_loss`` the target of each patch is its pixels standardised by the patch's
own mean and variance (the paper's better setting for features; reconstructions are shown
un-standardised with the true patch's statistics, as the paper's figures are).

The pieces are lightly's: ``MaskedVisionTransformerTorchvision`` (the encoder on visible tokens,
inside ``TinyViT``), ``MAEDecoder``, ``random_token_mask``, ``patchify``, ``get_at_index`` and
``set_at_index``; the shape follows lightly's ``examples/pytorch/mae.py``.

Unlike the joint-embedding methods, MAE's features are weak under a linear probe and strong after
fine-tuning (lightly's ImageNet table: ViT-B/16 linear 46.0, fine-tuned 81.3):
``sslkit.finetune.FineTune(backbone, num_classes, layer_decay=0.75)`` trains the whole ViT with a
linear head on a few labels, the pre-trained blocks slowed layer by layer.

The paper's optimiser settings are parts that the training loop picks up: ``MAE.param_groups``
puts weight decay on the weight matrices only (``decays``, ``decay_groups``; fine-tuning uses the
same), and ``ReconstructionSnapshots`` (a callback of the loop) keeps pictures of the
reconstructions at several points of a run.

>>> import sslkit
>>> backbone, dim = sslkit.make_backbone("vit_tiny", hidden_dim=48, num_layers=1, num_heads=2)
>>> mae = MAE(backbone, dim, decoder_dim=32, decoder_depth=1, decoder_heads=2)
>>> mae.num_visible_patches, backbone.num_patches   # the encoder sees 16 of 64 patches (+ class token)
(16, 64)
>>> images = sslkit.load_dataset("shapes", "train", n=4).images
>>> mae.training_step(images, None).shape
torch.Size([])
>>> masked, reconstruction, mask = mae.reconstruct(images)
>>> masked.shape, masked.dtype, mask.shape, int(mask[0].sum())
(torch.Size([4, 3, 32, 32]), torch.uint8, torch.Size([4, 8, 8]), 48)
"""

from __future__ import annotations

import time

import torch
from lightly.models import utils
from lightly.models.modules.masked_autoencoder import MAEDecoder
from torch import nn

from ..augment import AugmentParams, augment
from ..data import ImageData, to_float, to_uint8
from ..models import TinyViT


def check_mask_ratio(mask_ratio: float, num_patches: int) -> int:
    """The number of visible patches at ``mask_ratio``; a ValueError when no patch would be hidden or seen.

    >>> check_mask_ratio(0.75, 64)
    16
    """
    if not isinstance(mask_ratio, (int, float)) or not 0 < mask_ratio < 1:
        raise ValueError(f"mask_ratio={mask_ratio!r} must be strictly between 0 and 1 (the fraction of patches "
                         f"hidden); the paper uses 0.75, and 0.25 to 0.9 all train")
    num_visible = int(num_patches * (1 - mask_ratio))  # as lightly's random_token_mask counts
    if num_visible < 1:
        raise ValueError(f"mask_ratio={mask_ratio} hides all {num_patches} patches, leaving the encoder nothing "
                         f"to see; use at most {1 - 1 / num_patches:.3f}")
    if num_visible >= num_patches:
        raise ValueError(f"mask_ratio={mask_ratio} hides none of the {num_patches} patches, leaving nothing to "
                         f"predict; use at least {1 / num_patches:.3f}")
    return num_visible


def patch_targets(x: torch.Tensor, patch_size: int, norm_pix_loss: bool) -> torch.Tensor:
    """Pixel targets (B, N, patch_size**2 * C) of normalised images x (B, C, H, W).

    ``norm_pix_loss``: each patch standardised by its own mean and variance (MAE's
    ``norm_pix_loss``; lightly's ``normalize_mean_var``).
    """
    target = utils.patchify(x, patch_size)  # (B, N, p*p*C), row-major patches, channels last
    return utils.normalize_mean_var(target, dim=-1) if norm_pix_loss else target


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the hidden patches only (MAE's loss).

    pred, target: (B, N, P) one row per patch; mask: (B, N) bool, True where the patch was hidden.
    Visible patches do not count, however wrong their prediction.

    >>> pred, target = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    >>> masked_mse(pred, target, torch.tensor([[True, False]])).item()
    1.0
    """
    per_patch = (pred - target).pow(2).mean(-1)  # (B, N)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum()


NO_DECAY_NAMES = ("class_token", "pos_embedding", "mask_token")  # tokens and embeddings: no weight decay


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether AdamW should decay this parameter: weight matrices yes; biases, LayerNorms, tokens no.

    The usual ViT/MAE recipe (He et al. 2022, appendix A.1): decay pulls weights towards 0, which
    regularises a matrix but only shifts a bias, a LayerNorm gain or a learned token.

    >>> decays("encoder.vit.encoder.layers.encoder_layer_0.mlp.0.weight", torch.zeros(512, 128))
    True
    >>> decays("encoder.vit.encoder.layers.encoder_layer_0.ln_1.weight", torch.zeros(128))
    False
    """
    return param.ndim >= 2 and not name.endswith(NO_DECAY_NAMES)


def decay_groups(params, lr_scale: float = 1.0) -> list[dict]:
    """Two torch parameter groups: with and without weight decay (``decays``).

    Args:
        params: a module, or its ``(name, parameter)`` pairs (e.g. one block's).
        lr_scale: multiplies the scheduled learning rate of both groups (``sslkit.train.make_optimizer``);
            the decaying group keeps ``cfg.weight_decay``, the other gets 0.

    >>> [len(g["params"]) for g in decay_groups(nn.Linear(3, 2))]   # [weight], [bias]
    [1, 1]
    """
    named = [(n, p) for n, p in (params.named_parameters() if isinstance(params, nn.Module) else params)
             if p.requires_grad]
    groups = [{"params": [p for n, p in named if decays(n, p)], "lr_scale": lr_scale},
              {"params": [p for n, p in named if not decays(n, p)], "lr_scale": lr_scale, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class MAE(nn.Module):
    """Masked autoencoder around a ``TinyViT``: ``training_step(images, labels) -> loss``.

    Args:
        backbone: a ``TinyViT`` (``make_backbone("vit_tiny")``); its ``encoder`` is trained.
        feature_dim: the backbone's token width (``backbone.feature_dim``).
        mask_ratio: fraction of patches hidden from the encoder, in (0, 1) (paper: 0.75).
        norm_pix_loss: predict each patch standardised by its own mean and variance (paper: True).
        decoder_dim, decoder_depth, decoder_heads: width, blocks and heads of the decoder (the
            paper's is 512 wide and 8 deep for ViT-L; a light decoder is one of its findings, and
            here it decides the speed: the decoder runs on all 65 tokens, the encoder on 17).
        crop_scale: area range of a random resized crop applied before masking, with a random
            flip (the paper: (0.2, 1.0), for hundreds of epochs); None: flips only (the default,
            the setting measured for a few CPU minutes of training).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int | None = None, mask_ratio: float = 0.75,
                 norm_pix_loss: bool = True, decoder_dim: int = 64, decoder_depth: int = 1, decoder_heads: int = 4,
                 crop_scale: tuple[float, float] | None = None):
        super().__init__()
        if not isinstance(backbone, TinyViT):
            raise ValueError(f"MAE needs a ViT backbone (make_backbone('vit_tiny')) whose encoder can skip the "
                             f"hidden patches; got {type(backbone).__name__}")
        self.backbone = backbone
        dim = feature_dim or backbone.feature_dim
        self.patch_size = backbone.patch_size
        self.num_patches = backbone.num_patches
        self.num_visible_patches = check_mask_ratio(mask_ratio, self.num_patches)
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        out_dim = self.patch_size ** 2 * backbone.in_channels  # pixels per patch
        self.decoder = MAEDecoder(seq_length=self.num_patches + 1, num_layers=decoder_depth, num_heads=decoder_heads,
                                  embed_input_dim=dim, hidden_dim=decoder_dim, mlp_dim=4 * decoder_dim,
                                  out_dim=out_dim, dropout=0.0, attention_dropout=0.0)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))  # stands in for every hidden patch
        nn.init.normal_(self.mask_token, std=0.02)
        self.view_params = None if crop_scale is None else AugmentParams(
            image_size=backbone.image_size, crop_scale=tuple(crop_scale), color_jitter_prob=0.0, grayscale_prob=0.0)

    def param_groups(self) -> list[dict]:
        """AdamW groups for ``train``: weight decay on the weight matrices only (see ``decay_groups``)."""
        return decay_groups(self)

    def random_mask(self, batch_size: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(idx_keep (B, 1 + num_visible), idx_mask (B, num_hidden)): token indices, 0 is the class token."""
        return utils.random_token_mask(size=(batch_size, self.num_patches + 1), mask_ratio=self.mask_ratio,
                                       device=device)

    def forward(self, x: torch.Tensor, idx_keep: torch.Tensor) -> torch.Tensor:
        """Predicted pixels (B, N, P) of every patch, from the tokens ``idx_keep`` of images x alone."""
        self.backbone.check_input(x)
        encoded = self.backbone.encoder.encode(x, idx_keep=idx_keep)  # (B, 1 + visible, D): only these run
        b = len(x)
        tokens = utils.repeat_token(self.mask_token, (b, self.num_patches + 1))  # (B, 1 + N, Dd) all mask tokens
        tokens = utils.set_at_index(tokens, idx_keep, self.decoder.embed(encoded).to(tokens.dtype))  # back in place
        decoded = self.decoder.decode(tokens)  # (B, 1 + N, Dd): adds the decoder's position embeddings
        return self.decoder.predict(decoded[:, 1:])  # (B, N, P), the class token dropped

    def loss(self, x: torch.Tensor, idx_keep: torch.Tensor, idx_mask: torch.Tensor):
        """(loss, pred (B, N, P), target (B, N, P), mask (B, N) bool) for normalised images x."""
        pred = self(x, idx_keep)
        target = patch_targets(x, self.patch_size, self.norm_pix_loss)
        mask = torch.zeros(len(x), self.num_patches + 1, dtype=torch.bool, device=x.device)
        mask = mask.scatter(1, idx_mask, True)[:, 1:]  # (B, N) True where hidden
        return masked_mse(pred, target, mask), pred, target, mask

    def views(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> normalised float views: random resized crop and flip (or flips only)."""
        if self.view_params is None:
            flip = torch.rand(len(images), device=images.device) < 0.5
            return to_float(torch.where(flip[:, None, None, None], images.flip(-1), images))
        return augment(images, self.view_params)

    def training_step(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        self.backbone.check_input(images)  # before the crop, which would resize any size to the ViT's
        x = self.views(images)  # (B, C, H, W) normalised
        idx_keep, idx_mask = self.random_mask(len(x), x.device)  # (B, 1 + visible), (B, hidden)
        return self.loss(x, idx_keep, idx_mask)[0]

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, seed: int = 0):
        """Pictures of what MAE does, for a grid: (masked input, reconstruction, mask).

        Args:
            images: uint8 (B, C, H, W), no augmentation applied.
            seed: draws the mask, so calls at several points of training hide the same patches.
        Returns:
            masked: uint8 (B, C, H, W), the hidden patches grey (what the encoder sees);
            reconstruction: uint8 (B, C, H, W), the predicted patches pasted into the hidden places,
                the visible patches as they were (the paper's figures). With ``norm_pix_loss`` the
                predictions are un-standardised with each true patch's mean and variance;
            mask: (B, h, w) bool, True where a patch was hidden.
        Also sets ``self.last_reconstruction_loss`` to the loss on these images and masks.
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        x = to_float(images.to(device))
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                idx_keep, idx_mask = self.random_mask(len(x), device)
            loss, pred, target, mask = self.loss(x, idx_keep, idx_mask)
        finally:
            self.train(was_training)
        self.last_reconstruction_loss = loss.item()
        c, p, g = x.shape[1], self.patch_size, self.backbone.grid_size
        patches = utils.patchify(x, p)  # (B, N, p*p*C)
        if self.norm_pix_loss:
            mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
            pred = pred * (var + 1e-6).sqrt() + mean
        m = mask[..., None]  # (B, N, 1)
        masked = utils.unpatchify(patches.masked_fill(m, 0.0), p, c)  # 0 is mid-grey after to_float
        reconstruction = utils.unpatchify(torch.where(m, pred, patches), p, c)
        return to_uint8(masked).cpu(), to_uint8(reconstruction).cpu(), mask.view(-1, g, g).cpu()

    @torch.no_grad()
    def reconstruction_loss(self, data: ImageData | torch.Tensor, batch_size: int = 256, seed: int = 0) -> float:
        """Mean masked-patch loss over images (uint8, no augmentation), with masks drawn from ``seed``."""
        images = data.images if isinstance(data, ImageData) else data
        total = 0.0
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            self.reconstruct(batch, seed=seed + start)
            total += self.last_reconstruction_loss * len(batch)
        return total / len(images)


class ReconstructionSnapshots:
    """MAE's reconstructions of the same images and masks at several points of one training run.

    A callback of the loop: ``train(mae, data, cfg, callbacks=[lambda h: snapshots(mae, h.steps,
    h.total_steps)])``. After each optimizer step it checks how far the run is, and at each of
    ``at_fractions`` of its planned steps (and each of ``at_s`` seconds of training) it stores
    ``mae.reconstruct(images, seed)``. ``take`` stores one now (before training, after it);
    ``figure`` draws the grid: the originals, the masked inputs, then one row of reconstructions
    per snapshot, each labelled with its step, time and loss.

    Args:
        images: uint8 (B, C, H, W), e.g. 8 test images.
        at_fractions: fractions of the run's planned steps (``total_steps``) after which to take a
            snapshot: the same steps on every machine. A run that a time budget stops early skips
            the points it does not reach.
        at_s: seconds of training after which to take a snapshot (counted from the first step).
        seed: the masks (the same patches are hidden in every snapshot).

    Points passed in the same step give one snapshot.

    >>> import sslkit
    >>> backbone, dim = sslkit.make_backbone("vit_tiny", hidden_dim=32, num_layers=1, num_heads=2)
    >>> mae = MAE(backbone, dim, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    >>> snapshots = ReconstructionSnapshots(sslkit.load_dataset("shapes", "test", n=4).images, at_fractions=(0.2, 0.5))
    >>> snapshots.take(mae, "before training")
    >>> for step in range(1, 11):   # the loop calls it after every step of a 10-step run
    ...     snapshots(mae, step, 10)
    >>> [s["step"] for s in snapshots.taken]   # 0.2 and 0.5 of 10 steps
    [None, 2, 5]
    """

    def __init__(self, images: torch.Tensor, at_fractions=(), at_s=(), seed: int = 0):
        if any(not 0 <= f <= 1 for f in at_fractions):
            raise ValueError(f"at_fractions={tuple(at_fractions)}: each must be a fraction of the run, in [0, 1]")
        self.images, self.at_fractions, self.at_s, self.seed = images, sorted(at_fractions), sorted(at_s), seed
        self.taken: list[dict] = []  # label, step, loss, masked, reconstruction
        self._start, self._next_fraction, self._next_s = None, 0, 0

    def take(self, mae: MAE, label: str, step: int | None = None):
        masked, reconstruction, _ = mae.reconstruct(self.images, seed=self.seed)
        self.taken.append({"label": label, "step": step, "loss": mae.last_reconstruction_loss, "masked": masked,
                           "reconstruction": reconstruction})

    @staticmethod
    def _passed(points: list, start: int, now: float) -> int:
        """The index after the last of ``points`` (sorted) that ``now`` has reached, from ``start`` on."""
        while start < len(points) and now >= points[start]:
            start += 1
        return start

    def __call__(self, mae: MAE, step: int, total_steps: int):
        now = time.perf_counter()
        self._start = now if self._start is None else self._start
        elapsed = now - self._start
        fraction = self._passed(self.at_fractions, self._next_fraction, step / max(1, total_steps))
        seconds = self._passed(self.at_s, self._next_s, elapsed)
        if (fraction, seconds) != (self._next_fraction, self._next_s):
            self._next_fraction, self._next_s = fraction, seconds
            self.take(mae, f"step {step} ({elapsed:.0f} s)", step)

    def figure(self, size: float = 1.1):
        """A grid: originals, masked inputs, one row of reconstructions per snapshot (matplotlib figure)."""
        from ..viz import show_images

        if not self.taken:
            raise ValueError("no snapshots taken yet: call take(mae, label) or train with this as a callback")
        n = len(self.images)
        rows = [self.images, self.taken[0]["masked"]] + [s["reconstruction"] for s in self.taken]
        titles = ["original"] * n + ["masked input"] * n
        for s in self.taken:
            titles += [f"{s['label']}\nloss {s['loss']:.3f}"] + [""] * (n - 1)
        return show_images(torch.cat(rows), titles, ncols=n, size=size)
