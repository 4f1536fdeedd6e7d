"""The networks of Deep Defense (deep_defense.md (c)): the CIFAR ConvNet, the MNIST LeNet of MatConvNet/Caffe
(a LeNet option) and the MNIST MLP 784-500-150-10, checked layer by layer against the spec's layouts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_robust.models.convnet import ConvNet
from lit_robust.models.lenet import LeNet
from lit_robust.models.mlp import MLP
from lit_robust.models.normalize import Normalize


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_convnet_layout_shapes_and_size():
    net = ConvNet(mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])
    assert isinstance(net.normalize, Normalize)
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == [
        "Conv2d", "MaxPool2d", "ReLU", "Conv2d", "ReLU", "AvgPool2d", "Conv2d", "ReLU", "AvgPool2d", "Conv2d",
        "ReLU", "Conv2d",
    ]  # fmt: skip
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.padding[0]) for c in convs] == [
        (3, 32, 5, 2), (32, 32, 5, 2), (32, 64, 5, 2), (64, 64, 4, 0), (64, 10, 1, 0),
    ]  # fmt: skip
    assert all(c.bias.abs().sum() == 0 for c in convs)
    assert parameter_count(net) == 2432 + 25632 + 51264 + 65600 + 650
    assert net(torch.rand(3, 3, 32, 32)).shape == (3, 10)
    assert ConvNet(num_classes=7)(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_lenet_caffe_variant_of_deep_defense():
    net = LeNet(conv_channels=(20, 50), hidden=(500,), first_padding=0, conv_activation=False)
    assert [type(m).__name__ for m in net.features] == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d"]
    linears = [m for m in net.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(800, 500), (500, 10)]
    assert parameter_count(net) == 520 + 25050 + 400500 + 5010
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_lenet_defaults_are_unchanged_lenet5():
    net = LeNet()
    assert list(net.state_dict()) == [
        "normalize.mean", "normalize.std", "features.0.weight", "features.0.bias", "features.3.weight",
        "features.3.bias", "classifier.1.weight", "classifier.1.bias", "classifier.3.weight",
        "classifier.3.bias", "classifier.5.weight", "classifier.5.bias",
    ]  # fmt: skip
    assert parameter_count(net) == 61706
    assert LeNet(in_channels=3, input_size=32)(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="conv_channels"):
        LeNet(conv_channels=(6,))


def test_mlp_784_500_150_10():
    net = MLP(input_shape=(1, 28, 28), hidden=(500, 150))
    linears = [m for m in net.layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 500), (500, 150), (150, 10)]
    assert sum(isinstance(m, nn.ReLU) for m in net.layers) == 2
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
