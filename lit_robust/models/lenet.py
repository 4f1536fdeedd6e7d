"""LeNet-5 (LeCun et al., 1998) with ReLU and max pooling, for 28x28 or 32x32 images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_robust.models.normalize import Normalize


class LeNet(nn.Module):
    """``conv6(5, pad 2) - pool - conv16(5) - pool - fc120 - fc84 - fc(num_classes)``, ReLU.

    Args:
        num_classes: number of output logits.
        in_channels: image channels (1 for MNIST, 3 for CIFAR-10).
        input_size: image height = width in pixels (28 or 32).
        mean, std: per-channel normalization statistics in pixel units.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
    ):
        super().__init__()
        side = ((input_size // 2) - 4) // 2
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.normalize(x)))
