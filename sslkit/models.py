"""Backbones: the networks that turn an image into a feature vector.

Every backbone maps images (B, 3, H, W) to features (B, D) and is built by name with
``make_backbone``, which also returns D. The ResNets use a CIFAR-style stem (a 3x3 conv with
stride 1 and no max-pool): the ImageNet stem (7x7 conv, stride 2, max-pool) throws away most
of a 32 px image in its first two layers, which costs a large part of the accuracy on small
images (lightly issue #1419).

``vit_tiny`` is torchvision's ``VisionTransformer`` cut down for a CPU: 32 px images in 4 px
patches (an 8x8 grid of 64 tokens plus the class token); its features are the class token.

>>> backbone, dim = make_backbone("resnet_tiny")
>>> backbone(torch.zeros(2, 3, 32, 32)).shape == (2, dim)
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock
from torchvision.models.vision_transformer import VisionTransformer


class Shortcut(nn.Sequential):
    """A residual block's projection shortcut, as torchvision's: a 1x1 convolution (stride s), then BatchNorm.

    For a batch of odd size the strided 1x1 convolution runs as a stride-1 convolution of every s-th pixel (the
    same numbers): the backward pass of torch 2.14.1's channels_last CPU kernel for it crashes the process
    (SIGSEGV) on odd batches with 8 input channels, e.g. an epoch's last batch of 97 images on notebook 02's network.
    """

    def forward(self, x):
        conv, norm = self[0], self[1]
        if conv.stride != (1, 1) and x.shape[0] % 2:
            return norm(F.conv2d(x[:, :, ::conv.stride[0], ::conv.stride[1]], conv.weight))  # (B, out, H/s, W/s)
        return super().forward(x)


class SmallResNet(nn.Module):
    """A ResNet for small images: CIFAR stem, four stages of torchvision ``BasicBlock``s.

    Args:
        width: channels of the first stage; the stages have width, 2*width, 4*width, 8*width.
        blocks: number of residual blocks in each of the four stages.
        in_channels: channels of the input images (3 for RGB).
        last_width: channels of the last stage instead of 8*width. The last stage runs on 4x4 maps, so
            widening it is cheap and gives kNN more dimensions to work with (None: 8*width).
    Output: (B, last_width or 8 * width) features after global average pooling.
    """

    def __init__(self, width: int = 32, blocks=(1, 1, 1, 1), in_channels: int = 3, last_width: int | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.stem = nn.Sequential(  # CIFAR stem: keeps the full 32x32 resolution
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers, channels = [], width
        for stage, num_blocks in enumerate(blocks):
            out = last_width if last_width and stage == len(blocks) - 1 else width * 2**stage
            stride = 1 if stage == 0 else 2  # (B, w, 32, 32) -> (B, 2w, 16, 16) -> ... -> (B, 8w, 4, 4)
            for i in range(num_blocks):
                s = stride if i == 0 else 1
                down = None
                if s != 1 or channels != out:
                    down = Shortcut(nn.Conv2d(channels, out, 1, stride=s, bias=False), nn.BatchNorm2d(out))
                layers.append(BasicBlock(channels, out, stride=s, downsample=down))
                channels = out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels
        self.to(memory_format=torch.channels_last)  # NHWC: about 1.5x faster convolutions on a CPU

    def forward(self, x):
        if x.shape[1] != self.in_channels:
            raise ValueError(f"this backbone was built for {self.in_channels}-channel images but got "
                             f"{x.shape[1]} channels; convert the images or build it with in_channels={x.shape[1]}")
        x = x.contiguous(memory_format=torch.channels_last)  # (B, C, H, W) stored as NHWC
        return self.pool(self.layers(self.stem(x))).flatten(1)  # (B, D)


def _resnet18_cifar(in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem and no classifier: (B, 3, H, W) -> (B, 512)."""
    model = resnet18(weights=None)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.feature_dim = 512
    return model


