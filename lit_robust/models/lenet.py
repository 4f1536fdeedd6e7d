"""LeNet-5 (LeCun et al., 1998) with ReLU and max pooling, for 28x28 or 32x32 images, and its
Caffe / MatConvNet variant (the MNIST "LeNet" of DeepFool and Deep Defense) through options."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_robust.models.normalize import Normalize
from lit_robust.validation import check_int


class LeNet(nn.Module):
    """``conv(c1, 5, pad p) - [ReLU] - pool - conv(c2, 5) - [ReLU] - pool - [fc - ReLU] * len(hidden) -
    fc(num_classes)``, max pooling 2 x 2.

    The defaults are LeNet-5 with ReLU (``conv6(pad 2) - pool - conv16 - pool - fc120 - fc84``).
    The MNIST LeNet of MatConvNet / Caffe that DeepFool and Deep Defense (Yan et al., NeurIPS 2018)
    fine-tune has no activation after its convolutions and one hidden layer:
    ``LeNet(conv_channels=(20, 50), hidden=(500,), first_padding=0, conv_activation=False)``
    (``conv5(1->20) - maxpool2 - conv5(20->50) - maxpool2 - fc800->500 - ReLU - fc500->10``).

    Args:
        num_classes: number of output logits, >= 2.
        in_channels: image channels, >= 1 (1 for MNIST, 3 for CIFAR-10).
        input_size: image height = width in pixels (28 or 32); at least 16 - 2 ``first_padding``.
        mean, std: per-channel normalization statistics in pixel units.
        conv_channels: output channels of the two 5 x 5 convolutions, integers >= 1.
        hidden: widths of the hidden fully connected layers (each followed by ReLU), integers >= 1.
        first_padding: zero padding of the first convolution, in pixels, >= 0.
        conv_activation: ReLU after each convolution.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        conv_channels: Sequence[int] = (6, 16),
        hidden: Sequence[int] = (120, 84),
        first_padding: int = 2,
        conv_activation: bool = True,
    ):
        super().__init__()
        num_classes = check_int("num_classes", num_classes, 2)
        in_channels = check_int("in_channels", in_channels, 1)
        input_size = check_int("input_size", input_size, 1)
        first_padding = check_int("first_padding", first_padding, 0)
        if isinstance(conv_channels, str) or len(conv_channels) != 2:
            raise ValueError(f"conv_channels must give the two convolutions' widths, got {conv_channels!r}")
        c1, c2 = (check_int(f"conv_channels[{i}]", c, 1) for i, c in enumerate(conv_channels))
        hidden = [check_int(f"hidden[{i}]", size, 1) for i, size in enumerate(hidden)]
        side = ((input_size + 2 * first_padding - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(
                f"input_size={input_size} with first_padding={first_padding} is too small for LeNet"
            )
        self.normalize = Normalize(mean, std)
        activation = [nn.ReLU()] if conv_activation else []
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=first_padding), *activation, nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), *([nn.ReLU()] if conv_activation else []), nn.MaxPool2d(2),
        )  # fmt: skip
        layers: list[nn.Module] = [nn.Flatten()]
        width = c2 * side * side
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.normalize(x)))
