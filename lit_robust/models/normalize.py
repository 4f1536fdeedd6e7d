"""Per-channel input normalization that lives *inside* the network.

Every DataModule yields images in [0, 1]; the network itself standardizes them. Attacks therefore
work in pixel space and every ``eps`` is in pixel units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

# per-channel statistics of the CIFAR-10 training images, pixel units: the CIFAR models' defaults
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class Normalize(nn.Module):
    """``y = (x - mean) / std`` per channel, with ``mean`` and ``std`` stored as buffers.

    Args:
        mean: per-channel mean in pixel units ([0, 1]); one value is broadcast to every channel.
        std: per-channel standard deviation in pixel units, all > 0.
    """

    def __init__(self, mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 1.0):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if (std_t <= 0).any():
            raise ValueError(f"std must be > 0 in every channel, got {std_t.flatten().tolist()}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return (x - self.mean) / self.std
        if self.mean.numel() == 1 and self.std.numel() == 1:  # one value for every entry
            return (x - self.mean.flatten()[0]) / self.std.flatten()[0]
        raise ValueError(
            f"Normalize with per-channel statistics expects (B, C, H, W) inputs, got shape {tuple(x.shape)}"
        )

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