class TinyViT(nn.Module):
    """A small Vision Transformer (Dosovitskiy et al. 2021) whose features are the class token.

    torchvision's ``VisionTransformer`` does the work (``self.vit``); lightly's
    ``MaskedVisionTransformerTorchvision`` wraps it (``self.encoder``) so that MAE can feed it only
    the visible patches (``encoder.encode(x, idx_keep=...)``), and initialises it as MAE does
    (xavier-uniform linear layers, fixed 2-D sine-cosine position embeddings), the same for a
    network trained from scratch. ``forward`` is torchvision's forward without the classifier.

    Args:
        image_size: side of the square input images, in pixels; a multiple of ``patch_size``.
        patch_size: side of a patch; the image becomes (image_size / patch_size)**2 tokens.
        hidden_dim: width of every token (D, the feature dimension); a multiple of ``num_heads``.
        num_layers: number of transformer blocks.
        num_heads: attention heads per block.
        mlp_dim: hidden width of each block's MLP (None: 4 * hidden_dim, as in ViT-B).
        in_channels: channels of the input images (3 for RGB).
        pool: the feature: "cls" (the class token, as torchvision) or "mean" (the mean of the patch
            tokens, MAE's choice for fine-tuning: MAE trains the patch tokens, not the class token).
    Input: normalised images (B, in_channels, image_size, image_size). Output: (B, hidden_dim).

    >>> vit = TinyViT(image_size=32, patch_size=4, hidden_dim=48, num_layers=1, num_heads=2)
    >>> vit.grid_size, vit.num_patches, vit(torch.zeros(2, 3, 32, 32)).shape
    (8, 64, torch.Size([2, 48]))
    """

    def __init__(self, image_size: int = 32, patch_size: int = 4, hidden_dim: int = 128, num_layers: int = 4,
                 num_heads: int = 4, mlp_dim: int | None = None, in_channels: int = 3, pool: str = "cls"):
        super().__init__()
        from lightly.models.modules import MaskedVisionTransformerTorchvision

        if patch_size < 1 or image_size < patch_size or image_size % patch_size:
            divisors = [p for p in range(1, image_size + 1) if image_size % p == 0]
            sizes = [patch_size * k for k in range(max(1, image_size // patch_size - 2), image_size // patch_size + 3)]
            raise ValueError(f"image_size={image_size} is not a multiple of patch_size={patch_size}: images are "
                             f"cut into whole patches. With patch_size={patch_size} use image_size in "
                             f"{', '.join(map(str, sizes))}, ...; for {image_size} px images use a patch_size "
                             f"that divides it: {', '.join(map(str, divisors))}")
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} must be a multiple of num_heads={num_heads} (each head gets "
                             f"hidden_dim / num_heads dimensions); e.g. hidden_dim={num_heads * (hidden_dim // num_heads + 1)}")
        if pool not in ("cls", "mean"):
            raise ValueError(f"unknown pool {pool!r}; choose 'cls' (the class token) or 'mean' (mean of the patch tokens)")
        self.image_size, self.patch_size, self.in_channels, self.pool = image_size, patch_size, in_channels, pool
        self.grid_size = image_size // patch_size  # patches per side
        self.num_patches = self.grid_size ** 2  # tokens per image, without the class token
        vit = VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=num_layers,
                                num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim or 4 * hidden_dim)
        vit.heads = nn.Identity()  # no classifier: the class token is the feature
        if in_channels != 3:
            vit.conv_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=patch_size, stride=patch_size)
        self.encoder = MaskedVisionTransformerTorchvision(vit=vit)  # MAE's initialisation, masking support
        self.feature_dim = hidden_dim

    @property
    def vit(self) -> VisionTransformer:
        """The underlying torchvision ``VisionTransformer`` (its blocks: ``vit.encoder.layers``)."""
        return self.encoder.vit

    def check_input(self, x: torch.Tensor):
        """Raise a ValueError that says how to fix images this ViT was not built for."""
        if x.ndim != 4:
            raise ValueError(f"expected a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"this ViT was built for {self.in_channels}-channel images but got {x.shape[1]} "
                             f"channels; convert the images (e.g. grayscale to RGB) or build it with "
                             f"in_channels={x.shape[1]}")
        if x.shape[2] != self.image_size or x.shape[3] != self.image_size:
            raise ValueError(f"this ViT was built for {self.image_size}x{self.image_size} px images but got "
                             f"{x.shape[2]}x{x.shape[3]}; resize the images (load_dataset(..., image_size="
                             f"{self.image_size})) or build it with image_size={x.shape[2]} (a multiple of "
                             f"patch_size={self.patch_size})")

    def forward(self, x):
        tokens = self.tokens(x)  # (B, 1 + N, D) after the final LayerNorm
        return tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(1)  # (B, D)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All output tokens (B, 1 + num_patches, D), the class token first."""
        self.check_input(x)
        return self.encoder.encode(x)

    def cls_attention(self, x: torch.Tensor, per_head: bool = False) -> torch.Tensor:
        """Where the class token looks in the last block: attention maps over the patch grid.

        Runs the network once and re-runs the last block's attention on the same input with
        ``need_weights=True`` (torchvision's blocks skip the weights for speed). Each map is the
        class token's softmax row restricted to the patches, so a map sums to 1 minus the
        attention the class token pays to itself.

        Args:
            x: normalised images (B, C, image_size, image_size).
            per_head: True: one map per head (B, num_heads, h, w); False: their mean (B, h, w).

        >>> vit = TinyViT(hidden_dim=48, num_layers=2, num_heads=3)
        >>> vit.cls_attention(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 8, 8])
        """
        weights = self.last_attention(x)  # (B, heads, 1 + N, 1 + N)
        maps = weights[:, :, 0, 1:].reshape(len(x), -1, self.grid_size, self.grid_size)  # (B, heads, h, w)
        return maps if per_head else maps.mean(1)

    def last_attention(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's attention weights (B, num_heads, 1 + N, 1 + N); every row sums to 1."""
        self.check_input(x)
        block = self.vit.encoder.layers[-1]
        saved = {}
        handle = block.ln_1.register_forward_hook(lambda m, i, o: saved.__setitem__("y", o.detach()))
        try:
            with torch.no_grad():
                self.encoder.encode(x)
                y = saved["y"]  # (B, 1 + N, D): what the last attention layer attends over
                _, weights = block.self_attention(y, y, y, need_weights=True, average_attn_weights=False)
        finally:
            handle.remove()
        return weights


# name -> (constructor, default keyword arguments); width and blocks can be overridden
BACKBONES = {
    "resnet_tiny": (SmallResNet, {"width": 16, "blocks": (1, 1, 1, 1)}),  # ~0.3 M params, smoke tests
    "resnet_small": (SmallResNet, {"width": 32, "blocks": (1, 1, 1, 1)}),  # ~1.2 M params, CPU lessons
    "resnet18": (_resnet18_cifar, {}),  # 11 M params, the full profile on a GPU
    "vit_tiny": (TinyViT, {"image_size": 32, "patch_size": 4, "hidden_dim": 128, "num_layers": 4,
                           "num_heads": 4}),  # ~0.8 M params, 64 tokens of 4x4 px: MAE on a CPU
}


def check_backbone(name: str) -> None:
    """ValueError naming the choices when ``name`` is not one of ``BACKBONES`` (a Config, the shell and the
    benchmarks check with this before anything is built)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")


def make_backbone(name: str, **overrides) -> tuple[nn.Module, int]:
    """Build a backbone by name; returns ``(backbone, feature_dim)``.

    Args:
        name: one of ``BACKBONES`` ("resnet_tiny", "resnet_small", "resnet18", "vit_tiny").
        overrides: e.g. ``width=24`` or ``blocks=(2, 2, 2, 2)`` for the small ResNets;
            ``image_size``, ``patch_size``, ``hidden_dim``, ``num_layers``, ``num_heads`` for the ViT.
    """
    check_backbone(name)
    build, defaults = BACKBONES[name]
    model = build(**{**defaults, **overrides})
    return model, model.feature_dim


def backbone_arguments(cfg) -> dict:
    """Every argument ``make_backbone(cfg.backbone, ...)`` needs to rebuild the network a run trained: the knobs of
    ``backbone_overrides``, and the image size for a backbone that takes one (a ViT's position embeddings)."""
    import inspect

    arguments = backbone_overrides(cfg)
    if "image_size" in inspect.signature(BACKBONES[cfg.backbone][0]).parameters:
        arguments.setdefault("image_size", cfg.image_size)
    return arguments


def backbone_overrides(cfg) -> dict:
    """The knobs in ``cfg.extra`` that ``cfg.backbone``'s constructor takes (e.g. ``width``, ``last_width``):
    ``make_backbone(cfg.backbone, **backbone_overrides(cfg))`` builds a notebook's architecture.

    >>> import sslkit
    >>> backbone_overrides(sslkit.make_config("lesson", width=8, last_width=128, temperature=0.2))
    {'width': 8, 'last_width': 128}
    """
    import inspect

    check_backbone(cfg.backbone)
    names = set(inspect.signature(BACKBONES[cfg.backbone][0]).parameters)
    return {k: v for k, v in cfg.extra.items() if k in names}


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters.

    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

