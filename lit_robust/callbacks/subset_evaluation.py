"""The machinery every evaluation callback shares: a fixed, seeded subset, attacked at epoch end.

A subclass says what to compute per sample (:meth:`SubsetEvaluation.per_sample`) and how to turn
the gathered per-sample values into metrics (:meth:`SubsetEvaluation.summarize`). This base picks
the subset, shards it across processes, batches it, seeds the attacks' randomness without touching
the training RNG stream, shows progress, gathers the values across processes, logs the metrics, and
runs in ``fit`` (validation, every n epochs and the last), ``validate`` and ``test``.

A SIGTERM received while attacks run stops the evaluation at the next batch of the subset (or the
next attack): :func:`stop_if_terminated` raises Lightning's ``SIGTERMException`` there, as Lightning's
own loops do between batches, and ``lit-robust`` exits with code 143.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.aggregation import CatMetric

from lit_robust.attacks.base import Attack
from lit_robust.callbacks.progress import EvaluationProgress, close_finished_bar
from lit_robust.validation import MAX_SEED, check_int


def seeded_subset(dataset_size: int, num_samples: int, seed: int) -> Tensor:
    """``min(num_samples, dataset_size)`` distinct indices drawn with ``seed``, in ascending order."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(dataset_size, generator=generator)[:num_samples]
    return chosen.sort().values


def first_dataset(dataloaders: DataLoader | Sequence[DataLoader] | None) -> Dataset | None:
    """The dataset behind the (first) evaluation dataloader."""
    if not dataloaders:
        return None
    return (dataloaders if isinstance(dataloaders, DataLoader) else dataloaders[0]).dataset


def stack_items(dataset: Dataset, indices: list[int]) -> tuple[Tensor, Tensor]:
    """Images and labels of ``dataset[indices]`` as two batched tensors."""
    items = [dataset[i] for i in indices]
    images = torch.stack([torch.as_tensor(item[0]) for item in items])
    labels = torch.as_tensor([int(item[1]) for item in items])
    return images, labels


def check_distinct_names(attacks: Sequence[Attack]) -> None:
    """Every attack's metric name must be unique, or one result would overwrite another."""
    names = [attack.name for attack in attacks]
    if len(set(names)) != len(names):
        raise ValueError(f"attacks must have distinct names, got {names}; pass name=... to tell them apart")


def stop_if_terminated(trainer: L.Trainer | None) -> None:
    """Raise ``SIGTERMException`` when the Trainer has received SIGTERM (a no-op outside a Trainer)."""
    if trainer is not None and trainer.received_sigterm:
        raise SIGTERMException(143)


