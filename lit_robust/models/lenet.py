"""LeNet-5 (LeCun et al., 1998) with ReLU and max pooling, for 28x28 or 32x32 images, and its
Caffe / MatConvNet variant (the MNIST "LeNet" of DeepFool and Deep Defense) through options."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_robust.models.normalize import InputSpec, Normalize, from_the_data, network_statistics
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
        num_classes: number of output logits, >= 2; ``None``: from the data under ``lit-robust``, else 10.
        in_channels: image channels, >= 1; ``None``: from the data, else 1.
        input_size: image height = width in pixels (28 or 32), at least 16 - 2 ``first_padding``;
            ``None``: from the data, else 28.
        mean, std: per-channel normalization statistics in pixel units; ``None``: the data's under
            ``lit-robust``, else 0 and 1 (no normalization).
        conv_channels: output channels of the two 5 x 5 convolutions, integers >= 1.
        hidden: widths of the hidden fully connected layers (each followed by ReLU), integers >= 1.
        first_padding: zero padding of the first convolution, in pixels, >= 0.
        conv_activation: ReLU after each convolution.

    Raises:
        ValueError: in ``forward``, for images not of shape ``(in_channels, input_size, input_size)``,
            naming the network and the images' shape.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        in_channels: int | None = None,
        input_size: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        conv_channels: Sequence[int] = (6, 16),
        hidden: Sequence[int] = (120, 84),
        first_padding: int = 2,
        conv_activation: bool = True,
    ):
        super().__init__()
        num_classes = check_int("num_classes", 10 if num_classes is None else num_classes, 2)
        in_channels = check_int("in_channels", 1 if in_channels is None else in_channels, 1)
        input_size = check_int("input_size", 28 if input_size is None else input_size, 1)
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
        name = f"LeNet(in_channels={in_channels}, input_size={input_size})"
        hint = from_the_data("in_channels", "input_size")
        self.input_spec = InputSpec(
            name, in_channels, (input_size, input_size), channels_hint=hint, size_hint=hint
        )
        self.normalize = Normalize(*network_statistics("LeNet", mean, std, in_channels))
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
        self.input_spec.check(x)
        return self.classifier(self.features(self.normalize(x)))
