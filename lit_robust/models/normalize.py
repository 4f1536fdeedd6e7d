"""Per-channel input normalization that lives *inside* the network.

Every DataModule yields images in [0, 1]; the network itself standardizes them. Attacks therefore
work in pixel space and every ``eps`` is in pixel units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lit_robust.validation import check_real

# per-channel statistics of the CIFAR-10 training images, pixel units: the CIFAR models' defaults
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


def check_statistics(name: str, value: Any, positive: bool = False) -> list[float]:
    """Per-channel statistics as floats: one number or a non-empty sequence of them, each finite, in
    [0, 1] (``positive=False``, a mean of [0, 1] pixels) or > 0 (``positive=True``, a std)."""
    value = value.tolist() if hasattr(value, "tolist") else value  # tensors, NumPy arrays and scalars
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"{name} must give at least one value, got {value!r}")
    bounds = dict(low=0, low_open=True) if positive else dict(low=0, high=1)
    names = [name] if len(values) == 1 else [f"{name}[{i}]" for i in range(len(values))]
    return [check_real(label, item, **bounds) for label, item in zip(names, values, strict=True)]


class Normalize(nn.Module):
    """``y = (x - mean) / std`` per channel, with ``mean`` and ``std`` stored as buffers.

    Args:
        mean: per-channel mean in pixel units, each in [0, 1]; one value is broadcast to every channel.
        std: per-channel standard deviation in pixel units, each finite and > 0.
    """

    def __init__(self, mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 1.0):
        super().__init__()
        mean_t = torch.tensor(check_statistics("mean", mean), dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.tensor(check_statistics("std", std, positive=True), dtype=torch.float32)
        std_t = std_t.reshape(1, -1, 1, 1)
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