def gathered_values(metric: CatMetric) -> Tensor:
    """Every process's values of ``metric``, concatenated; an empty tensor when there are none
    (``CatMetric`` skips empty updates and then computes ``[]``, e.g. a subset with no clean-correct
    point to attack)."""
    values = metric.compute()  # gathers across processes
    return values if isinstance(values, Tensor) else torch.empty(0, device=metric.device)


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for the block and restore the outer stream afterwards (training is untouched)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class SubsetEvaluation(L.Callback, ABC):
    """Base of the evaluation callbacks (see the module docstring).

    Args:
        num_samples: size of the evaluation subset (the whole split if smaller), >= 1.
        every_n_epochs: during ``fit``, evaluate every n-th epoch and at the last one, >= 1.
        seed: picks the subset and seeds the attacks' randomness, an integer in [0, 2**64 - 1].
        batch_size: images evaluated at once, >= 1 (also how often a SIGTERM is noticed).
    """

    def __init__(
        self, num_samples: int = 1000, every_n_epochs: int = 1, seed: int = 0, batch_size: int = 250
    ):
        self.num_samples = check_int("num_samples", num_samples, low=1)
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs, low=1)
        self.seed = check_int("seed", seed, low=0, high=MAX_SEED)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.trainer: L.Trainer | None = None  # the Trainer of the running evaluation
        self._progress: EvaluationProgress | None = None  # the running evaluation's progress line

    @abstractmethod
    def per_sample(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Per-sample values for one batch (each a tensor whose first dimension is the batch)."""

    @abstractmethod
    def summarize(self, stage: str, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Metrics (full names, e.g. ``val/worst_case_acc``) from the gathered per-sample values."""

    def metric_names(self, stage: str) -> set[str]:
        """Names this callback logs, for the checkpoint check; empty if unknown in advance."""
        return set()

    def log_extras(self, trainer: L.Trainer, stage: str, metrics: Mapping[str, Tensor]) -> None:
        """Hook for figures and other non-scalar outputs (rank zero only)."""

    def title(self) -> str:
        """What the progress line calls this evaluation (the class name)."""
        return type(self).__name__

    def attacks_per_sample(self) -> int:
        """How many attacks :meth:`per_sample` runs on each sample (the progress line's unit of work)."""
        return 1

    def show_attack(self, attack: Attack | str) -> None:
        """Put the attack (or other named work) now running on the progress line (``attack 3/5:
        apgd_t_linf_0.1``), so a long evaluation never looks finished or stuck while one attack runs
        for minutes."""
        if self._progress is not None:
            self._progress.start_attack(attack if isinstance(attack, str) else attack.name)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Fail early when a checkpoint monitors our metric on epochs where it is not computed."""
        if stage != "fit":
            return
        ours = self.metric_names("val")
        for checkpoint in trainer.checkpoint_callbacks:
            period = getattr(checkpoint, "_every_n_epochs", 1) or 1
            if getattr(checkpoint, "monitor", None) in ours and period % self.every_n_epochs:
                raise ValueError(
                    f"ModelCheckpoint monitors {checkpoint.monitor!r}, which {type(self).__name__} logs "
                    f"every {self.every_n_epochs} epochs, but checks it every {period}: give ModelCheckpoint "
                    f"every_n_epochs={self.every_n_epochs} (lit-robust links the two)"
                )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":
            epoch = trainer.current_epoch + 1
            is_last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
            if epoch % self.every_n_epochs and not is_last:
                return
        self.evaluate(trainer, pl_module, "val", trainer.val_dataloaders)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluate(trainer, pl_module, "test", trainer.test_dataloaders)

    def evaluate(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        stage: str,
        dataloaders: DataLoader | Sequence[DataLoader] | None,
    ) -> dict[str, Tensor]:
        """Evaluate the subset of the first dataloader's dataset, log and return the metrics."""
        values = self.gather(trainer, pl_module, stage, dataloaders)
        stop_if_terminated(trainer)  # an evaluation cut short logs nothing
        if values is None:
            return {}
        metrics = self.summarize(stage, values)
        self.log_metrics(trainer, pl_module, stage, metrics)
        return metrics

    def gather(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        stage: str,
        dataloaders: DataLoader | Sequence[DataLoader] | None,
    ) -> dict[str, Tensor] | None:
        """:meth:`per_sample` over this process's shard of the subset, gathered from every process
        (``None`` without evaluation data). A subclass may call it several times per evaluation."""
        dataset = first_dataset(dataloaders)
        if dataset is None:
            return None
        subset = seeded_subset(len(dataset), self.num_samples, self.seed)
        shard = subset[trainer.global_rank :: trainer.world_size]  # each process its own shard
        gathered: dict[str, CatMetric] = {}
        show = trainer.is_global_zero and trainer.progress_bar_callback is not None
        if show:
            close_finished_bar(trainer, stage)
        self.trainer = trainer
        progress = EvaluationProgress(
            f"{self.title()} on {len(shard)} {stage} samples", len(shard), self.attacks_per_sample(), show
        )
        self._progress = progress
        try:
            with seeded_rng(self.seed, pl_module.device):
                for start in range(0, len(shard), self.batch_size):
                    chunk = shard[start : start + self.batch_size]
                    progress.start_batch(start, len(chunk))
                    stop_if_terminated(trainer)
                    x, y = stack_items(dataset, chunk.tolist())
                    values = self.per_sample(pl_module, x.to(pl_module.device), y.to(pl_module.device))
                    for key, value in values.items():
                        gathered.setdefault(key, CatMetric(nan_strategy="disable").to(pl_module.device))
                        gathered[key].update(value.float())
                    progress.end_batch()
        finally:
            progress.close()
            self._progress = None
        return {key: gathered_values(metric) for key, metric in gathered.items()}

    def log_metrics(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, metrics: Mapping[str, Tensor]
    ) -> None:
        """Log ``metrics`` on ``pl_module``; then :meth:`log_extras` on rank zero."""
        for name, value in metrics.items():
            pl_module.log(name, value)
        if trainer.is_global_zero:
            self.log_extras(trainer, stage, metrics)
