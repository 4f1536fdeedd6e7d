"""CIFAR10DataModule on tiny fake CIFAR-10 pickles in the real format, read by torchvision's real loader.

torchvision checks every file's MD5 against the official release; the ``fake_cifar`` fixture points
those class attributes at the fake files' MD5s, so the real integrity check and loader run unchanged.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets
from torchvision.datasets import cifar

from lit_robust.data.cifar10 import CIFAR10DataModule

PER_BATCH = 8
NUM_TRAIN = 5 * PER_BATCH
NUM_TEST = 12
VAL_SIZE = 8
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
ALL_FILES = [*TRAIN_FILES, "test_batch", "batches.meta"]
Arrays = tuple[np.ndarray, np.ndarray]  # images (n, 3072) uint8 and labels (n,)
LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_pickle(path: Path, entry: dict) -> str:
    """Pickles ``entry`` as the CIFAR release does (a dict, protocol 2); returns the file's MD5."""
    path.write_bytes(pickle.dumps(entry, protocol=2))
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_fake_cifar(data_dir: Path, seed: int = 1234) -> tuple[dict[str, str], Arrays, Arrays]:
    """Writes ``cifar-10-batches-py``: five training batches, a test batch and ``batches.meta``.

    Each batch holds ``data``, uint8 ``(n, 3072)`` rows of 1024 red, 1024 green then 1024 blue pixels
    (each channel row-major 32x32), and ``labels``, a list of ints. Returns the MD5 of every file
    and the training and test rows in file order.
    """
    rng = np.random.default_rng(seed)
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    md5s, rows = {}, {}
    for name, count in [*((name, PER_BATCH) for name in TRAIN_FILES), ("test_batch", NUM_TEST)]:
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count).tolist()
        entry = {
            "batch_label": name,
            "labels": labels,
            "data": data,
            "filenames": [f"{i}.png" for i in range(count)],
        }
        md5s[name] = write_pickle(folder / name, entry)
        rows[name] = (data, labels)
    meta = {"num_cases_per_batch": PER_BATCH, "label_names": LABEL_NAMES, "num_vis": 3072}
    md5s["batches.meta"] = write_pickle(folder / "batches.meta", meta)
    train = np.concatenate([rows[name][0] for name in TRAIN_FILES])
    train_labels = np.concatenate([rows[name][1] for name in TRAIN_FILES])
    test, test_labels = rows["test_batch"]
    return md5s, (train, train_labels), (test, np.array(test_labels))


def trust_md5s(monkeypatch, md5s: dict[str, str]) -> None:
    """Makes torchvision's CIFAR10 expect ``md5s`` instead of the official release's checksums."""
    monkeypatch.setattr(datasets.CIFAR10, "train_list", [[name, md5s[name]] for name in TRAIN_FILES])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", md5s["test_batch"]]])
    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": md5s["batches.meta"]})


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    """Fake CIFAR-10 under ``tmp_path`` that torchvision accepts; returns the folder and the arrays."""
    md5s, train, test = write_fake_cifar(tmp_path)
    trust_md5s(monkeypatch, md5s)
    return tmp_path, train, test


def make_datamodule(data_dir, **kwargs) -> CIFAR10DataModule:
    kwargs = {"val_size": VAL_SIZE, "batch_size": 5, **kwargs}
    return CIFAR10DataModule(data_dir=str(data_dir), **kwargs)


def as_image(row: np.ndarray) -> torch.Tensor:
    """One file row as the (3, 32, 32) float image in [0, 1] it must become."""
    return torch.from_numpy(row.reshape(3, 32, 32).astype(np.float32) / 255.0)


def assert_matches_file(dataset, indices, arrays: Arrays) -> None:
    rows, labels = arrays
    assert len(dataset) == len(indices)
    for position, index in enumerate(indices):
        image, label = dataset[position]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        torch.testing.assert_close(image, as_image(rows[index]), rtol=0, atol=1e-6)
        assert label == int(labels[index])


