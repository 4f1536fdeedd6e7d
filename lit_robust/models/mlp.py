"""Multi-layer perceptron for small images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_robust.models.normalize import Normalize


class MLP(nn.Module):
    """``Normalize -> Flatten -> [Linear -> ReLU] * len(hidden) -> Linear``.

    Args:
        num_classes: number of output logits.
        input_shape: (channels, height, width) of one image.
        hidden: widths of the hidden layers.
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
        in_features = 1
        for size in input_shape:
            in_features *= int(size)
        layers: list[nn.Module] = [Normalize(mean, std), nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
