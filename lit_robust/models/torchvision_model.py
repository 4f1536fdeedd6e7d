"""Any torchvision classification model, by name, behind a :class:`Normalize` layer (ImageNet by default).

``TorchvisionModel("resnet50")`` is ``Normalize(mean, std)`` followed by
``torchvision.models.get_model("resnet50", weights=None, num_classes=num_classes)``: the layout is that
of torchvision's builder (see its documentation for each architecture's paper), randomly initialized.
Weights are never downloaded; to start from pretrained weights, load a state dict into ``.network``
yourself (torchvision's pretrained models expect ImageNet ``mean``/``std``, the defaults here).

torchvision builds many models with ``nn.ReLU(inplace=True)`` (and ``ReLU6``, ``Hardswish``, ...).
Defenses that record layer inputs with :class:`~lit_robust.models.taps.Taps` and differentiate
through them twice need those inputs to stay as recorded, so every submodule that has an ``inplace``
attribute gets ``inplace = False`` (:func:`disable_inplace`): no module can overwrite a recorded input
(the same function, a little more memory). In the models we checked (ResNet, DenseNet, VGG,
MobileNetV2, EfficientNet, RegNet, Inception, ...) the in-place modules only overwrite convolution or
batch-norm outputs anyway; the switch makes that hold for every model. In-place operations written
inside torchvision's ``forward`` methods (``out += identity`` in ResNet blocks, ``F.relu(x,
inplace=True)`` in Inception and DenseNet) cannot be switched off this way; in those models they too
act on batch-norm outputs, not on the recorded input of a ``Conv2d`` or ``Linear``.

Double backprop needs every operation to have a second derivative: PyTorch has none for
``hardsigmoid`` (2.x), so the MobileNetV3 models cannot be trained with double-backprop defenses.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import torchvision
from torch import Tensor, nn

from lit_robust.models.normalize import InputSpec, Normalize, network_statistics
from lit_robust.validation import check_int

# per-channel statistics of the ImageNet training images, pixel units: what torchvision's weights expect
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# Builders whose auxiliary classifiers would make the output a named tuple in training mode; they are
# switched off (and the current default initialization requested explicitly) unless given.
AUXILIARY_DEFAULTS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def classification_models() -> list[str]:
    """The names ``torchvision.models.get_model`` accepts for classification models, sorted."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def disable_inplace(module: nn.Module) -> list[str]:
    """Set ``inplace = False`` on every submodule of ``module`` that has that attribute set to True.

    Returns the qualified names of the submodules changed (``""`` for ``module`` itself).
    """
    changed = []
    for name, submodule in module.named_modules():
        if getattr(submodule, "inplace", False) is True:
            submodule.inplace = False
            changed.append(name)
    return changed


class TorchvisionModel(nn.Module):
    """``Normalize(mean, std)`` then a randomly initialized torchvision classifier, in-place ops off.

    The torchvision network is the submodule ``network`` (tap names read ``network.layer1.0.conv1``).
    Each architecture has its own input size constraints (e.g. ``inception_v3`` needs at least 75x75,
    the ViTs exactly their ``image_size``, 224 by default); every one takes 3-channel images, checked
    at the start of ``forward``.

    Args:
        name: a torchvision classification model (``torchvision.models.list_models(module=
            torchvision.models)``), case-insensitive, e.g. ``"resnet50"``, ``"vit_b_16"``.
        num_classes: number of output logits, >= 2; ``None``: from the data under ``lit-robust``, else
            1000.
        mean, std: per-channel normalization statistics in pixel units; ``None``: the data's under
            ``lit-robust``, else ImageNet's.
        model_kwargs: further keyword arguments of the torchvision builder (``dropout``,
            ``image_size``, ...); ``weights`` and ``num_classes`` are not allowed here. For
            ``googlenet`` and ``inception_v3``, ``aux_logits`` defaults to False (a single logits
            tensor) and ``init_weights`` to True.
    """

    def __init__(
        self,
        name: str = "resnet50",
        num_classes: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        num_classes = check_int("num_classes", 1000 if num_classes is None else num_classes, 2)
        available = classification_models()
        key = name.lower() if isinstance(name, str) else name
        if key not in available:
            close = difflib.get_close_matches(str(key), available, n=5, cutoff=0.5)
            raise ValueError(
                f"name must be a torchvision classification model, got {name!r}; "
                f"closest: {close}; available: {available}"
            )
        kwargs = dict(model_kwargs or {})
        forbidden = sorted({"weights", "num_classes"} & set(kwargs))
        if forbidden:
            raise ValueError(
                f"model_kwargs must not set {forbidden}: weights are never downloaded (load a state dict "
                f"into .network instead) and num_classes is its own argument"
            )
        kwargs = {**AUXILIARY_DEFAULTS.get(key, {}), **kwargs}
        self.name = key
        self.normalize = Normalize(*network_statistics(f"TorchvisionModel({key!r})", mean, std, 3, IMAGENET))
        self.network = torchvision.models.get_model(key, weights=None, num_classes=num_classes, **kwargs)
        self.inplace_disabled = disable_inplace(self.network)
        self.input_spec = InputSpec(
            f"TorchvisionModel({key!r})",
            3,
            channels_hint="torchvision's classification models take RGB images",
        )

    def forward(self, x: Tensor) -> Tensor:
        self.input_spec.check(x)
        return self.network(self.normalize(x))

    def extra_repr(self) -> str:
        return f"name={self.name!r}"
