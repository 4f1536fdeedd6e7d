"""Robust accuracy at epoch end: attack a fixed, seeded subset of the evaluation data."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.aggregation import MeanMetric
from tqdm.auto import tqdm

from lit_robust.attacks.base import Attack
from lit_robust.models.modes import eval_mode


def predict_labels(model: nn.Module, x: Tensor) -> Tensor:
    """Predicted classes with the model in eval mode (modes restored afterwards), without grad."""
    with torch.no_grad(), eval_mode(model):
        return model(x).argmax(dim=1)


def robust_flags(model: nn.Module, x: Tensor, y: Tensor, attacks: Sequence[Attack]) -> dict[str, Tensor]:
    """Per-sample booleans: ``"clean"`` (correctly classified) and, per attack name, robust to it.

    Each attack runs only on the clean-correct points (a clean mistake is never robust), so each
    entry is that attack's own robust accuracy when averaged. ``"worst_case"`` is robust to every
    attack at once: the per-sample worst case.
    """
    clean = predict_labels(model, x) == y
    flags = {"clean": clean}
    worst = clean.clone()
    idx = clean.nonzero().flatten()
    for attack in attacks:
        robust = torch.zeros_like(clean)
        if len(idx):
            x_adv = attack(model, x[idx], y[idx])
            robust[idx] = predict_labels(model, x_adv) == y[idx]
        flags[attack.name] = robust
        worst &= robust
    flags["worst_case"] = worst
    return flags


def seeded_subset(dataset_size: int, num_samples: int, seed: int) -> Tensor:
    """``min(num_samples, dataset_size)`` distinct indices drawn with ``seed``, in ascending order."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(dataset_size, generator=generator)[:num_samples]
    return chosen.sort().values


class RobustnessEvaluation(L.Callback):
    """Attack a fixed, seeded subset of the validation (or test) data at epoch end; log accuracies.

    Logs, under ``val/`` in ``fit`` and ``validate`` and under ``test/`` in ``test``:

    * ``robust_acc/<attack name>`` — fraction of the subset classified correctly after the attack
      (clean mistakes count as not robust);
    * ``worst_case_acc`` — fraction that survives *every* attack (per-sample worst case);
    * ``subset_acc`` — clean accuracy on the same subset.

    Attacks run in eval mode with each module's mode restored, so BatchNorm statistics, dropout
    and the training RNG stream are untouched (the attacks draw from their own seeded stream).
    Under DDP each process attacks its own shard of the subset and the means are synced, so no
    sample is counted twice.

    Args:
        attacks: the attacks; their names must be distinct. With none, ``worst_case_acc`` is the
            subset's clean accuracy.
        num_samples: size of the evaluation subset (the whole split if smaller), > 0.
        every_n_epochs: during ``fit``, evaluate every n-th epoch and at the last one, >= 1.
        seed: picks the subset and seeds the attacks' randomness.
        batch_size: images attacked at once, > 0.
    """

    def __init__(
        self,
        attacks: list[Attack] | None = None,
        num_samples: int = 1000,
        every_n_epochs: int = 1,
        seed: int = 0,
        batch_size: int = 250,
    ):
        attacks = list(attacks or [])
        names = [attack.name for attack in attacks]
        if len(set(names)) != len(names):
            raise ValueError(
                f"attacks must have distinct names, got {names}; pass name=... to tell them apart"
            )
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.attacks = attacks
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.batch_size = batch_size

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Fail early when a checkpoint monitors our metric on epochs where it is not computed."""
        if stage != "fit":
            return
        ours = {metric_name("val", key) for key in ("clean", "worst_case", *(a.name for a in self.attacks))}
        for checkpoint in trainer.checkpoint_callbacks:
            period = getattr(checkpoint, "_every_n_epochs", 1) or 1
            if getattr(checkpoint, "monitor", None) in ours and period % self.every_n_epochs:
                raise ValueError(
                    f"ModelCheckpoint monitors {checkpoint.monitor!r}, which RobustnessEvaluation logs every "
                    f"{self.every_n_epochs} epochs, but checks it every {period}: give ModelCheckpoint "
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
        self._evaluate(trainer, pl_module, "val", trainer.val_dataloaders)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluate(trainer, pl_module, "test", trainer.test_dataloaders)

    def _evaluate(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        stage: str,
        dataloaders: DataLoader | Sequence[DataLoader] | None,
    ) -> None:
        if dataloaders is None:
            return
        loader = dataloaders if isinstance(dataloaders, DataLoader) else dataloaders[0]
        dataset: Dataset = loader.dataset
        subset = seeded_subset(len(dataset), self.num_samples, self.seed)
        shard = subset[trainer.global_rank :: trainer.world_size]  # each process its own shard
        keys = ["clean", *(attack.name for attack in self.attacks), "worst_case"]
        means = {key: MeanMetric().to(pl_module.device) for key in keys}
        show = trainer.is_global_zero and trainer.progress_bar_callback is not None
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            chunks = shard.split(self.batch_size)
            for chunk in tqdm(chunks, desc=f"Attacking the {stage} subset", disable=not show, leave=False):
                x, y = _stack(dataset, chunk.tolist())
                flags = robust_flags(pl_module, x.to(pl_module.device), y.to(pl_module.device), self.attacks)
                for key, mean in means.items():
                    mean.update(flags[key].float())
        for key, mean in means.items():  # compute() syncs across processes
            pl_module.log(metric_name(stage, key), mean.compute())


def metric_name(stage: str, flag_key: str) -> str:
    """``val/subset_acc``, ``val/worst_case_acc`` or ``val/robust_acc/<attack name>``."""
    special = {"clean": "subset_acc", "worst_case": "worst_case_acc"}
    return f"{stage}/{special.get(flag_key, f'robust_acc/{flag_key}')}"


def _stack(dataset: Dataset, indices: list[int]) -> tuple[Tensor, Tensor]:
    """Images and labels of ``dataset[indices]`` as two batched tensors."""
    items = [dataset[i] for i in indices]
    images = torch.stack([torch.as_tensor(item[0]) for item in items])
    labels = torch.as_tensor([int(item[1]) for item in items])
    return images, labels
