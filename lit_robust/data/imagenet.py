"""ImageNet (ILSVRC2012, Russakovsky et al., 2015) from the standard ImageFolder layout.

1,281,167 training and 50,000 validation images of 1,000 classes. Nothing is downloaded: the
ImageNet licence asks each user to fetch it from https://image-net.org.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision import datasets, transforms

from lit_robust.data.base import ImageDataModule, TransformedSubset, seeded_split
from lit_robust.validation import check_int, check_optional_int

DEFAULT_NUM_CLASSES = 1000
LAYOUT = "<data_dir>/train/<wnid>/*.JPEG and <data_dir>/val/<wnid>/*.JPEG"


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the sub-folders of ``folder``, as ImageFolder finds its classes; [] if no folder."""
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def per_class_subset(targets: Sequence[int] | torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` random items of every class (seeded), in ascending order.

    Vectorized over ``targets`` (one permutation and one stable sort; no Python loop over items), so
    it takes well under a second on ImageNet's 1.28M training labels. Every class present must
    have at least ``per_class`` items.

    Args:
        targets: the class index of every item, e.g. ``ImageFolder.targets``.
        per_class: items kept per class, >= 1.
        seed: seeds the choice.

    Returns:
        int64 indices into ``targets``, ``per_class`` of each class, sorted.
    """
    targets = torch.as_tensor(targets, dtype=torch.long)
    counts = torch.bincount(targets)
    present = counts > 0
    if per_class < 1 or (counts[present] < per_class).any():
        smallest = int(counts[present].min()) if present.any() else 0
        raise ValueError(f"per_class must be in [1, {smallest}] (the smallest class), got {per_class}")
    shuffled = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    by_class = shuffled[torch.sort(targets[shuffled], stable=True).indices]  # class order, random within
    first = torch.cumsum(counts, 0) - counts  # position of each class's first item in by_class
    rank = torch.arange(len(targets)) - first[targets[by_class]]
    return by_class[rank < per_class].sort().values


class ImageNetDataModule(ImageDataModule):
    """ImageNet from ``data_dir/train/<wnid>/*.JPEG`` and ``data_dir/val/<wnid>/*.JPEG``, pixels in [0, 1].

    Splits: ``val_size`` training images, held out with ``seed``, are the validation split; the rest
    train; the official ``val`` folder (50,000 images) is the test split. The official ``val`` images
    come in one flat folder: sort them into one folder per class first (for example with the
    ``valprep.sh`` script of the PyTorch ImageNet example).

    Training images: ``RandomResizedCrop(image_size)`` + ``RandomHorizontalFlip``. Validation and
    test images: ``Resize(resize_size)`` (shorter side) + ``CenterCrop(image_size)``. Never normalized:
    ``mean`` and ``std`` are for the model's ``Normalize`` layer.

    ``num_classes`` is the number of class folders in ``data_dir/train``, read in ``__init__`` (one
    directory listing) so that the CLI can hand it to the model; it is 1,000 when the folder is
    absent, and :meth:`setup` then raises a ``FileNotFoundError`` that states the expected layout.

    Args:
        data_dir: the folder that holds ``train/`` and ``val/``.
        image_size: side of the square images the model sees, in pixels, >= 1.
        resize_size: evaluation images are resized so that their shorter side has this many pixels
            before the center crop, >= ``image_size`` (256 for 224, the standard ratio 0.875).
        val_size: training images held out for validation, an integer >= 0 and fewer than the
            training images (after ``train_samples_per_class``, checked in :meth:`setup`).
        train_samples_per_class: keep only this many (>= 1) seeded random training images per class
            (for quick runs; validation is held out of these); ``None`` keeps all.
        test_samples_per_class: evaluate on a fixed seeded subset of this many (>= 1) test images per
            class; 5 gives the 5,000-image subset robustness papers report on (a seeded subset, not
            RobustBench's list of files); ``None`` uses all 50,000.
        batch_size, num_workers, seed: see :class:`ImageDataModule` (JPEG decoding wants workers).
    """

    num_classes = DEFAULT_NUM_CLASSES  # the class default; each instance counts its class folders
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    input_shape = (3, 224, 224)  # the class default; each instance uses its image_size

    def __init__(
        self,
        data_dir: str = "data/imagenet",
        image_size: int = 224,
        resize_size: int = 256,
        val_size: int = 10000,
        train_samples_per_class: int | None = None,
        test_samples_per_class: int | None = None,
        batch_size: int = 256,
        num_workers: int = 8,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, seed)
        self.image_size = check_int("image_size", image_size, 1)
        self.resize_size = check_int("resize_size", resize_size, image_size)
        self.val_size = check_int("val_size", val_size, 0)
        for name, value in (
            ("train_samples_per_class", train_samples_per_class),
            ("test_samples_per_class", test_samples_per_class),
        ):
            setattr(self, name, check_optional_int(name, value, 1))
        self.data_dir = data_dir
        self.input_shape = (3, image_size, image_size)  # type: ignore[misc]
        self.num_classes = len(class_folders(self._root() / "train")) or DEFAULT_NUM_CLASSES  # type: ignore[misc]

    def _root(self) -> Path:
        return Path(self.data_dir).resolve()

    def train_transform(self) -> transforms.Compose:
        """Random resized crop to ``image_size``, random horizontal flip, then a [0, 1] tensor."""
        return transforms.Compose(
            [
                transforms.RandomResizedCrop(self.image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
            ]
        )

    def eval_transform(self) -> transforms.Compose:
        """Shorter side to ``resize_size``, center crop to ``image_size``, then a [0, 1] tensor."""
        return transforms.Compose(
            [
                transforms.Resize(self.resize_size),
                transforms.CenterCrop(self.image_size),
                transforms.ToTensor(),
            ]
        )

    def _check_layout(self) -> None:
        """Raise a FileNotFoundError stating the expected layout unless train/ and val/ match it."""
        root = self._root()
        problems = []
        if not root.is_dir():
            problems.append("the folder does not exist")
        else:
            for split in ("train", "val"):
                if not (root / split).is_dir():
                    problems.append(f"no {split}/ folder")
                elif not class_folders(root / split):
                    problems.append(f"{split}/ holds no class folders")
            train, val = class_folders(root / "train"), class_folders(root / "val")
            if train and val and train != val:
                only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
                problems.append(
                    f"train/ and val/ hold different class folders (only in train/: {only_train[:5]}, "
                    f"only in val/: {only_val[:5]}), so their labels would not match"
                )
        if problems:
            raise FileNotFoundError(
                f"ImageNet not found in {root} ({'; '.join(problems)}): expected {LAYOUT}, the same "
                "class folders in both, with the validation images sorted into one folder per class. "
                "ImageNet cannot be downloaded automatically: get ILSVRC2012 from https://image-net.org, "
                "unpack it in that layout and set data_dir (--data.init_args.data_dir) to its root."
            )
        found = len(class_folders(root / "train"))
        if found != self.num_classes:
            raise ValueError(
                f"{root / 'train'} now holds {found} class folders, but num_classes={self.num_classes} "
                "was read when the DataModule was created (and given to the model): create it again."
            )

    def _subset(self, folder: datasets.ImageFolder, per_class: int | None, name: str) -> torch.Tensor:
        """All indices of ``folder``, or ``per_class`` seeded random ones of each class."""
        if per_class is None:
            return torch.arange(len(folder))
        counts = torch.bincount(torch.as_tensor(folder.targets), minlength=len(folder.classes))
        smallest = int(counts.argmin())
        if counts[smallest] < per_class:
            raise ValueError(
                f"{name} must be <= the images of every class, got {per_class}, but class "
                f"{folder.classes[smallest]!r} in {folder.root} has {int(counts[smallest])}"
            )
        return per_class_subset(folder.targets, per_class, self.seed)

    def setup(self, stage: str | None = None) -> None:
        need_train = stage in (None, "fit", "validate") and self.train_set is None
        need_test = stage in (None, "test", "predict") and self.test_set is None
        if need_train or need_test:
            self._check_layout()
        if need_train:
            folder = datasets.ImageFolder(self._root() / "train")  # PIL images; each split has a transform
            pool = self._subset(folder, self.train_samples_per_class, "train_samples_per_class")
            train, val = seeded_split(pool, self.val_size, self.seed)
            self.train_set = TransformedSubset(folder, train, self.train_transform())
            self.val_set = TransformedSubset(folder, val, self.eval_transform())
        if need_test:
            folder = datasets.ImageFolder(self._root() / "val")
            indices = self._subset(folder, self.test_samples_per_class, "test_samples_per_class")
            self.test_set = TransformedSubset(folder, indices.tolist(), self.eval_transform())
