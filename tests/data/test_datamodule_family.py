"""Invariants every DataModule in ``lit_robust.data.__all__`` must keep (DESIGN.md, section 4).

Each runs on tiny files in its real on-disk format (the writers of ``test_mnist.py``, ``test_cifar10.py`` and
``test_imagenet.py``; the embedded MNIST sample; synthetic data) and yields float images in [0, 1] of its
``input_shape``, int64 labels below its ``num_classes``, ``mean`` and ``std`` for its channels (one value per
channel, or one for all); a new training order every epoch but the same validation and test batches every
time; a seeded split.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import lit_robust.data as data_module
from lit_robust.data import (
    CIFAR10DataModule,
    ImageDataModule,
    ImageNetDataModule,
    MNISTDataModule,
    MNISTSampleDataModule,
    SyntheticDataModule,
)
from tests.data import test_cifar10, test_imagenet, test_mnist

Factory = Callable[..., ImageDataModule]  # (data_dir, seed) -> a DataModule, not set up


def write_mnist(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", test_mnist.NUM_TRAIN), ("t10k", test_mnist.NUM_TEST)):
        test_mnist.write_idx_images(
            raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28))
        )
        test_mnist.write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, count))


def write_imagenet(root: Path) -> None:
    for split, count in (("train", test_imagenet.TRAIN_PER_CLASS), ("val", test_imagenet.TEST_PER_CLASS)):
        for label, wnid in enumerate(test_imagenet.WNIDS):
            (root / split / wnid).mkdir(parents=True)
            for index in range(count):
                color = test_imagenet.file_color(label, index, split)
                test_imagenet.write_image(root / split / wnid / f"{wnid}_{index}.png", color)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """One folder with fake MNIST, CIFAR-10 and ImageNet files (written once), and the CIFAR files' MD5s."""
    root = tmp_path_factory.mktemp("family")
    write_mnist(root)
    write_imagenet(root / "imagenet")
    md5s, _, _ = test_cifar10.write_fake_cifar(root)
    return root, md5s


DATAMODULES: dict[type, Factory] = {
    MNISTDataModule: lambda root, seed: test_mnist.make_datamodule(root, seed=seed),
    CIFAR10DataModule: lambda root, seed: test_cifar10.make_datamodule(root, seed=seed),
    ImageNetDataModule: lambda root, seed: test_imagenet.make_datamodule(root / "imagenet", seed=seed),
    MNISTSampleDataModule: lambda root, seed: MNISTSampleDataModule(batch_size=500, seed=seed),
    SyntheticDataModule: lambda root, seed: SyntheticDataModule(
        num_classes=3, input_shape=(2, 5, 5), num_train=20, num_val=8, num_test=8, batch_size=6, seed=seed
    ),
}
SPLIT_BY_SEED = {MNISTDataModule, CIFAR10DataModule, ImageNetDataModule, SyntheticDataModule}
FAMILY = pytest.mark.parametrize("cls", list(DATAMODULES), ids=lambda cls: cls.__name__)


@pytest.fixture
def make(files, monkeypatch) -> Callable[[type, int], ImageDataModule]:
    """Builds and sets up a DataModule of the family on the fake files (torchvision trusts the fake CIFAR)."""
    root, md5s = files
    test_cifar10.trust_md5s(monkeypatch, md5s)

    def build(cls: type, seed: int = 0) -> ImageDataModule:
        datamodule = DATAMODULES[cls](root, seed)
        assert type(datamodule) is cls
        datamodule.setup()
        return datamodule

    return build


def batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Every batch of ``loader``, concatenated: (images, labels)."""
    images, labels = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels)


def test_every_exported_datamodule_is_covered():
    """Every concrete DataModule exported is in ``DATAMODULES``; ``ImageDataModule`` is their base."""
    exported = (getattr(data_module, name) for name in data_module.__all__)
    assert {cls for cls in exported if inspect.isclass(cls)} - {ImageDataModule} == set(DATAMODULES)


@FAMILY
def test_batches_fit_the_announced_facts(make, cls):
    datamodule = make(cls)
    channels = datamodule.input_shape[0]
    assert (
        len(datamodule.mean) == len(datamodule.std) in {1, channels}
    )  # one value: the same for every channel
    assert all(s > 0 for s in datamodule.std)
    for split in ("train", "val", "test"):
        images, labels = next(iter(getattr(datamodule, f"{split}_dataloader")()))
        assert images.dtype == torch.float32 and images.shape[1:] == tuple(datamodule.input_shape), split
        assert images.min() >= 0 and images.max() <= 1 and images.max() > images.min(), split
        assert labels.dtype == torch.int64 and labels.shape == images.shape[:1], split
        assert labels.min() >= 0 and labels.max() < datamodule.num_classes, split


@FAMILY
def test_the_training_order_changes_with_the_epoch_the_evaluation_order_never(make, cls):
    datamodule = make(cls)
    sampler = datamodule.train_dataloader().sampler
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert orders[0] == orders[2] != orders[1]
    assert sorted(orders[0]) == list(range(len(datamodule.train_set)))
    for split in ("val", "test"):
        loader = getattr(datamodule, f"{split}_dataloader")
        first, second = batches(loader()), batches(loader())
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True)), split


@FAMILY
def test_the_split_is_reproducible_from_the_seed(make, cls):
    one, again, other = make(cls, seed=0), make(cls, seed=0), make(cls, seed=1)
    for split in ("val", "test"):
        first, second = (
            batches(getattr(one, f"{split}_dataloader")()),
            batches(getattr(again, f"{split}_dataloader")()),
        )
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True)), split
    assert list(one.train_dataloader().sampler) == list(again.train_dataloader().sampler)
    if cls in SPLIT_BY_SEED:  # another seed, another validation set
        assert not torch.equal(batches(one.val_dataloader())[0], batches(other.val_dataloader())[0])
