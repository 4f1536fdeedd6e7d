"""Per-channel input normalization that lives *inside* the network, and the input contract of networks.

Every DataModule yields images in [0, 1]; the network itself standardizes them. Attacks therefore
work in pixel space and every ``eps`` is in pixel units.

Every network in :mod:`lit_robust.models` takes its input facts as arguments that default to ``None``:
``num_classes``, ``mean``, ``std`` and, where the architecture has them, ``in_channels`` and
``input_size`` (``MLP``: ``input_shape``). Under ``lit-robust`` every one left unset is filled from the
DataModule before the network is built (``lit_robust.cli.fill_network_arguments``); a value written
in YAML wins. In Python a ``None`` falls back to the documented default of each network
(:func:`network_statistics` for the statistics). Each network then checks its input at the start of
``forward`` (:class:`InputSpec`): a network that cannot take the data says so, naming itself and the
images' shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lit_robust.validation import check_int, check_real

# per-channel statistics of the CIFAR-10 training images, pixel units: the CIFAR models' defaults
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR10_STATISTICS = (CIFAR10_MEAN, CIFAR10_STD)


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


def network_statistics(
    network: str,
    mean: Any,
    std: Any,
    channels: int,
    default: tuple[Any, Any] = (0.0, 1.0),
) -> tuple[list[float], list[float]]:
    """The ``(mean, std)`` a network's :class:`Normalize` uses, as lists of floats.

    ``None`` means "not given": ``lit-robust`` fills it from the DataModule before the network is
    built (``lit_robust.cli.fill_network_arguments``); in Python it falls back to ``default``. Each
    statistic has one value (for every channel) or one per channel.

    Args:
        network: the network's name, for the messages (``"SmallCNN"``).
        mean: per-channel mean in pixel units, each in [0, 1], or ``None``.
        std: per-channel standard deviation in pixel units, each > 0, or ``None``.
        channels: the network's input channels.
        default: ``(mean, std)`` used for a ``None`` (no normalization unless the network says so).

    Raises:
        ValueError: a statistic with neither one value nor ``channels`` values, naming the network.
    """
    resolved = []
    for name, value, fallback in (("mean", mean, default[0]), ("std", std, default[1])):
        values = check_statistics(name, fallback if value is None else value, positive=name == "std")
        if len(values) not in (1, channels):
            where = f"the default {name} {values}" if value is None else f"{name}={values}"
            raise ValueError(
                f"{network} takes {channels}-channel images, but {where} has {len(values)} values: "
                f"give {name} as one value, or one per channel"
            )
        resolved.append(values)
    return resolved[0], resolved[1]


@dataclass(frozen=True)
class InputSpec:
    """The images a network takes; :meth:`check` runs at the start of its ``forward``.

    A network that cannot take the data fails there with a ``ValueError`` naming the network and the
    images' shape, instead of a convolution's shape error deep inside (``RobustClassifier`` probes the
    network with the data's ``input_shape`` at setup, so under ``lit-robust`` that is before any work).

    Args:
        network: the network and the arguments that fix its input, e.g.
            ``"SmallCNN(in_channels=1, input_size=28)"``.
        channels: input channels.
        size: exact ``(height, width)`` in pixels, or ``None`` for any size of at least ``min_size``.
        min_size: smallest height and width in pixels when ``size`` is ``None``.
        channels_hint: what to change when the channels differ, appended to the message.
        size_hint: what to change when the channels fit but the size does not.
    """

    network: str
    channels: int
    size: tuple[int, int] | None = None
    min_size: int = 1
    channels_hint: str = ""
    size_hint: str = ""

    def expected(self) -> str:
        """The shape of one image this network takes, e.g. ``"(1, 28, 28)"`` or ``"(3, H, W)"``."""
        if self.size is not None:
            return f"({self.channels}, {self.size[0]}, {self.size[1]})"
        side = f" with H, W >= {self.min_size}" if self.min_size > 1 else ""
        return f"({self.channels}, H, W){side}"

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether a batch of shape ``(B, C, H, W)`` fits."""
        if len(shape) != 4 or shape[1] != self.channels:
            return False
        if self.size is not None:
            return tuple(shape[2:]) == self.size
        return min(shape[2:]) >= self.min_size

    def check(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a batch of images this network takes."""
        if self.accepts(tuple(x.shape)):
            return
        if x.dim() != 4:
            got, hint = f"inputs of shape {tuple(x.shape)}, not a batch of images (B, C, H, W)", ""
        else:
            got = f"images of shape {tuple(x.shape[1:])} (a batch of shape {tuple(x.shape)})"
            hint = self.channels_hint if x.shape[1] != self.channels else self.size_hint
        hint = f". {hint[0].upper()}{hint[1:]}" if hint else ""
        raise ValueError(f"{self.network} cannot take {got}; it takes {self.expected()}{hint}")


def from_the_data(*arguments: str) -> str:
    """The :class:`InputSpec` hint of a network whose input is fixed by ``arguments``."""
    names = " and ".join(arguments)
    return (
        f"leave {names} unset (null) under lit-robust, which takes them from the data, or set them to match"
    )


def check_image_shape(
    input_shape: Sequence[int] | None, default: tuple[int, int, int] = (1, 28, 28)
) -> tuple[int, int, int]:
    """``input_shape`` as ``(channels, height, width)``, each an integer >= 1 (``None``: ``default``).

    Raises:
        ValueError: not three entries, or an entry that is not an integer >= 1 (named by its index).
    """
    input_shape = default if input_shape is None else input_shape
    if isinstance(input_shape, str) or len(input_shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    channels, height, width = (check_int(f"input_shape[{i}]", n, 1) for i, n in enumerate(input_shape))
    return channels, height, width
