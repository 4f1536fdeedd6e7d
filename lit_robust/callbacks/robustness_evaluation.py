"""Robust accuracy at epoch end: attack a fixed, seeded subset of the evaluation data."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
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


def robust_flags(
    model: nn.Module, x: Tensor, y: Tensor, attacks: Sequence[Attack], individual: bool = True
) -> dict[str, Tensor]:
    """Per-sample booleans: ``"clean"`` (correctly classified), ``"worst_case"`` (robust to every
    attack at once: the per-sample worst case) and, if ``individual``, per attack name, robust to it.

    A clean mistake is never robust, so attacks run only on clean-correct points. ``individual``:
    each attack runs on all of them, and its entry averages to its own robust accuracy. Otherwise
    each attack runs only on the points every earlier attack failed on (AutoAttack's ensemble):
    the same worst case for less work, but no per-attack numbers.
    """
    clean = predict_labels(model, x) == y
    flags = {"clean": clean}
    worst = clean.clone()
    idx = clean.nonzero().flatten()
    for attack in attacks:
        if not individual:
            idx = worst.nonzero().flatten()
        robust = torch.zeros_like(clean)
        if len(idx):
            x_adv = attack(model, x[idx], y[idx])
            robust[idx] = predict_labels(model, x_adv) == y[idx]
        if individual:
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
      (clean mistakes count as not robust), when ``individual``;
    * ``worst_case_acc`` — fraction that survives *every* attack (per-sample worst case);
    * ``subset_acc`` — clean accuracy on the same subset;
    * ``robust_acc_vs_eps/<attack>`` — a figure (TensorBoard logger only) of robust accuracy
      against eps, for every attack given at two or more budgets (an eps sweep: list the attack
      once per eps).

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
        individual: run every attack on every clean-correct point and log its own accuracy; with
            ``False`` each attack only sees the points still robust (cheaper, worst case only).
    """

    def __init__(
        self,
        attacks: list[Attack] | None = None,
        num_samples: int = 1000,
        every_n_epochs: int = 1,
        seed: int = 0,
        batch_size: int = 250,
        individual: bool = True,
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
        self.individual = individual

    def flag_keys(self) -> list[str]:
        """The per-sample flags :func:`robust_flags` returns, in logging order."""
        per_attack = [attack.name for attack in self.attacks] if self.individual else []
        return ["clean", *per_attack, "worst_case"]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Fail early when a checkpoint monitors our metric on epochs where it is not computed."""
        if stage != "fit":
            return
        ours = {metric_name("val", key) for key in self.flag_keys()}
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
        means = {key: MeanMetric().to(pl_module.device) for key in self.flag_keys()}
        show = trainer.is_global_zero and trainer.progress_bar_callback is not None
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            chunks = shard.split(self.batch_size)
            for chunk in tqdm(chunks, desc=f"Attacking the {stage} subset", disable=not show, leave=False):
                x, y = _stack(dataset, chunk.tolist())
                x, y = x.to(pl_module.device), y.to(pl_module.device)
                flags = robust_flags(pl_module, x, y, self.attacks, self.individual)
                for key, mean in means.items():
                    mean.update(flags[key].float())
        accuracies = {key: mean.compute() for key, mean in means.items()}  # syncs across processes
        for key, value in accuracies.items():
            pl_module.log(metric_name(stage, key), value)
        if trainer.is_global_zero and isinstance(trainer.logger, TensorBoardLogger):
            for title, figure in eps_curves(self.attacks, accuracies).items():
                trainer.logger.experiment.add_figure(
                    f"{stage}/robust_acc_vs_eps/{title}", figure, trainer.global_step
                )


def metric_name(stage: str, flag_key: str) -> str:
    """``val/subset_acc``, ``val/worst_case_acc`` or ``val/robust_acc/<attack name>``."""
    special = {"clean": "subset_acc", "worst_case": "worst_case_acc"}
    return f"{stage}/{special.get(flag_key, f'robust_acc/{flag_key}')}"


def eps_curves(attacks: Sequence[Attack], accuracies: Mapping[str, Tensor]) -> dict[str, Figure]:
    """One figure of robust accuracy against eps per attack family given at two or more budgets."""
    families: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for attack in attacks:
        if attack.eps is not None and attack.name in accuracies:
            family = f"{attack.short_name}_{attack.threat_model.value}"
            families[family].append((attack.eps, float(accuracies[attack.name])))
    figures = {}
    for family, points in families.items():
        if len(points) < 2:
            continue
        eps, accuracy = zip(*sorted(points), strict=True)
        figure = Figure(figsize=(4, 3))  # no pyplot: the user's backend is left alone
        axes = figure.subplots()
        axes.plot(eps, accuracy, marker="o")
        axes.set(xlabel="eps (pixel units)", ylabel="robust accuracy", ylim=(0, 1), title=family)
        figure.tight_layout()
        figures[family] = figure
    return figures


def _stack(dataset: Dataset, indices: list[int]) -> tuple[Tensor, Tensor]:
    """Images and labels of ``dataset[indices]`` as two batched tensors."""
    items = [dataset[i] for i in indices]
    images = torch.stack([torch.as_tensor(item[0]) for item in items])
    labels = torch.as_tensor([int(item[1]) for item in items])
    return images, labels
