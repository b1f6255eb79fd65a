"""Backbones: shapes of the features, names, errors, and the NHWC speed-up changing nothing."""

import pytest
import torch

from sslkit.models import BACKBONES, SmallResNet, count_parameters, make_backbone


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_maps_images_to_features_of_its_dim(name):
    torch.manual_seed(0)
    backbone, dim = make_backbone(name)
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, dim)
    assert torch.isfinite(out).all()


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(ValueError) as e:
        make_backbone("resnet_huge")
    for name in BACKBONES:
        assert name in str(e.value)


def test_overrides_change_width_and_depth():
    backbone, dim = make_backbone("resnet_tiny", width=8, blocks=(2, 1, 1, 1))
    assert dim == 64
    assert count_parameters(backbone) < count_parameters(make_backbone("resnet_tiny")[0])


def test_wrong_channel_count_says_how_to_fix():
    backbone, _ = make_backbone("resnet_tiny")
    with pytest.raises(ValueError, match="in_channels=1"):
        backbone(torch.zeros(1, 1, 32, 32))


def test_channels_last_gives_the_same_features_as_the_usual_layout():
    torch.manual_seed(0)
    nhwc = SmallResNet(width=8).eval()
    nchw = SmallResNet(width=8).eval()
    nchw.load_state_dict(nhwc.state_dict())
    nchw.to(memory_format=torch.contiguous_format)
    assert nhwc.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = nchw.layers(nchw.stem(x)).mean((2, 3))  # NCHW all the way
        assert torch.allclose(nhwc(x), reference, atol=1e-5)


def test_features_do_not_depend_on_image_size_of_the_pool():
    backbone, dim = make_backbone("resnet_tiny")
    with torch.no_grad():
        assert backbone.eval()(torch.zeros(1, 3, 10, 10)).shape == (1, dim)  # a 10 px jigsaw tile works too
