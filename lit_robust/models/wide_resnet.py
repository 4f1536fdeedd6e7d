"""Wide ResNets for CIFAR, WRN-34-10 by default, as in the TRADES and Madry et al. CIFAR-10 models.

Sergey Zagoruyko, Nikos Komodakis, "Wide Residual Networks", BMVC 2016, arXiv:1605.07146. The
PyTorch version here follows the TRADES code (Zhang et al., "Theoretically Principled Trade-off between
Robustness and Accuracy", ICML 2019, arXiv:1901.08573, ``yaodongyu/TRADES``), the WRN-34-10 that later
work uses for the CIFAR-10 network of Madry et al., "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018, arXiv:1706.06083 (16-160-320-640 channels, 5 blocks per stage; their
TensorFlow original differs in details such as its shortcuts): 46.16M parameters.

Layout for 32x32 inputs, ``k = widen_factor``, ``n = (depth - 4) / 6`` blocks per stage::

    Normalize
    conv3x3(16)                                                    32x32
    stage1: n x WideBasicBlock(16k)                                32x32
    stage2: n x WideBasicBlock(32k), the first with stride 2       16x16
    stage3: n x WideBasicBlock(64k), the first with stride 2         8x8
    BN - ReLU - global average pool - Linear(64k, num_classes)

``WideBasicBlock(c)``: ``a = relu(BN(x))``; ``conv3x3(dropout(relu(BN(conv3x3(a, stride))))) +
shortcut``, with shortcut ``x`` where the shape is kept and a strided 1x1 convolution of ``a`` (the
pre-activated input, as in the TRADES code) where it changes. Convolutions are bias free.

The TRADES code also builds a ``sub_block1`` that its forward pass never uses; it is left out here
(its parameters would never get a gradient), so the parameter count is that of the network that runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lit_robust.models.normalize import (
    CIFAR10_STATISTICS,
    InputSpec,
    Normalize,
    from_the_data,
    network_statistics,
)
from lit_robust.validation import check_int, check_real


class WideBasicBlock(nn.Module):
    """Pre-activation block ``conv3x3(dropout(relu(BN(conv3x3(relu(BN(x)), stride))))) + shortcut``.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: stride of the first convolution (and of the shortcut).
        dropout: dropout probability between the two convolutions.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(activated)))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` (default WRN-34-10); layout in the module docstring.

    Initialization as the TRADES code: Kaiming-normal convolutions (fan-out), BatchNorm weight 1 and
    bias 0, Linear bias 0. No operation is in place, so layer inputs recorded by
    :class:`~lit_robust.models.taps.Taps` stay valid for double backprop.

    Args:
        depth: number of weighted layers, ``6n + 4`` with ``n >= 1`` (16, 28, 34, 70, ...).
        widen_factor: channel multiplier ``k`` >= 1 (10 for WRN-34-10).
        num_classes: number of output logits, >= 2; ``None``: from the data under ``lit-robust``, else 10.
        dropout: dropout probability inside every block, in [0, 1) (TRADES and Madry et al.: 0).
        mean, std: per-channel normalization statistics in pixel units; ``None``: the data's under
            ``lit-robust``, else CIFAR-10's.
        in_channels: image channels, >= 1; ``None``: from the data, else 3.

    Any image size works (global average pooling); 32 x 32 is the design size.

    Raises:
        ValueError: in ``forward``, for images without ``in_channels`` channels, naming the network and
            the images' shape.
    """

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int | None = None,
        dropout: float = 0.0,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        in_channels: int | None = None,
    ):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (16, 28, 34, 70, ...), got {depth!r}")
        if isinstance(widen_factor, bool) or not isinstance(widen_factor, int) or widen_factor < 1:
            raise ValueError(f"widen_factor must be an integer >= 1, got {widen_factor!r}")
        num_classes = check_int("num_classes", 10 if num_classes is None else num_classes, 2)
        dropout = check_real("dropout", dropout, 0, 1, high_open=True)
        in_channels = check_int("in_channels", 3 if in_channels is None else in_channels, 1)
        self.depth = depth
        self.widen_factor = widen_factor
        blocks = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        name = f"WideResNet(depth={depth}, widen_factor={widen_factor}, in_channels={in_channels})"
        self.input_spec = InputSpec(name, in_channels, channels_hint=from_the_data("in_channels"))
        self.normalize = Normalize(
            *network_statistics("WideResNet", mean, std, in_channels, CIFAR10_STATISTICS)
        )
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.stage1 = _stage(16, widths[0], blocks, 1, dropout)
        self.stage2 = _stage(widths[0], widths[1], blocks, 2, dropout)
        self.stage3 = _stage(widths[1], widths[2], blocks, 2, dropout)
        self.final_bn = nn.BatchNorm2d(widths[2])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(widths[2], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The ``64 * widen_factor``-dimensional pooled features that ``fc`` maps to logits."""
        self.input_spec.check(x)
        out = self.stem(self.normalize(x))
        out = self.stage3(self.stage2(self.stage1(out)))
        return self.pool(F.relu(self.final_bn(out)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int, dropout: float) -> nn.Sequential:
    layers = [WideBasicBlock(in_channels, out_channels, stride, dropout)]
    layers += [WideBasicBlock(out_channels, out_channels, 1, dropout) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)
