"""CIFAR-10 through torchvision (Krizhevsky, 2009): 50,000 training and 10,000 test images, 3x32x32."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchvision import datasets, transforms
from torchvision.datasets.utils import check_integrity

from lit_robust.data.base import ImageDataModule, TransformedSubset, require_files, seeded_split
from lit_robust.models.normalize import CIFAR10_MEAN, CIFAR10_STD
from lit_robust.validation import check_int

ARCHIVE = "cifar-10-python.tar.gz"
NUM_TRAIN = 50000


class CIFAR10DataModule(ImageDataModule):
    """torchvision CIFAR10 under ``data_dir`` (files in ``data_dir/cifar-10-batches-py``), pixels in [0, 1].

    The 50,000 training images are split, with ``seed``, into ``50,000 - val_size`` for training and
    ``val_size`` for validation (the same seeded permutation as :class:`MNISTDataModule`); ``test`` is
    the official 10,000-image test set. With ``augment``, training images get the standard CIFAR
    augmentation (a random 32x32 crop of the image zero-padded by 4 pixels, then a random horizontal
    flip); validation and test images never do.

    Args:
        data_dir: folder that holds (or will hold) ``cifar-10-batches-py``, the folder that
            ``cifar-10-python.tar.gz`` unpacks to.
        download: fetch and unpack the archive (163 MiB) if files are missing.
        val_size: training images held out for validation, an integer in [0, 50,000).
        augment: random crop (padding 4 pixels) and horizontal flip on the training split.
        batch_size, num_workers, seed: see :class:`ImageDataModule`.
    """

    num_classes = 10
    mean = CIFAR10_MEAN
    std = CIFAR10_STD
    input_shape = (3, 32, 32)

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        val_size: int = 5000,
        augment: bool = True,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, seed)
        self.val_size = check_int("val_size", val_size, 0, NUM_TRAIN - 1)
        self.data_dir = data_dir
        self.download = download
        self.augment = augment

    def _folder(self) -> Path:
        return Path(self.data_dir).resolve() / datasets.CIFAR10.base_folder

    def _checksums(self) -> list[tuple[str, str]]:
        """(file name, md5) of every file that torchvision's CIFAR10 reads and checks."""
        files = [(name, md5) for name, md5 in datasets.CIFAR10.train_list + datasets.CIFAR10.test_list]
        return [*files, (datasets.CIFAR10.meta["filename"], datasets.CIFAR10.meta["md5"])]

    def _require_files(self) -> None:
        require_files(
            "CIFAR-10",
            self._folder(),
            [name for name, _ in self._checksums()],
            download=(lambda: datasets.CIFAR10(self.data_dir, train=False, download=True))
            if self.download
            else None,
            how=f"download {ARCHIVE} from https://www.cs.toronto.edu/~kriz/cifar.html and extract it in "
            f"{Path(self.data_dir).resolve()} (it unpacks to {datasets.CIFAR10.base_folder}/)",
        )

    def _dataset(self, train: bool, transform: Callable[[Any], Any] | None = None) -> datasets.CIFAR10:
        self._require_files()
        try:
            return datasets.CIFAR10(self.data_dir, train=train, transform=transform)
        except RuntimeError as error:  # torchvision's md5 check failed
            corrupted = [
                name for name, md5 in self._checksums() if not check_integrity(self._folder() / name, md5)
            ]
            raise RuntimeError(
                f"CIFAR-10 files in {self._folder()} fail torchvision's MD5 check ({', '.join(corrupted)}): "
                f"they are corrupted or not the official release; delete {self._folder()} and pass "
                f"download=True, or extract a fresh {ARCHIVE} there."
            ) from error

    def prepare_data(self) -> None:
        if self.download:
            self._require_files()

    def setup(self, stage: str | None = None) -> None:
        to_tensor = transforms.ToTensor()
        if stage in (None, "fit", "validate") and self.train_set is None:
            full = self._dataset(train=True)  # PIL images; each split applies its own transform
            train, val = seeded_split(range(len(full)), self.val_size, self.seed)
            augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
            train_transform = transforms.Compose([*augment, to_tensor]) if self.augment else to_tensor
            self.train_set = TransformedSubset(full, train, train_transform)
            self.val_set = TransformedSubset(full, val, to_tensor)
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = self._dataset(train=False, transform=to_tensor)