def test_reads_pickles_pixel_for_pixel_without_augmentation(fake_cifar):
    data_dir, train, test = fake_cifar
    datamodule = make_datamodule(data_dir, augment=False)
    datamodule.setup()
    assert len(datamodule.train_set) == NUM_TRAIN - VAL_SIZE
    assert len(datamodule.val_set) == VAL_SIZE
    assert len(datamodule.test_set) == NUM_TEST
    assert_matches_file(datamodule.train_set, datamodule.train_set.indices, train)
    assert_matches_file(datamodule.val_set, datamodule.val_set.indices, train)
    assert_matches_file(datamodule.test_set, range(NUM_TEST), test)


def test_attributes():
    assert CIFAR10DataModule.num_classes == 10
    assert CIFAR10DataModule.input_shape == (3, 32, 32)
    assert CIFAR10DataModule.mean == (0.4914, 0.4822, 0.4465)
    assert CIFAR10DataModule.std == (0.2471, 0.2435, 0.2616)


def test_pixel_range_is_scaled_not_normalized(tmp_path, monkeypatch):
    md5s, _, _ = write_fake_cifar(tmp_path)
    trust_md5s(monkeypatch, md5s)
    datamodule = make_datamodule(tmp_path, val_size=0, augment=False)
    datamodule.setup("fit")
    images = torch.stack([datamodule.train_set[i][0] for i in range(NUM_TRAIN)])
    assert images.min() == 0.0 and images.max() == 1.0  # 40 x 3072 random bytes hit both ends


def _crops_and_flips(image: torch.Tensor) -> torch.Tensor:
    """Every 32x32 crop of ``image`` zero-padded by 4, and its mirror: (162, 3, 32, 32)."""
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    crops = [padded[:, top : top + 32, left : left + 32] for top in range(9) for left in range(9)]
    crops = torch.stack(crops)
    return torch.cat([crops, crops.flip(-1)])


def test_augmentation_is_crop_and_flip_on_training_only(fake_cifar):
    data_dir, train, _ = fake_cifar
    datamodule = make_datamodule(data_dir, augment=True)
    datamodule.setup("fit")
    torch.manual_seed(0)
    changed = 0
    for position, index in enumerate(datamodule.train_set.indices[:6]):
        original = as_image(train[0][index])
        for _ in range(5):
            image, label = datamodule.train_set[position]
            assert image.shape == (3, 32, 32) and image.min() >= 0.0 and image.max() <= 1.0
            assert label == int(train[1][index])
            distances = (_crops_and_flips(original) - image).abs().flatten(1).amax(1)
            assert distances.min() < 1e-6  # one of the standard crops or flips, exactly
            changed += not torch.equal(image, original)
    assert changed >= 25  # 1 in 162 draws is the identity
    # Validation shares the same dataset object yet is never augmented.
    for position, index in enumerate(datamodule.val_set.indices):
        for _ in range(3):
            torch.testing.assert_close(
                datamodule.val_set[position][0], as_image(train[0][index]), rtol=0, atol=1e-6
            )


def test_test_split_is_never_augmented(fake_cifar):
    data_dir, _, test = fake_cifar
    datamodule = make_datamodule(data_dir, augment=True)
    datamodule.setup("test")
    assert datamodule.train_set is None and datamodule.val_set is None
    assert_matches_file(datamodule.test_set, range(NUM_TEST), test)


def test_train_and_val_partition_the_training_batches(fake_cifar):
    data_dir, _, _ = fake_cifar
    datamodule = make_datamodule(data_dir)
    datamodule.setup("fit")
    train, val = set(datamodule.train_set.indices), set(datamodule.val_set.indices)
    assert not train & val
    assert train | val == set(range(NUM_TRAIN))


def test_split_is_seeded_and_matches_random_split(fake_cifar):
    data_dir, _, _ = fake_cifar

    def split(seed):
        datamodule = make_datamodule(data_dir, seed=seed)
        datamodule.setup("fit")
        return list(datamodule.train_set.indices), list(datamodule.val_set.indices)

    assert split(0) == split(0)
    assert split(0) != split(1)
    reference = torch.utils.data.random_split(
        range(NUM_TRAIN), [NUM_TRAIN - VAL_SIZE, VAL_SIZE], generator=torch.Generator().manual_seed(3)
    )
    assert split(3) == tuple(list(part.indices) for part in reference)  # the same split as MNIST's


