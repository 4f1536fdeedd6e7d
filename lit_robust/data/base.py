"""Shared plumbing of the image DataModules: loaders, seeds and the dataset facts a model needs."""

from __future__ import annotations

from typing import ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


class ImageDataModule(L.LightningDataModule):
    """Base of every lit_robust DataModule. Images are float tensors in [0, 1], never normalized.

    Subclasses set ``num_classes``, ``mean``, ``std`` and ``input_shape`` and fill ``train_set``,
    ``val_set`` and ``test_set`` in :meth:`setup`. ``predict`` uses the test set.

    Args:
        batch_size: images per batch, > 0.
        num_workers: DataLoader worker processes, >= 0.
        seed: seeds the train/validation split and anything random in the data.
    """

    num_classes: ClassVar[int] = 10
    mean: ClassVar[tuple[float, ...]] = (0.0,)
    std: ClassVar[tuple[float, ...]] = (1.0,)
    input_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)

    def __init__(self, batch_size: int = 128, num_workers: int = 0, seed: int = 0):
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not created this split yet")
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            generator=generator,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
