"""The WNLL network and its template bank (Wang et al., "Adversarial Defense via Data Dependent Activation
Function and Total Variation Minimization", arXiv 1809.08516; spec ``shared/papers/wnll_tvm.md``).

* :class:`WNLLNetwork`: ``backbone -> buffer block -> linear head``, the softmax-stage classifier and the
  features ``h = β(φ(x))`` the WNLL interpolation compares;
* :class:`TemplateBank`: the clean, labelled training images the WNLL head interpolates from, drawn from
  any ``Dataset`` with a seed (no Lightning needed), with the per-step draws of stage B.

The chunked prediction against the templates is :mod:`lit_robust.models.wnll_head`; the training
schedule and the interpolation itself live in :mod:`lit_robust.defenses.wnll` and
:mod:`lit_robust.functional.wnll`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from lit_robust.validation import check_int, check_optional_int


def infer_feature_dim(backbone: nn.Module) -> int:
    """The width of the backbone's features, read from its last ``nn.Linear``.

    A backbone with ``forward_features`` (``SmallCNN``, ``ResNet20``, ``PreActResNet18``, ``VGG``,
    ``WideResNet``) feeds those features to its last linear layer: the width is that layer's
    ``in_features``. A backbone without it is used whole: the width is the last layer's ``out_features``.

    Raises:
        ValueError: the backbone has no ``nn.Linear`` (give ``feature_dim`` explicitly).
    """
    linears = [module for module in backbone.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(
            f"feature_dim: cannot infer the feature width of {type(backbone).__name__} (no nn.Linear); "
            "give feature_dim explicitly"
        )
    last = linears[-1]
    return last.in_features if callable(getattr(backbone, "forward_features", None)) else last.out_features


class WNLLNetwork(nn.Module):
    """``z = W_fc h + b_fc``, ``h = β(φ(x))``: backbone ``φ``, buffer block ``β``, linear head.

    ``φ(x)`` is ``backbone.forward_features(x)`` when the backbone has that method (the networks of
    :mod:`lit_robust.models`; their own last layer is then unused), else ``backbone(x)``; either way a
    ``(B, feature_dim)`` tensor. ``β`` is ``buffer_layers`` blocks of ``ReLU(Linear(d, d))``. The backbone
    starts with its own ``Normalize``: inputs are images in [0, 1].

    Args:
        backbone: the feature extractor ``φ``.
        feature_dim: ``d``, the width of ``φ(x)``, >= 1 (64 for the CIFAR ResNets, 200 for SmallCNN);
            ``None``: inferred from the backbone (:func:`infer_feature_dim`).
        num_classes: logits of the linear head, >= 2.
        buffer_layers: blocks in ``β``, >= 1 (spec: 1; the official natural-training code used 2).
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        num_classes: int = 10,
        buffer_layers: int = 1,
    ):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
        feature_dim = check_optional_int("feature_dim", feature_dim, 1)
        feature_dim = infer_feature_dim(backbone) if feature_dim is None else feature_dim
        num_classes = check_int("num_classes", num_classes, 2)
        buffer_layers = check_int("buffer_layers", buffer_layers, 1)
        self.feature_dim = feature_dim
        self.backbone = backbone
        blocks = [(nn.Linear(feature_dim, feature_dim), nn.ReLU()) for _ in range(buffer_layers)]
        self.buffer = nn.Sequential(*[layer for block in blocks for layer in block])
        self.head = nn.Linear(feature_dim, num_classes)

    @property
    def input_spec(self):  # the backbone's (lit_robust.models.normalize.InputSpec), for clear shape errors
        return getattr(self.backbone, "input_spec", None)

    def features(self, x: Tensor) -> Tensor:
        """``h = β(φ(x))``, shape ``(B, feature_dim)``."""
        extract = getattr(self.backbone, "forward_features", None)
        phi = extract(x) if callable(extract) else self.backbone(x)
        return self.buffer(phi.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        """Linear-head logits ``z``, shape ``(B, num_classes)``: the softmax-stage classifier."""
        return self.head(self.features(x))


def as_wnll_network(network: nn.Module, feature_dim: int | None = None, num_classes: int = 10) -> WNLLNetwork:
    """``network`` itself when it is a :class:`WNLLNetwork` (``feature_dim``, if given, must agree with
    its width), else the backbone ``network`` wrapped as ``WNLLNetwork(network, feature_dim, num_classes)``
    (``feature_dim`` >= 1, or ``None``: inferred, :func:`infer_feature_dim`)."""
    feature_dim = check_optional_int("feature_dim", feature_dim, 1)
    if isinstance(network, WNLLNetwork):
        if feature_dim is not None and feature_dim != network.feature_dim:
            raise ValueError(
                f"feature_dim={feature_dim} disagrees with the WNLLNetwork's {network.feature_dim}"
            )
        return network
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    return WNLLNetwork(network, feature_dim, num_classes)


class TemplateBank:
    """``num_templates`` labelled images of ``dataset``, chosen and read reproducibly from ``seed``.

    The indices are ``randperm(len(dataset))[:num_templates]`` from a generator seeded with ``seed``;
    the items are read under torch's global generator seeded with ``seed`` (inside ``fork_rng``: the
    caller's stream is untouched), so a dataset with random transforms still gives the same images.
    Give the *clean* training split (``ImageDataModule.clean_train_set()``: no augmentation). Images
    are kept on the CPU, as ``(N, C, H, W)`` tensors in [0, 1]; labels as ``(N,)`` int64.

    Args:
        dataset: any ``Dataset`` of ``(image, label)`` pairs.
        num_templates: how many, >= 1 (capped at ``len(dataset)``).
        seed: an integer >= 0.
    """

    def __init__(self, dataset: Dataset, num_templates: int, seed: int = 0):
        num_templates = check_int("num_templates", num_templates, 1)
        self.seed = check_int("seed", seed, 0)
        chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            items = [dataset[i] for i in chosen[:num_templates].tolist()]
        images = torch.stack([torch.as_tensor(image) for image, _ in items])
        self._set(images, torch.as_tensor([int(label) for _, label in items]))

    @classmethod
    def from_tensors(cls, images: Tensor, labels: Tensor, seed: int = 0) -> TemplateBank:
        """A bank of the given ``images`` ``(N, C, H, W)`` in [0, 1] and ``labels`` ``(N,)``."""
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"need as many labels as images (>= 1), got {len(images)} and {len(labels)}")
        bank = cls.__new__(cls)
        bank.seed = check_int("seed", seed, 0)
        bank._set(images, labels)
        return bank

    def _set(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images.detach().cpu(), labels.detach().cpu().long()

    def __len__(self) -> int:
        return len(self.images)

    def draw(self, count: int, step: int) -> tuple[Tensor, Tensor]:
        """``min(count, len(self))`` distinct templates for training step ``step``, seeded by
        ``seed + 1 + step``: the same step draws the same templates, resumed or not."""
        generator = torch.Generator().manual_seed(self.seed + 1 + step)
        chosen = torch.randperm(len(self), generator=generator)[: min(count, len(self))]
        return self.images[chosen], self.labels[chosen]


__all__ = ["TemplateBank", "WNLLNetwork", "as_wnll_network", "infer_feature_dim"]