def test_dataloaders_yield_batches(fake_cifar):
    data_dir, _, test = fake_cifar
    datamodule = make_datamodule(data_dir, batch_size=5)
    datamodule.setup()
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (5,) and labels.dtype == torch.int64
    images, labels = next(iter(datamodule.test_dataloader()))
    assert labels.tolist() == test[1][:5].tolist()  # the test loader keeps the file order
    assert sum(len(y) for _, y in datamodule.val_dataloader()) == VAL_SIZE


@pytest.mark.parametrize("stage", [None, "fit", "test"])
def test_missing_data_names_folder_files_and_remedies(tmp_path, stage):
    datamodule = make_datamodule(tmp_path / "nowhere", download=False)
    with pytest.raises(FileNotFoundError) as info:
        datamodule.setup(stage)
    message = str(info.value)
    assert str((tmp_path / "nowhere" / "cifar-10-batches-py").resolve()) in message
    assert all(name in message for name in ALL_FILES)
    assert "download=True" in message and "cifar-10-python.tar.gz" in message
    assert not (tmp_path / "nowhere").exists()  # nothing written


@pytest.mark.parametrize("name", ALL_FILES)
def test_any_missing_file_is_reported(fake_cifar, name):
    data_dir, _, _ = fake_cifar
    (data_dir / "cifar-10-batches-py" / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing {name}\\)"):
        make_datamodule(data_dir).setup()


def test_files_that_fail_the_md5_check_are_named(tmp_path):
    write_fake_cifar(tmp_path)  # the official checksums stay: every fake file fails them
    with pytest.raises(RuntimeError, match="MD5") as info:
        make_datamodule(tmp_path).setup("fit")
    assert str((tmp_path / "cifar-10-batches-py").resolve()) in str(info.value)
    assert "data_batch_1" in str(info.value) and "download=True" in str(info.value)


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    datamodule = make_datamodule(tmp_path, download=True)
    with pytest.raises(FileNotFoundError, match="download failed.*network unreachable") as info:
        datamodule.prepare_data()
    assert str((tmp_path / "cifar-10-batches-py").resolve()) in str(info.value)
    assert "cifar-10-python.tar.gz" in str(info.value)


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        calls.append((url, Path(download_root), filename, md5))
        trust_md5s(monkeypatch, write_fake_cifar(Path(download_root))[0])  # "unpacks" the archive

    monkeypatch.setattr(cifar, "download_and_extract_archive", fake_download)
    datamodule = make_datamodule(tmp_path, download=True)
    datamodule.prepare_data()
    datamodule.prepare_data()  # the files are there now: no second download
    assert calls == [(datasets.CIFAR10.url, tmp_path, "cifar-10-python.tar.gz", datasets.CIFAR10.tgz_md5)]
    datamodule.setup()
    assert len(datamodule.train_set) == NUM_TRAIN - VAL_SIZE and len(datamodule.test_set) == NUM_TEST


def test_prepare_data_without_download_touches_nothing(tmp_path):
    make_datamodule(tmp_path, download=False).prepare_data()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"val_size": -1}, "val_size"),
        ({"val_size": 50000}, "val_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        CIFAR10DataModule(data_dir=str(tmp_path), **kwargs)


def test_val_size_bounds_are_inclusive_exclusive(tmp_path):
    assert CIFAR10DataModule(data_dir=str(tmp_path), val_size=0).val_size == 0
    assert CIFAR10DataModule(data_dir=str(tmp_path), val_size=49999).val_size == 49999


def test_val_size_larger_than_the_files_is_a_clear_error(fake_cifar):
    data_dir, _, _ = fake_cifar
    with pytest.raises(ValueError, match=rf"val_size must be in \[0, {NUM_TRAIN}\).*got 45"):
        make_datamodule(data_dir, val_size=45).setup("fit")
