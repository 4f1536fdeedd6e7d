"""The CIFAR-10 "ConvNet" of Deep Defense (Yan, Guo, Zhang, NeurIPS 2018, arXiv 1803.00404).

MatConvNet's CIFAR-10 LeNet-like network (``cifar10-convnet``), the reference model that DeepFool
(CVPR 2016, Table 1: 22.6% test error) and Deep Defense fine-tune, rebuilt as in the official
``ZiangYan/deepdefense.pytorch`` (``models/cifar10.py``): 5 convolutions and no fully connected layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_robust.models.normalize import InputSpec, Normalize, from_the_data, network_statistics
from lit_robust.validation import check_int


class ConvNet(nn.Module):
    """``conv5(3->32, pad 2) - maxpool2 - ReLU - conv5(32->32, pad 2) - ReLU - avgpool2 -
    conv5(32->64, pad 2) - ReLU - avgpool2 - conv4(64->64) - ReLU - conv1(64->num_classes)``.

    On 32 x 32 images the spatial sizes are 32 -> 16 -> 16 -> 8 -> 8 -> 4 -> 1, so the last 1 x 1
    convolution gives the logits directly. Note the max pooling *before* the first ReLU, as in
    the original. Weights start Kaiming-normal (fan-in) and biases at zero, as the official code.
    About 0.145 M parameters.

    It takes 32 x 32 images only: the 4 x 4 convolution must meet 4 x 4 maps for the last 1 x 1
    convolution to give one logit vector per image.

    Args:
        num_classes: number of output logits, >= 2; ``None``: from the data under ``lit-robust``, else 10.
        in_channels: image channels, >= 1; ``None``: from the data, else 3.
        mean, std: per-channel normalization statistics in pixel units; ``None``: the data's under
            ``lit-robust``, else 0 and 1 (the paper used MatConvNet contrast normalization and ZCA
            whitening, which we do not reproduce: see ``papers/deep_defense.md`` (d) 4).

    Raises:
        ValueError: in ``forward``, for images not of shape ``(in_channels, 32, 32)``, naming the network
            and the images' shape.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        in_channels: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
    ):
        super().__init__()
        num_classes = check_int("num_classes", 10 if num_classes is None else num_classes, 2)
        in_channels = check_int("in_channels", 3 if in_channels is None else in_channels, 1)
        self.input_spec = InputSpec(
            f"ConvNet(in_channels={in_channels})",
            in_channels,
            (32, 32),
            channels_hint=from_the_data("in_channels"),
            size_hint="ConvNet takes 32 x 32 images only (its 4 x 4 convolution must meet 4 x 4 maps): "
            "choose another network for other sizes",
        )
        self.normalize = Normalize(*network_statistics("ConvNet", mean, std, in_channels))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(64, 64, 4), nn.ReLU(),
            nn.Conv2d(64, num_classes, 1),
        )  # fmt: skip
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        self.input_spec.check(x)
        return self.features(self.normalize(x)).flatten(1)
