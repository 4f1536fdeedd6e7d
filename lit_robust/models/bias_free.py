"""Bias-free, BatchNorm-free networks in the style of the GFA authors (Lin et al., arXiv 2511.13749).

The GFA paper's networks are unknown (gfa.md §(c)), but the same authors' public code (GitHub
``Developer2046/Convolutional-Restricted-Hopfield-Network``, ``rhn.py`` / ``crhn.py``) uses
``bias=False`` on every convolution and linear layer, tanh or LeakyReLU(0.1), orthogonal
initialization, Adam and inputs in [-1, 1] (source: issue 14 / gfa.md §(i)). These two networks follow
those habits; their layer sizes are ours.

Why it matters for GFA: with no bias, no BatchNorm, a positively homogeneous activation (ReLU,
LeakyReLU), max-pooling and a leading ``Normalize(mean=c, std)``, the logits are positively
homogeneous about the input center ``c``::

    f(c + a (x - c)) = a f(x)   for every a > 0

so a move along ``x - c`` (a contrast change about ``c``) never changes the predicted label; GFA's
premise, that aligning the gradient with the feature makes the loss flat where it matters, assumes
exactly such a radial direction is label-preserving. With tanh the network is *not* homogeneous (tanh
is odd but not positively homogeneous); it is offered because the authors use it too.
"""

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
from lit_robust.validation import check_choice, check_int

ACTIVATIONS = ("leaky_relu", "relu", "tanh")
INITS = ("orthogonal", "default")
LEAKY_SLOPE = 0.1  # the authors' LeakyReLU(0.1) (source: issue 14 / gfa.md §(i))


def activation_layer(activation: str) -> nn.Module:
    """A fresh ``LeakyReLU(0.1)``, ``ReLU`` or ``Tanh`` (never in place: GFA taps layer inputs)."""
    if activation == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    if activation == "relu":
        return nn.ReLU()
    if activation == "tanh":
        return nn.Tanh()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def check_style(activation: str, init: str) -> tuple[str, str]:
    """The checked ``activation`` and ``init`` arguments of the bias-free networks."""
    return check_choice("activation", activation, ACTIVATIONS), check_choice("init", init, INITS)


def initialize(network: nn.Module, init: str) -> None:
    """``"orthogonal"``: every Conv2d / Linear weight a (semi-)orthogonal matrix, gain 1, a convolution's
    weight seen as ``(out_channels, in_channels * k * k)`` (``torch.nn.init.orthogonal_``): rows
    orthonormal when it is wide, columns when it is tall. ``"default"``: PyTorch's own initialization."""
    if init == "default":
        return
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(module.weight)


