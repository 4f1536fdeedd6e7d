"""Multi-layer perceptron for small images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_robust.models.normalize import (
    InputSpec,
    Normalize,
    check_image_shape,
    from_the_data,
    network_statistics,
)
from lit_robust.validation import check_int


class MLP(nn.Module):
    """``Normalize -> Flatten -> [Linear -> ReLU] * len(hidden) -> Linear``.

    Args:
        num_classes: number of output logits, >= 2; ``None``: from the data under ``lit-robust``, else 10.
        input_shape: (channels, height, width) of one image, integers >= 1; ``None``: from the data,
            else ``(1, 28, 28)``.
        hidden: widths of the hidden layers, integers >= 1 (none: a linear classifier).
        mean, std: per-channel normalization statistics in pixel units; ``None``: the data's under
            ``lit-robust``, else 0 and 1 (no normalization).

    Raises:
        ValueError: in ``forward``, for images not of shape ``input_shape``, naming the network and
            the images' shape.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
        hidden: Sequence[int] = (256, 256),
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
    ):
        super().__init__()
        num_classes = check_int("num_classes", 10 if num_classes is None else num_classes, 2)
        channels, height, width = check_image_shape(input_shape)
        in_features = channels * height * width
        name = f"MLP(input_shape={[channels, height, width]})"
        hint = from_the_data("input_shape")
        self.input_spec = InputSpec(name, channels, (height, width), channels_hint=hint, size_hint=hint)
        layers: list[nn.Module] = [Normalize(*network_statistics("MLP", mean, std, channels)), nn.Flatten()]
        for i, width in enumerate(hidden):
            width = check_int(f"hidden[{i}]", width, 1)
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        self.input_spec.check(x)
        return self.layers(x)
