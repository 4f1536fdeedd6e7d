"""A seeded, learnable, tiny image classification task for tests, notebooks and smoke configs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import TensorDataset

from lit_robust.data.base import ImageDataModule
from lit_robust.validation import check_int, check_real


def make_synthetic(
    num_samples: int, prototypes: torch.Tensor, noise: float, generator: torch.Generator
) -> TensorDataset:
    """Images ``clamp(prototype[y] + noise * N(0, 1), 0, 1)`` with balanced random labels ``y``."""
    num_classes = prototypes.shape[0]
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=generator)]
    gaussian = torch.randn((num_samples, *prototypes.shape[1:]), generator=generator)
    images = (prototypes[labels] + noise * gaussian).clamp(0.0, 1.0)
    return TensorDataset(images, labels)


class SyntheticDataModule(ImageDataModule):
    """Each class is a fixed random image ("prototype") in [0, 1]; samples add Gaussian pixel noise.

    With the default noise a small network learns it to ~100% in a few epochs, and small
    perturbations already fool an undefended one, so it exercises training and attacks quickly.

    Args:
        num_classes: number of classes, >= 2.
        input_shape: (channels, height, width) of each image, integers >= 1.
        num_train, num_val, num_test: images per split: ``num_train`` >= 1, the others >= 0 (0: no
            validation or test split).
        noise: standard deviation of the pixel noise, in pixel units, finite, >= 0 (0: the prototypes
            themselves).
        batch_size, num_workers, seed: see :class:`ImageDataModule`.
    """

    mean = (0.5,)
    std = (0.3,)

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: Sequence[int] = (1, 28, 28),
        num_train: int = 512,
        num_val: int = 128,
        num_test: int = 128,
        noise: float = 0.3,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, seed)
        num_classes = check_int("num_classes", num_classes, 2)
        if isinstance(input_shape, str) or len(input_shape) != 3:
            raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
        shape = tuple(check_int(f"input_shape[{i}]", size, 1) for i, size in enumerate(input_shape))
        self.num_classes = num_classes  # type: ignore[misc]  # instance value shadows the default
        self.input_shape = shape  # type: ignore[misc]
        self.sizes = {
            "train": check_int("num_train", num_train, 1),
            "val": check_int("num_val", num_val, 0),
            "test": check_int("num_test", num_test, 0),
        }
        self.noise = check_real("noise", noise, 0)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        generator = torch.Generator().manual_seed(self.seed)
        prototypes = torch.rand((self.num_classes, *self.input_shape), generator=generator)
        self.train_set, self.val_set, self.test_set = (
            make_synthetic(n, prototypes, self.noise, generator) for n in self.sizes.values()
        )