class BiasFreeCNN(nn.Module):
    """``conv32-conv32-pool-conv64-conv64-pool-fc256-fc(num_classes)``, 3x3 convs without padding,
    max-pool 2, no bias anywhere, no BatchNorm, in the GFA authors' style (source: issue 14 / gfa.md §(i)).

    ``z = W_6 s(W_5 flat(P s(W_4 * s(W_3 * P s(W_2 * s(W_1 * n(x)))))))`` with ``n(x) = (x - mean) / std``,
    ``s`` the activation and ``P`` 2x2 max-pooling. With ReLU or LeakyReLU it is positively homogeneous
    about ``mean``: ``f(mean + a (x - mean)) = a f(x)`` for ``a > 0`` (module docstring); with tanh it is
    not. Feed it the authors' [-1, 1] inputs with ``mean: [0.5]``, ``std: [0.5]``.

    Args:
        num_classes: number of output logits, >= 2; ``None``: from the data under ``lit-robust``, else 10.
        in_channels: image channels, >= 1; ``None``: from the data, else 3.
        input_size: image height = width in pixels, >= 16; ``None``: from the data, else 32.
        mean, std: per-channel normalization statistics in pixel units; ``None``: the data's under
            ``lit-robust``, else 0 and 1 (no normalization). Written values win (GFA's 0.5, 0.5).
        activation: ``"leaky_relu"`` (default, slope 0.1, homogeneous), ``"relu"`` (homogeneous) or
            ``"tanh"`` (not homogeneous); the authors use tanh or LeakyReLU(0.1).
        init: ``"orthogonal"`` (default, the authors' choice, gain 1) or ``"default"`` (PyTorch's).

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
        activation: str = "leaky_relu",
        init: str = "orthogonal",
    ):
        super().__init__()
        num_classes = check_int("num_classes", 10 if num_classes is None else num_classes, 2)
        in_channels = check_int("in_channels", 3 if in_channels is None else in_channels, 1)
        # 16 -> 14 -> 12 -> 6 -> 4 -> 2 -> 1
        input_size = check_int("input_size", 32 if input_size is None else input_size, 16)
        activation, init = check_style(activation, init)
        side = ((input_size - 4) // 2 - 4) // 2
        name = f"BiasFreeCNN(in_channels={in_channels}, input_size={input_size})"
        hint = from_the_data("in_channels", "input_size")
        self.input_spec = InputSpec(
            name, in_channels, (input_size, input_size), channels_hint=hint, size_hint=hint
        )
        self.normalize = Normalize(*network_statistics("BiasFreeCNN", mean, std, in_channels))
        act = activation_layer
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, bias=False), act(activation),
            nn.Conv2d(32, 32, 3, bias=False), act(activation),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, bias=False), act(activation),
            nn.Conv2d(64, 64, 3, bias=False), act(activation),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 256, bias=False), act(activation),
            nn.Linear(256, num_classes, bias=False),
        )  # fmt: skip
        initialize(self, init)

    def forward(self, x: Tensor) -> Tensor:
        self.input_spec.check(x)
        return self.classifier(self.features(self.normalize(x)))


class BiasFreeMLP(nn.Module):
    """``Normalize -> Flatten -> [Linear(bias=False) -> activation] * len(hidden) -> Linear(bias=False)``,
    no BatchNorm, in the GFA authors' style (source: issue 14 / gfa.md §(i); their paper's Fashion-MNIST
    network is an MLP of unknown widths, ours 512-256).

    ``z = W_L s(... s(W_1 flat(n(x))))`` with ``n(x) = (x - mean) / std``; with ReLU or LeakyReLU it is
    positively homogeneous about ``mean``: ``f(mean + a (x - mean)) = a f(x)`` for ``a > 0``; with tanh
    it is not.

    Args:
        num_classes: number of output logits, >= 2; ``None``: from the data under ``lit-robust``, else 10.
        input_shape: (channels, height, width) of one image, integers >= 1; ``None``: from the data,
            else ``(1, 28, 28)``.
        hidden: widths of the hidden layers, integers >= 1 (none: a linear classifier).
        mean, std: per-channel normalization statistics in pixel units; ``None``: the data's under
            ``lit-robust``, else 0 and 1 (no normalization).
        activation: ``"leaky_relu"`` (default, slope 0.1, homogeneous), ``"relu"`` (homogeneous) or
            ``"tanh"`` (not homogeneous).
        init: ``"orthogonal"`` (default, the authors' choice, gain 1) or ``"default"`` (PyTorch's).

    Raises:
        ValueError: in ``forward``, for images not of shape ``input_shape``, naming the network and
            the images' shape.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
        hidden: Sequence[int] = (512, 256),
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        activation: str = "leaky_relu",
        init: str = "orthogonal",
    ):
        super().__init__()
        num_classes = check_int("num_classes", 10 if num_classes is None else num_classes, 2)
        channels, height, width = check_image_shape(input_shape)
        widths = [check_int(f"hidden[{i}]", width, 1) for i, width in enumerate(hidden)]
        activation, init = check_style(activation, init)
        in_features = channels * height * width
        name = f"BiasFreeMLP(input_shape={[channels, height, width]})"
        hint = from_the_data("input_shape")
        self.input_spec = InputSpec(name, channels, (height, width), channels_hint=hint, size_hint=hint)
        statistics = network_statistics("BiasFreeMLP", mean, std, channels)
        layers: list[nn.Module] = [Normalize(*statistics), nn.Flatten()]
        for width in widths:
            layers += [nn.Linear(in_features, width, bias=False), activation_layer(activation)]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes, bias=False))
        self.layers = nn.Sequential(*layers)
        initialize(self, init)

    def forward(self, x: Tensor) -> Tensor:
        self.input_spec.check(x)
        return self.layers(x)
