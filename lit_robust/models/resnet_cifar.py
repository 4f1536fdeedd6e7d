"""The 6n+2-layer CIFAR ResNets (ResNet-20, -32, -44, -56, -110) with 16-32-64 channels.

Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016, arXiv:1512.03385, Section 4.2. ResNet-20 and ResNet-56 are the backbones of the WNLL
defense (Wang et al., "Adversarial Defense via Data Dependent Activation Function and Total Variation
Minimization", arXiv:1809.08516); the local-flatness CIFAR-10 run uses ResNet-20.

Layout for 32x32 inputs, ``n = (depth - 2) / 6`` basic blocks per stage::

    Normalize
    conv3x3(16) - BN - ReLU                                        32x32
    stage1: n x BasicBlock(16)                                     32x32
    stage2: n x BasicBlock(32), the first with stride 2            16x16
    stage3: n x BasicBlock(64), the first with stride 2              8x8
    global average pool - Linear(64, num_classes)

``BasicBlock(c)``: ``relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x))`` (post-activation).
Where a block changes the shape (stride 2, channels doubled) the shortcut is, with ``shortcut="A"``
(default, the paper's CIFAR choice, no parameters: 0.27M for ResNet-20, 0.85M for ResNet-56), the
input subsampled by 2 and zero-padded with the new channels; with ``shortcut="B"`` a strided 1x1
convolution followed by BatchNorm, as in the official WNLL code (``BaoWangMath/DNN-DataDependentActivation``).
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
from lit_robust.validation import check_choice, check_int

SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: keep every ``stride``-th pixel and zero-pad the channels, half on each side.

    Args:
        in_channels: channels of the block input.
        out_channels: channels of the block output (>= ``in_channels``).
        stride: spatial subsampling factor.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad_front = (out_channels - in_channels) // 2
        self.pad_back = out_channels - in_channels - self.pad_front

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad_channels=({self.pad_front}, {self.pad_back})"


class BasicBlock(nn.Module):
    """``relu(BN(conv3x3(relu(BN(conv3x3(x, stride))))) + shortcut(x))``, convolutions without bias.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: stride of the first convolution (and of the shortcut).
        shortcut: ``"A"`` (zero padding) or ``"B"`` (1x1 convolution + BN), used only where the shape
            changes; elsewhere the shortcut is the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            if shortcut == "A":
                self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016) with ``depth = 6n + 2`` layers; layout in the module docstring.

    Convolutions use Kaiming-normal initialization (fan-out, as the WNLL code); BatchNorm starts at
    weight 1, bias 0; the Linear layer keeps PyTorch's default. No operation is in place, so layer
    inputs recorded by :class:`~lit_robust.models.taps.Taps` stay valid for double backprop.

    Any image size works (global average pooling); 32 x 32 is the design size.

    Args:
        depth: number of weighted layers, ``6n + 2`` with ``n >= 1`` (20, 32, 44, 56, 110, ...).
        num_classes: number of output logits, >= 2; ``None``: from the data under ``lit-robust``, else 10.
        mean, std: per-channel normalization statistics in pixel units; ``None``: the data's under
            ``lit-robust``, else CIFAR-10's.
        shortcut: ``"A"`` (zero-padded identity, parameter free, as in the paper) or ``"B"`` (1x1
            convolution + BN where the shape changes, as in the official WNLL code).
        in_channels: image channels, >= 1; ``None``: from the data, else 3.

    Raises:
        ValueError: in ``forward``, for images without ``in_channels`` channels, naming the network and
            the images' shape.
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        shortcut: str = "A",
        in_channels: int | None = None,
    ):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth!r}")
        num_classes = check_int("num_classes", 10 if num_classes is None else num_classes, 2)
        shortcut = check_choice("shortcut", shortcut, SHORTCUTS)
        in_channels = check_int("in_channels", 3 if in_channels is None else in_channels, 1)
        self.depth = depth
        blocks = (depth - 2) // 6
        name = f"{type(self).__name__}(in_channels={in_channels})"
        self.input_spec = InputSpec(name, in_channels, channels_hint=from_the_data("in_channels"))
        statistics = network_statistics(type(self).__name__, mean, std, in_channels, CIFAR10_STATISTICS)
        self.normalize = Normalize(*statistics)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.stage1 = _stage(16, 16, blocks, 1, shortcut)
        self.stage2 = _stage(16, 32, blocks, 2, shortcut)
        self.stage3 = _stage(32, 64, blocks, 2, shortcut)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        """The 64-dimensional pooled features that ``fc`` maps to logits, shape ``(B, 64)``."""
        self.input_spec.check(x)
        out = self.stem(self.normalize(x))
        return self.pool(self.stage3(self.stage2(self.stage1(out))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


class ResNet20(CifarResNet):
    """ResNet-20 (n = 3, 0.27M parameters with option A): ``CifarResNet(depth=20)``.

    Args:
        num_classes, mean, std, shortcut, in_channels: as :class:`CifarResNet`.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        shortcut: str = "A",
        in_channels: int | None = None,
    ):
        super().__init__(20, num_classes, mean, std, shortcut, in_channels)


class ResNet56(CifarResNet):
    """ResNet-56 (n = 9, 0.85M parameters with option A): ``CifarResNet(depth=56)``.

    Args:
        num_classes, mean, std, shortcut, in_channels: as :class:`CifarResNet`.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        shortcut: str = "A",
        in_channels: int | None = None,
    ):
        super().__init__(56, num_classes, mean, std, shortcut, in_channels)


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
    layers = [BasicBlock(in_channels, out_channels, stride, shortcut)]
    layers += [BasicBlock(out_channels, out_channels, 1, shortcut) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)
