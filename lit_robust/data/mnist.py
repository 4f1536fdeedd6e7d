"""MNIST through torchvision (LeCun et al., 1998): 60,000 training and 10,000 test digits, 28x28."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import random_split
from torchvision import datasets, transforms

from lit_robust.data.base import ImageDataModule, require_files
from lit_robust.validation import check_int

NUM_TRAIN = 60000


class MNISTDataModule(ImageDataModule):
    """torchvision MNIST under ``data_dir`` (files in ``data_dir/MNIST/raw``), pixels in [0, 1].

    The 60,000 training images are split, with ``seed``, into ``60,000 - val_size`` for training and
    ``val_size`` for validation; ``test`` is the official 10,000-image test set.

    Args:
        data_dir: folder that holds (or will hold) ``MNIST/raw``.
        download: fetch the files if they are missing.
        val_size: training images held out for validation, an integer in [0, 60,000).
        batch_size, num_workers, seed: see :class:`ImageDataModule`.
    """

    num_classes = 10
    mean = (0.1307,)
    std = (0.3081,)
    input_shape = (1, 28, 28)

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        val_size: int = 5000,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, seed)
        self.val_size = check_int("val_size", val_size, 0, NUM_TRAIN - 1)
        self.data_dir = data_dir
        self.download = download

    def _raw_folder(self) -> Path:
        return Path(self.data_dir).resolve() / "MNIST" / "raw"

    def _dataset(self, train: bool) -> datasets.MNIST:
        names = [Path(url).stem for url, _ in datasets.MNIST.resources]  # the uncompressed IDX names
        require_files(
            "MNIST",
            self._raw_folder(),
            names,
            download=(lambda: datasets.MNIST(self.data_dir, train=train, download=True))
            if self.download
            else None,
            how="copy the four uncompressed IDX files there by hand, or use MNISTSampleDataModule for the "
            "embedded 5,000-digit sample",
        )
        return datasets.MNIST(self.data_dir, train=train, transform=transforms.ToTensor())

    def prepare_data(self) -> None:
        if self.download:
            self._dataset(train=True)
            self._dataset(train=False)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            full = self._dataset(train=True)
            generator = torch.Generator().manual_seed(self.seed)
            self.train_set, self.val_set = random_split(
                full, [len(full) - self.val_size, self.val_size], generator=generator
            )
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = self._dataset(train=False)
