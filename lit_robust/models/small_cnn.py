"""The 4-conv MNIST network of TRADES (Zhang et al., ICML 2019) and local flatness (Xu et al., 2020)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_robust.models.normalize import Normalize
from lit_robust.validation import check_int, check_real


class SmallCNN(nn.Module):
    """``conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc(num_classes)``, 3x3 convs, ReLU, no BN.

    As in the TRADES and local-flatness code, the last layer starts at zero and the convolutions use
    Kaiming-normal initialization. TRADES puts dropout 0.5 after the first fully connected layer;
    the local-flatness code does not, so ``dropout`` defaults to 0.

    Args:
        num_classes: number of output logits, >= 2.
        in_channels: image channels, >= 1 (1 for MNIST, 3 for CIFAR-10).
        input_size: image height = width in pixels, >= 16 (28 for MNIST, 32 for CIFAR-10).
        dropout: dropout probability after ``fc1``, in [0, 1) (TRADES: 0.5).
        mean, std: per-channel normalization statistics in pixel units.
        zero_init_head: start the last layer at zero (TRADES, local flatness). Turn it off for GFA:
            with a zero head every layer's loss gradient is zero at the start, the alignment penalty
            dominates the first steps and training collapses to chance accuracy (measured:
            ``benchmarks/short_run_robustness.py``); off, PyTorch's default initialization.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        dropout: float = 0.0,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        zero_init_head: bool = True,
    ):
        super().__init__()
        num_classes = check_int("num_classes", num_classes, 2)
        in_channels = check_int("in_channels", in_channels, 1)
        input_size = check_int("input_size", input_size, 16)  # 16 -> 14 -> 12 -> 6 -> 4 -> 2 -> 1
        dropout = check_real("dropout", dropout, 0, 1, high_open=True)
        side = ((input_size - 4) // 2 - 4) // 2
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 32, 3), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.Conv2d(64, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 200), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, num_classes),
        )  # fmt: skip
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        if zero_init_head:
            nn.init.zeros_(self.classifier[-1].weight)
            nn.init.zeros_(self.classifier[-1].bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The 200-dimensional activations (after the second ``fc200`` and ReLU) that the last layer maps
        to logits, shape ``(B, 200)``; the WNLL defense's backbone interface."""
        return self.classifier[:-1](self.features(self.normalize(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier[-1](self.forward_features(x))
