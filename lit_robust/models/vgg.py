"""VGG-11/13/16/19 with BatchNorm for 32x32 CIFAR images and a single ``Linear(512, num_classes)`` head.

Karen Simonyan, Andrew Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, arXiv:1409.1556 (configurations A, B, D, E), with BatchNorm (Ioffe & Szegedy,
ICML 2015) after every convolution. The CIFAR variant is the common one of ``kuangliu/pytorch-cifar``,
the networks the flow-gradient regularization code (Xia & Li, arXiv:2008.12997) trains: the
convolutional part is exactly that of torchvision's ``vgg*_bn`` and the three 4096-wide fully connected
layers are replaced by one ``Linear(512, num_classes)`` (VGG-16: 14.7M parameters for 10 classes).

Layout (``c`` = a 3x3 convolution with ``c`` channels, padding 1, with bias, then BN and ReLU;
``M`` = 2x2 max pooling)::

    Normalize
    VGG-11: 64 M 128 M 256 256 M 512 512 M 512 512 M
    VGG-13: 64 64 M 128 128 M 256 256 M 512 512 M 512 512 M
    VGG-16: 64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M
    VGG-19: 64 64 M 128 128 M 256 256 256 256 M 512 512 512 512 M 512 512 512 512 M
    global average pool - Linear(512, num_classes)

A 32x32 image is 1x1 after the fifth pooling, so the global average pool only flattens it (as the
reference code's ``AvgPool2d(1)`` + ``view``); larger images also work. The name counts the original
three fully connected layers: VGG-16 here has 13 convolutions and one Linear layer. PyTorch's default
initialization is kept, as in the reference code. The convolutions keep their biases (as the reference
code and torchvision), although the BatchNorm that follows cancels them in training mode: their
gradient is zero up to rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_robust.models.normalize import (
    CIFAR10_STATISTICS,
    InputSpec,
    Normalize,
    from_the_data,
    network_statistics,
)
from lit_robust.validation import check_int

# Channels of each 3x3 convolution, "M" for 2x2 max pooling (Simonyan & Zisserman, Table 1).
CONFIGS: dict[int, str] = {
    11: "64 M 128 M 256 256 M 512 512 M 512 512 M",
    13: "64 64 M 128 128 M 256 256 M 512 512 M 512 512 M",
    16: "64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M",
    19: "64 64 M 128 128 M 256 256 256 256 M 512 512 512 512 M 512 512 512 512 M",
}
MIN_SIZE = 32  # pixels: five 2x2 max poolings leave 1x1 maps


class VGG(nn.Module):
    """CIFAR VGG with BatchNorm of depth 11, 13, 16 or 19; layout in the module docstring.

    In YAML either ``class_path: lit_robust.models.VGG`` with ``init_args: {depth: 16}`` or the fixed
    depth classes :class:`VGG11`, :class:`VGG13`, :class:`VGG16`, :class:`VGG19`. No operation is in
    place, so layer inputs recorded by :class:`~lit_robust.models.taps.Taps` stay valid for double
    backprop.

    Args:
        depth: number of weighted layers: 11, 13, 16 or 19.
        num_classes: number of output logits, >= 2; ``None``: from the data under ``lit-robust``, else 10.
        mean, std: per-channel normalization statistics in pixel units; ``None``: the data's under
            ``lit-robust``, else CIFAR-10's.
        in_channels: image channels, >= 1; ``None``: from the data, else 3.

    Images must be at least 32 x 32 (five 2 x 2 poolings); larger ones are averaged at the end.

    Raises:
        ValueError: in ``forward``, for images without ``in_channels`` channels or smaller than 32 x 32,
            naming the network and the images' shape.
    """

    def __init__(
        self,
        depth: int = 16,
        num_classes: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        in_channels: int | None = None,
    ):
        super().__init__()
        if check_int("depth", depth) not in CONFIGS:
            raise ValueError(f"depth must be one of {sorted(CONFIGS)}, got {depth!r}")
        num_classes = check_int("num_classes", 10 if num_classes is None else num_classes, 2)
        in_channels = check_int("in_channels", 3 if in_channels is None else in_channels, 1)
        self.depth = depth
        self.input_spec = InputSpec(
            f"{type(self).__name__}(depth={depth}, in_channels={in_channels})",
            in_channels,
            min_size=MIN_SIZE,
            channels_hint=from_the_data("in_channels"),
            size_hint=f"its five 2 x 2 poolings need at least {MIN_SIZE} x {MIN_SIZE} pixels: choose another "
            "network (e.g. ResNet20) for smaller images",
        )
        statistics = network_statistics(type(self).__name__, mean, std, in_channels, CIFAR10_STATISTICS)
        self.normalize = Normalize(*statistics)
        layers: list[nn.Module] = []
        for item in CONFIGS[depth].split():
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                width = int(item)
                layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                in_channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(512, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """The 512-dimensional pooled features that ``fc`` maps to logits, shape ``(B, 512)``."""
        self.input_spec.check(x)
        return self.pool(self.features(self.normalize(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


class VGG11(VGG):
    """VGG-11 with BatchNorm (configuration A): ``VGG(depth=11)``.

    Args:
        num_classes, mean, std, in_channels: as :class:`VGG`.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        in_channels: int | None = None,
    ):
        super().__init__(11, num_classes, mean, std, in_channels)


class VGG13(VGG):
    """VGG-13 with BatchNorm (configuration B): ``VGG(depth=13)``.

    Args:
        num_classes, mean, std, in_channels: as :class:`VGG`.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        in_channels: int | None = None,
    ):
        super().__init__(13, num_classes, mean, std, in_channels)


class VGG16(VGG):
    """VGG-16 with BatchNorm (configuration D, 14.7M parameters for 10 classes): ``VGG(depth=16)``.

    Args:
        num_classes, mean, std, in_channels: as :class:`VGG`.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        in_channels: int | None = None,
    ):
        super().__init__(16, num_classes, mean, std, in_channels)


class VGG19(VGG):
    """VGG-19 with BatchNorm (configuration E): ``VGG(depth=19)``.

    Args:
        num_classes, mean, std, in_channels: as :class:`VGG`.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        in_channels: int | None = None,
    ):
        super().__init__(19, num_classes, mean, std, in_channels)
