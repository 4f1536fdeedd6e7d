"""LightningDataModules. Every one yields images in [0, 1] and exposes num_classes, mean and std."""

from lit_robust.data.base import ImageDataModule
from lit_robust.data.cifar10 import CIFAR10DataModule
from lit_robust.data.imagenet import ImageNetDataModule
from lit_robust.data.mnist import MNISTDataModule
from lit_robust.data.mnist_sample import MNISTSampleDataModule
from lit_robust.data.synthetic import SyntheticDataModule

__all__ = [
    "CIFAR10DataModule",
    "ImageDataModule",
    "ImageNetDataModule",
    "MNISTDataModule",
    "MNISTSampleDataModule",
    "SyntheticDataModule",
]
