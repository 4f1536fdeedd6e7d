"""The 4-conv MNIST network of TRADES (Zhang et al., ICML 2019) and local flatness (Xu et al., 2020)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_robust.models.normalize import InputSpec, Normalize, from_the_data, network_statistics
from lit_robust.validation import check_int, check_real


class SmallCNN(nn.Module):
    """``conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc(num_classes)``, 3x3 convs, ReLU, no BN.

    As in the TRADES and local-flatness code, the last layer starts at zero and the convolutions use
    Kaiming-normal initialization. TRADES puts dropout 0.5 after the first fully connected layer;
    the local-flatness code does not, so ``dropout`` defaults to 0.

    Args:
        num_classes: number of output logits, >= 2; ``None``: from the data under ``lit-robust``, else 10.
        in_channels: image channels, >= 1; ``None``: from the data, else 1.
        input_size: image height = width in pixels, >= 16; ``None``: from the data, else 28.
        dropout: dropout probability after ``fc1``, in [0, 1) (TRADES: 0.5).
        mean, std: per-channel normalization statistics in pixel units; ``None``: the data's under
            ``lit-robust``, else 0 and 1 (no normalization). Written values win (GFA's 0.5, 0.5).
        zero_init_head: start the last layer at zero (TRADES, local flatness). Turn it off for GFA:
            with a zero head every layer's loss gradient is zero at the start, the alignment penalty
            dominates the first steps and training collapses to chance accuracy (measured:
            ``benchmarks/short_run_robustness.py``); off, PyTorch's default initialization.
        bias: give every Conv2d and Linear a bias (default, today's network and state-dict keys).
            ``False`` removes all seven biases: with no BatchNorm, ReLU, max-pool and a ``Normalize``
            whose mean is the input center ``c``, the logits are then positively homogeneous about
            ``c``: ``f(c + a (x - c)) = a f(x)`` for ``a > 0``, so moves along ``x - c`` keep the label,
            the premise of GFA (the GFA authors' own code uses ``bias=False`` everywhere; source:
            issue 14 / gfa.md §(i)). :class:`~lit_robust.models.BiasFreeCNN` is the authors' style.

    Raises:
        ValueError: in ``forward``, for images not of shape ``(in_channels, input_size, input_size)``,
            naming the network and the images' shape.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        in_channels: int | None = None,
        input_size: int | None = None,
        dropout: float = 0.0,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        zero_init_head: bool = True,
        bias: bool = True,
    ):
        super().__init__()
        num_classes = check_int("num_classes", 10 if num_classes is None else num_classes, 2)
        in_channels = check_int("in_channels", 1 if in_channels is None else in_channels, 1)
        # 16 -> 14 -> 12 -> 6 -> 4 -> 2 -> 1
        input_size = check_int("input_size", 28 if input_size is None else input_size, 16)
        dropout = check_real("dropout", dropout, 0, 1, high_open=True)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r} ({type(bias).__name__})")
        side = ((input_size - 4) // 2 - 4) // 2
        name = f"SmallCNN(in_channels={in_channels}, input_size={input_size})"
        hint = from_the_data("in_channels", "input_size")
        self.input_spec = InputSpec(
            name, in_channels, (input_size, input_size), channels_hint=hint, size_hint=hint
        )
        self.normalize = Normalize(*network_statistics("SmallCNN", mean, std, in_channels))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, bias=bias), nn.ReLU(),
            nn.Conv2d(32, 32, 3, bias=bias), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, bias=bias), nn.ReLU(),
            nn.Conv2d(64, 64, 3, bias=bias), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 200, bias=bias), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(200, 200, bias=bias), nn.ReLU(),
            nn.Linear(200, num_classes, bias=bias),
        )  # fmt: skip
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if bias:
                    nn.init.zeros_(module.bias)
        if zero_init_head:
            nn.init.zeros_(self.classifier[-1].weight)
            if bias:
                nn.init.zeros_(self.classifier[-1].bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The 200-dimensional activations (after the second ``fc200`` and ReLU) that the last layer maps
        to logits, shape ``(B, 200)``; the WNLL defense's backbone interface."""
        self.input_spec.check(x)
        return self.classifier[:-1](self.features(self.normalize(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier[-1](self.forward_features(x))
