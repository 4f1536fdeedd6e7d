"""Multi-layer perceptron for small images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_robust.models.normalize import Normalize
from lit_robust.validation import check_int


class MLP(nn.Module):
    """``Normalize -> Flatten -> [Linear -> ReLU] * len(hidden) -> Linear``.

    Args:
        num_classes: number of output logits, >= 2.
        input_shape: (channels, height, width) of one image, integers >= 1.
        hidden: widths of the hidden layers, integers >= 1 (none: a linear classifier).
        mean, std: per-channel normalization statistics in pixel units.
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: Sequence[int] = (1, 28, 28),
        hidden: Sequence[int] = (256, 256),
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
    ):
        super().__init__()
        num_classes = check_int("num_classes", num_classes, 2)
        in_features = 1
        for i, size in enumerate(input_shape):
            in_features *= check_int(f"input_shape[{i}]", size, 1)
        layers: list[nn.Module] = [Normalize(mean, std), nn.Flatten()]
        for i, width in enumerate(hidden):
            width = check_int(f"hidden[{i}]", width, 1)
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
