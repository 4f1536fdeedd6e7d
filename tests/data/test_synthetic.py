"""SyntheticDataModule (and the shared ImageDataModule loaders): seeded, balanced, in [0, 1], learnable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_robust.data import SyntheticDataModule

SPLITS = ("train_set", "val_set", "test_set")


def make(**overrides) -> SyntheticDataModule:
    kwargs = dict(num_classes=4, input_shape=(1, 8, 8), num_train=40, num_val=12, num_test=20, batch_size=8)
    kwargs.update(overrides)
    datamodule = SyntheticDataModule(**kwargs)
    datamodule.setup()
    return datamodule


def test_same_seed_same_data():
    first, second = make(seed=3), make(seed=3)
    for split in SPLITS:
        for a, b in zip(getattr(first, split).tensors, getattr(second, split).tensors, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("split", SPLITS)
def test_different_seeds_differ(split):
    images_0, labels_0 = getattr(make(seed=0), split).tensors
    images_1, labels_1 = getattr(make(seed=1), split).tensors
    assert not torch.equal(images_0, images_1)
    assert not torch.equal(labels_0, labels_1)


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 5, 7)])
def test_shapes_range_and_attributes(input_shape):
    datamodule = make(input_shape=input_shape, num_classes=3, num_train=9, num_val=6, num_test=3)
    assert datamodule.num_classes == 3
    assert datamodule.input_shape == input_shape
    for split, size in zip(SPLITS, (9, 6, 3), strict=True):
        images, labels = getattr(datamodule, split).tensors
        assert images.shape == (size, *input_shape) and images.dtype == torch.float32
        assert labels.shape == (size,) and labels.dtype == torch.int64
        assert images.min() >= 0.0 and images.max() <= 1.0


def test_noise_is_clamped_into_range():
    images, _ = make(noise=5.0).train_set.tensors
    assert images.min() == 0.0 and images.max() == 1.0


@pytest.mark.parametrize("split", SPLITS)
def test_labels_are_balanced(split):
    _, labels = getattr(make(num_classes=4, num_train=40, num_val=12, num_test=20), split).tensors
    counts = labels.bincount(minlength=4).tolist()
    assert counts == [len(labels) // 4] * 4


def test_labels_are_shuffled():
    _, labels = make(num_train=40).train_set.tensors
    assert not torch.equal(labels, torch.arange(40) % 4)


def test_one_prototype_per_class_shared_by_all_splits():
    datamodule = make(noise=0.0)
    prototypes = {}
    for split in SPLITS:
        images, labels = getattr(datamodule, split).tensors
        for image, label in zip(images, labels.tolist(), strict=True):
            prototype = prototypes.setdefault(label, image)
            assert torch.equal(image, prototype)
    assert len(prototypes) == 4
    stacked = torch.stack([prototypes[c] for c in range(4)])
    assert torch.cdist(stacked.flatten(1), stacked.flatten(1)).add(torch.eye(4)).min() > 0.5


def test_noise_has_the_requested_scale():
    clean = make(noise=0.0).train_set.tensors[0]
    noisy = make(noise=0.05).train_set.tensors[0]  # same seed: same prototypes and labels
    inside = (clean > 0.2) & (clean < 0.8)  # pixels that 0.05-noise almost never clamps
    assert (noisy - clean)[inside].std() == pytest.approx(0.05, rel=0.15)


def test_learnable_by_logistic_regression():
    datamodule = make(num_train=128, num_test=64)
    images, labels = datamodule.train_set.tensors
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        train_accuracy = (model(images).argmax(1) == labels).float().mean()
        test_images, test_labels = datamodule.test_set.tensors
        test_accuracy = (model(test_images).argmax(1) == test_labels).float().mean()
    assert train_accuracy > 0.9
    assert test_accuracy > 0.9  # the splits share the class prototypes, so it generalizes


def test_setup_is_idempotent():
    datamodule = make()
    train_set = datamodule.train_set
    datamodule.setup("fit")
    assert datamodule.train_set is train_set


def test_loaders_batch_shuffle_and_seed():
    datamodule = make(batch_size=8)
    batches = list(datamodule.train_dataloader())
    assert [len(y) for _, y in batches] == [8] * 5
    order = torch.cat([y for _, y in batches])
    images = torch.cat([x for x, _ in batches])
    assert sorted(map(tuple, images.flatten(1).tolist())) == sorted(
        map(tuple, datamodule.train_set.tensors[0].flatten(1).tolist())
    )
    assert not torch.equal(images, datamodule.train_set.tensors[0])  # shuffled
    again = torch.cat([y for _, y in make(batch_size=8).train_dataloader()])
    assert torch.equal(order, again)  # seeded shuffle
    for loader, split in (
        (datamodule.val_dataloader(), "val_set"),
        (datamodule.test_dataloader(), "test_set"),
    ):
        assert torch.equal(torch.cat([x for x, _ in loader]), getattr(datamodule, split).tensors[0])
    assert torch.equal(
        torch.cat([x for x, _ in datamodule.predict_dataloader()]), datamodule.test_set.tensors[0]
    )


def test_loaders_before_setup_raise():
    datamodule = SyntheticDataModule()
    for loader in (datamodule.train_dataloader, datamodule.val_dataloader, datamodule.test_dataloader):
        with pytest.raises(RuntimeError, match=r"setup\(\)"):
            loader()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"input_shape": (28, 28)}, "input_shape"),
        ({"num_train": -1}, "num_train"),
        ({"num_test": -1}, "num_test"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SyntheticDataModule(**kwargs)


def test_empty_split_is_allowed():
    datamodule = make(num_val=0)
    assert len(datamodule.val_set) == 0
    assert len(datamodule.train_set) == 40
