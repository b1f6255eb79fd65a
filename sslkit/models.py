"""Backbones: the networks that turn an image into a feature vector.

Every backbone maps images (B, 3, H, W) to features (B, D) and is built by name with
``make_backbone``, which also returns D. The ResNets use a CIFAR-style stem (a 3x3 conv with
stride 1 and no max-pool): the ImageNet stem (7x7 conv, stride 2, max-pool) throws away most
of a 32 px image in its first two layers, which costs a large part of the accuracy on small
images (lightly issue #1419).

>>> backbone, dim = make_backbone("resnet_tiny")
>>> backbone(torch.zeros(2, 3, 32, 32)).shape == (2, dim)
True
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock


class SmallResNet(nn.Module):
    """A ResNet for small images: CIFAR stem, four stages of torchvision ``BasicBlock``s.

    Args:
        width: channels of the first stage; the stages have width, 2*width, 4*width, 8*width.
        blocks: number of residual blocks in each of the four stages.
        in_channels: channels of the input images (3 for RGB).
    Output: (B, 8 * width) features after global average pooling.
    """

    def __init__(self, width: int = 32, blocks=(1, 1, 1, 1), in_channels: int = 3):
        super().__init__()
        self.in_channels = in_channels
        self.stem = nn.Sequential(  # CIFAR stem: keeps the full 32x32 resolution
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers, channels = [], width
        for stage, num_blocks in enumerate(blocks):
            out = width * 2**stage
            stride = 1 if stage == 0 else 2  # (B, w, 32, 32) -> (B, 2w, 16, 16) -> ... -> (B, 8w, 4, 4)
            for i in range(num_blocks):
                s = stride if i == 0 else 1
                down = None
                if s != 1 or channels != out:
                    down = nn.Sequential(nn.Conv2d(channels, out, 1, stride=s, bias=False), nn.BatchNorm2d(out))
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


# name -> (constructor, default keyword arguments); width and blocks can be overridden
BACKBONES = {
    "resnet_tiny": (SmallResNet, {"width": 16, "blocks": (1, 1, 1, 1)}),  # ~0.3 M params, smoke tests
    "resnet_small": (SmallResNet, {"width": 32, "blocks": (1, 1, 1, 1)}),  # ~1.2 M params, CPU lessons
    "resnet18": (_resnet18_cifar, {}),  # 11 M params, the full profile on a GPU
}


def make_backbone(name: str, **overrides) -> tuple[nn.Module, int]:
    """Build a backbone by name; returns ``(backbone, feature_dim)``.

    Args:
        name: one of ``BACKBONES`` ("resnet_tiny", "resnet_small", "resnet18").
        overrides: e.g. ``width=24`` or ``blocks=(2, 2, 2, 2)`` for the small ResNets.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    build, defaults = BACKBONES[name]
    model = build(**{**defaults, **overrides})
    return model, model.feature_dim


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters.

    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

