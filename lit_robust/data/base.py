"""Shared plumbing of the image DataModules: loaders, seeds and the dataset facts a model needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from lit_robust.validation import MAX_SEED, check_int


def require_files(
    dataset: str, folder: Path, names: Sequence[str], download: Callable[[], object] | None, how: str
) -> None:
    """Make sure ``folder`` holds every file in ``names``, downloading them first when allowed.

    Args:
        dataset: the dataset's name, for the messages.
        folder: the resolved folder the files must be in.
        names: the file names expected in ``folder``.
        download: called once when files are missing; ``None`` when downloading is off.
        how: how else to get the files, the end of both messages.

    Raises:
        FileNotFoundError: naming the folder and the missing files, when the download fails or
            files are still missing.
    """
    if download is not None and _missing(folder, names):
        try:
            download()
        except (RuntimeError, OSError) as error:
            raise FileNotFoundError(
                f"{dataset} is missing from {folder} and the download failed ({error}): {how}."
            ) from error
    missing = _missing(folder, names)
    if missing:
        raise FileNotFoundError(
            f"{dataset} not found in {folder} (missing {', '.join(missing)}): pass download=True "
            f"(YAML `download: true`, CLI --data.init_args.download true), or {how}."
        )


def _missing(folder: Path, names: Sequence[str]) -> list[str]:
    return [name for name in names if not (folder / name).is_file()]


def seeded_split(pool: Sequence[int] | torch.Tensor, val_size: int, seed: int) -> tuple[list[int], list[int]]:
    """Hold out ``val_size`` random items of ``pool`` (seeded); returns ``(train, val)`` index lists.

    On ``pool = range(n)`` this is exactly ``random_split(dataset, [n - val_size, val_size],
    torch.Generator().manual_seed(seed))``.
    """
    pool = torch.as_tensor(pool, dtype=torch.long)
    if not 0 <= val_size < len(pool):
        raise ValueError(
            f"val_size must be in [0, {len(pool)}) for {len(pool)} training images, got {val_size}"
        )
    order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))]
    cut = len(pool) - val_size
    return order[:cut].tolist(), order[cut:].tolist()


class EpochShuffleSampler(Sampler[int]):
    """A new random order of ``range(size)`` every epoch, fixed by ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each training epoch (as for ``DistributedSampler``),
    so epoch ``e`` draws the same order whether the run went straight through or was resumed at
    ``e``: the permutation is ``randperm(size)`` from a generator seeded with ``seed + epoch``.
    """

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class TransformedSubset(Dataset):
    """The items ``indices`` of ``dataset`` with ``transform`` applied to each image (not the label).

    Lets the training and validation splits of one dataset object have different transforms
    (augmentation on training only) without loading or scanning the data twice. ``dataset`` must
    return untransformed ``(image, label)`` pairs.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int], transform: Callable[[Any], Any]):
        self.dataset = dataset
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, label = self.dataset[self.indices[index]]
        return self.transform(image), label


class ImageDataModule(L.LightningDataModule):
    """Base of every lit_robust DataModule. Images are float tensors in [0, 1], never normalized.

    Subclasses set ``num_classes``, ``mean``, ``std`` and ``input_shape`` and fill ``train_set``,
    ``val_set`` and ``test_set`` in :meth:`setup`. ``predict`` uses the test set.

    Args:
        batch_size: images per batch, >= 1.
        num_workers: DataLoader worker processes, >= 0.
        seed: seeds the train/validation split and anything random in the data (in [0, 2**64 - 1]);
            the training order of epoch ``e`` is fixed by ``seed + e`` (:class:`EpochShuffleSampler`).
    """

    num_classes: ClassVar[int] = 10
    mean: ClassVar[tuple[float, ...]] = (0.0,)
    std: ClassVar[tuple[float, ...]] = (1.0,)
    input_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)

    def __init__(self, batch_size: int = 128, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.num_workers = check_int("num_workers", num_workers, low=0)
        self.seed = check_int("seed", seed, low=0, high=MAX_SEED)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset, sampler: Sampler | None = None) -> DataLoader:
        """Batches of ``dataset`` in ``sampler``'s order (in order by default).

        Every loader has its own seeded generator (for worker seeds), so iterating one never draws
        from the global random stream: a resumed run's streams stay those of the uninterrupted run.
        """
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
            persistent_workers=self.num_workers > 0,
        )

    def _created(self, dataset: Dataset | None) -> Dataset:
        """``dataset``, or a clear error when :meth:`setup` has not created that split yet."""
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not created this split yet")
        return dataset

    def _distributed(self) -> bool:
        return self.trainer is not None and self.trainer.world_size > 1

    def _evaluation_loader(self, dataset: Dataset | None) -> DataLoader:
        """In order; under DDP each process gets its own shard and no sample is repeated.

        Lightning's default ``DistributedSampler`` pads the last shard with repeated samples so that
        every process sees as many batches; those repeats would count twice in ``val/acc``. Uneven
        shards are safe here because metrics sync once per epoch (torchmetrics states), not per step.
        """
        dataset = self._created(dataset)
        if not self._distributed():
            return self._loader(dataset)
        world, rank = self.trainer.world_size, self.trainer.global_rank
        return self._loader(dataset, UnrepeatedDistributedSampler(dataset, world, rank, shuffle=False))

    def train_dataloader(self) -> DataLoader:
        """A new seeded order every epoch (:class:`EpochShuffleSampler`); under DDP a
        ``DistributedSampler`` with the same ``seed``, whose order Lightning also sets per epoch."""
        dataset = self._created(self.train_set)
        if not self._distributed():
            return self._loader(dataset, EpochShuffleSampler(len(dataset), self.seed))
        world, rank = self.trainer.world_size, self.trainer.global_rank
        return self._loader(dataset, DistributedSampler(dataset, world, rank, shuffle=True, seed=self.seed))

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._created(self.test_set))

    def clean_train_set(self) -> Dataset:
        """The training split without training augmentation (calls ``setup("fit")`` if needed).

        When the training and validation splits are :class:`TransformedSubset` views of one dataset (CIFAR-10,
        ImageNet), the training indices under the validation transform; otherwise the training split itself
        (MNIST, the MNIST sample and synthetic data have no augmentation). What a model that keeps training
        images at inference (WNLL's templates) reads.
        """
        if self.train_set is None:
            self.setup("fit")
        train, val = self.train_set, self.val_set
        same_data = isinstance(val, TransformedSubset) and val.dataset is getattr(train, "dataset", None)
        if isinstance(train, TransformedSubset) and same_data:
            return TransformedSubset(train.dataset, train.indices, val.transform)
        return train
