"""MNISTDataModule on tiny fake MNIST files written in the real IDX format (nothing is downloaded)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_robust.data import MNISTDataModule

NUM_TRAIN = 40
NUM_TEST = 12
VAL_SIZE = 8


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """IDX3: big-endian magic 2051, then count, rows, cols, then the uint8 pixels row-major."""
    count, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", 2051, count, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """IDX1: big-endian magic 2049, then count, then one uint8 per label."""
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path):
    """Writes the four uncompressed IDX files under ``tmp_path/MNIST/raw``; returns the arrays written."""
    rng = np.random.default_rng(1234)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, count in (("train", NUM_TRAIN), ("t10k", NUM_TEST)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the pixel range occur
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)
    return tmp_path, arrays


def make_datamodule(data_dir, **kwargs) -> MNISTDataModule:
    kwargs = {"val_size": VAL_SIZE, "batch_size": 5, **kwargs}
    return MNISTDataModule(data_dir=str(data_dir), **kwargs)


def assert_matches_file(dataset, indices, images: np.ndarray, labels: np.ndarray) -> None:
    assert len(dataset) == len(indices)
    for position, index in enumerate(indices):
        image, label = dataset[position]
        assert image.shape == (1, 28, 28)
        assert image.dtype == torch.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        expected = torch.from_numpy(images[index].astype(np.float32) / 255.0).unsqueeze(0)
        torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)
        assert label == int(labels[index])


def test_reads_idx_files_pixel_for_pixel(fake_mnist):
    data_dir, arrays = fake_mnist
    datamodule = make_datamodule(data_dir)
    datamodule.setup()
    train_images, train_labels = arrays["train"]
    test_images, test_labels = arrays["t10k"]

    assert len(datamodule.train_set) == NUM_TRAIN - VAL_SIZE
    assert len(datamodule.val_set) == VAL_SIZE
    assert len(datamodule.test_set) == NUM_TEST

    assert_matches_file(datamodule.train_set, datamodule.train_set.indices, train_images, train_labels)
    assert_matches_file(datamodule.val_set, datamodule.val_set.indices, train_images, train_labels)
    assert_matches_file(datamodule.test_set, range(NUM_TEST), test_images, test_labels)


def test_pixel_range_is_scaled_not_normalized(fake_mnist):
    data_dir, _ = fake_mnist
    datamodule = make_datamodule(data_dir, val_size=0)
    datamodule.setup("fit")
    images = torch.stack([datamodule.train_set[i][0] for i in range(NUM_TRAIN)])
    assert images.min() == 0.0
    assert images.max() == 1.0


def test_train_and_val_partition_the_training_file(fake_mnist):
    data_dir, _ = fake_mnist
    datamodule = make_datamodule(data_dir)
    datamodule.setup("fit")
    train, val = set(datamodule.train_set.indices), set(datamodule.val_set.indices)
    assert not train & val
    assert train | val == set(range(NUM_TRAIN))


def test_split_is_seeded(fake_mnist):
    data_dir, _ = fake_mnist

    def split(seed):
        datamodule = make_datamodule(data_dir, seed=seed)
        datamodule.setup("fit")
        return list(datamodule.train_set.indices), list(datamodule.val_set.indices)

    assert split(0) == split(0)
    assert split(0) != split(1)


def test_stages_create_only_their_splits(fake_mnist):
    data_dir, _ = fake_mnist
    datamodule = make_datamodule(data_dir)
    datamodule.setup("test")
    assert datamodule.train_set is None and datamodule.val_set is None
    assert len(datamodule.test_set) == NUM_TEST
    with pytest.raises(RuntimeError, match="setup"):
        datamodule.train_dataloader()
    datamodule.setup("fit")
    assert len(datamodule.train_set) == NUM_TRAIN - VAL_SIZE


def test_dataloaders_yield_batches(fake_mnist):
    data_dir, arrays = fake_mnist
    datamodule = make_datamodule(data_dir, batch_size=5)
    datamodule.setup()
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (5, 1, 28, 28) and labels.shape == (5,)
    assert labels.dtype == torch.int64
    # The test loader keeps the file order.
    images, labels = next(iter(datamodule.test_dataloader()))
    assert labels.tolist() == arrays["t10k"][1][:5].tolist()
    assert sum(len(y) for _, y in datamodule.val_dataloader()) == VAL_SIZE


def test_prepare_data_without_download_touches_nothing(tmp_path):
    make_datamodule(tmp_path, download=False).prepare_data()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", [None, "fit", "test"])
def test_missing_files_name_the_folder_and_download(tmp_path, stage):
    datamodule = make_datamodule(tmp_path, download=False)
    with pytest.raises(FileNotFoundError) as info:
        datamodule.setup(stage)
    message = str(info.value)
    assert str((tmp_path / "MNIST" / "raw").resolve()) in message
    assert "download" in message


@pytest.mark.parametrize(
    "name",
    [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ],
)
def test_any_missing_file_is_reported(fake_mnist, name):
    data_dir, _ = fake_mnist
    (data_dir / "MNIST" / "raw" / name).unlink()
    with pytest.raises(FileNotFoundError, match="download"):
        make_datamodule(data_dir).setup()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"val_size": -1}, "val_size"),
        ({"val_size": 60000}, "val_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -3}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        MNISTDataModule(data_dir=str(tmp_path), **kwargs)


def test_val_size_bounds_are_inclusive_exclusive(tmp_path):
    assert MNISTDataModule(data_dir=str(tmp_path), val_size=0).val_size == 0
    assert MNISTDataModule(data_dir=str(tmp_path), val_size=59999).val_size == 59999
