"""Pre-activation ResNet-18 for CIFAR, as in the fast adversarial training code (64-128-256-512 channels).

Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun, "Identity Mappings in Deep Residual Networks",
ECCV 2016, arXiv:1603.05027. The CIFAR version here is the one of Wong, Rice, Kolter, "Fast is better
than free: Revisiting adversarial training", ICLR 2020, arXiv:2001.03994 (``locuslab/fast_adversarial``),
also used by Rice, Wong, Kolter, "Overfitting in adversarially robust deep learning", ICML 2020,
arXiv:2002.11569, and by RobustBench (``PreActBlock``): 11.17M parameters for 10 classes.

Layout for 32x32 inputs::

    Normalize
    conv3x3(64)                                                    32x32
    stage1: 2 x PreActBlock(64)                                    32x32
    stage2: 2 x PreActBlock(128), the first with stride 2          16x16
    stage3: 2 x PreActBlock(256), the first with stride 2            8x8
    stage4: 2 x PreActBlock(512), the first with stride 2            4x4
    BN - ReLU - global average pool - Linear(512, num_classes)

``PreActBlock(c)``: ``conv3x3(relu(BN(conv3x3(relu(BN(x)), stride)))) + shortcut(x)``, where the
shortcut is the identity or, where the shape changes, a strided 1x1 convolution. As in the locuslab
code (and unlike the identity-mappings paper and ``kuangliu/pytorch-cifar``), that 1x1 convolution
reads the block input ``x`` itself, not ``relu(BN(x))``. All convolutions are bias free and keep
PyTorch's default initialization, as the reference code does.
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
from lit_robust.validation import check_int


class PreActBlock(nn.Module):
    """``conv3x3(relu(BN(conv3x3(relu(BN(x)), stride)))) + shortcut(x)``.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: stride of the first convolution (and of the shortcut).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class PreActResNet(nn.Module):
    """Pre-activation ResNet with basic blocks and 64-128-256-512 channels; layout in the module docstring.

    No operation is in place, so layer inputs recorded by :class:`~lit_robust.models.taps.Taps` stay
    valid for double backprop.

    Args:
        num_blocks: basic blocks per stage, four entries; ``(2, 2, 2, 2)`` is PreAct ResNet-18,
            ``(3, 4, 6, 3)`` PreAct ResNet-34.
        num_classes: number of output logits, >= 2; ``None``: from the data under ``lit-robust``, else 10.
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
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        in_channels: int | None = None,
    ):
        super().__init__()
        num_blocks = tuple(num_blocks)
        if len(num_blocks) != 4 or any(type(n) is not int or n < 1 for n in num_blocks):  # bool refused
            raise ValueError(f"num_blocks must be four integers >= 1, got {num_blocks}")
        num_classes = check_int("num_classes", 10 if num_classes is None else num_classes, 2)
        in_channels = check_int("in_channels", 3 if in_channels is None else in_channels, 1)
        name = f"{type(self).__name__}(in_channels={in_channels})"
        self.input_spec = InputSpec(name, in_channels, channels_hint=from_the_data("in_channels"))
        statistics = network_statistics(type(self).__name__, mean, std, in_channels, CIFAR10_STATISTICS)
        self.normalize = Normalize(*statistics)
        self.stem = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.stage1 = _stage(64, 64, num_blocks[0], 1)
        self.stage2 = _stage(64, 128, num_blocks[1], 2)
        self.stage3 = _stage(128, 256, num_blocks[2], 2)
        self.stage4 = _stage(256, 512, num_blocks[3], 2)
        self.final_bn = nn.BatchNorm2d(512)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(512, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """The 512-dimensional pooled features that ``fc`` maps to logits, shape ``(B, 512)``."""
        self.input_spec.check(x)
        out = self.stem(self.normalize(x))
        out = self.stage4(self.stage3(self.stage2(self.stage1(out))))
        return self.pool(F.relu(self.final_bn(out)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


class PreActResNet18(PreActResNet):
    """PreAct ResNet-18 (11.17M parameters for 10 classes): ``PreActResNet(num_blocks=(2, 2, 2, 2))``.

    Args:
        num_classes, mean, std, in_channels: as :class:`PreActResNet`.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        in_channels: int | None = None,
    ):
        super().__init__((2, 2, 2, 2), num_classes, mean, std, in_channels)


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [PreActBlock(in_channels, out_channels, stride)]
    layers += [PreActBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)
