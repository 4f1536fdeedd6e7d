"""A picture of what an attack does: clean, adversarial and amplified difference, in TensorBoard."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import Tensor

from lit_robust.attacks.base import Attack
from lit_robust.callbacks.robustness_evaluation import predict_labels
from lit_robust.callbacks.subset_evaluation import first_dataset, seeded_rng, seeded_subset, stack_items
from lit_robust.validation import MAX_SEED, check_int


def example_grid(x: Tensor, x_adv: Tensor, labels: Tensor, clean_pred: Tensor, adv_pred: Tensor) -> Figure:
    """Three rows: clean images, adversarial images, and ``0.5 + (x_adv - x) / (2 max|x_adv - x|)``
    (each difference stretched to the full gray range, so even tiny perturbations show).

    Titles give the true label and the prediction; a red title marks a fooled prediction.
    """
    delta = x_adv - x
    scale = delta.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    rows = [
        ("clean", x, clean_pred),
        ("adversarial", x_adv, adv_pred),
        ("difference", 0.5 + delta / (2 * scale), None),
    ]
    figure = Figure(figsize=(1.4 * len(x), 4.6))
    axes = figure.subplots(len(rows), len(x), squeeze=False)
    for row, (title, images, predictions) in zip(axes, rows, strict=True):
        for col, ax in enumerate(row):
            image = images[col].detach().cpu().clamp(0, 1).permute(1, 2, 0)
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if predictions is not None:
                fooled = bool(predictions[col] != labels[col])
                text = f"y={int(labels[col])} pred={int(predictions[col])}"
                ax.set_title(text, fontsize=7, color="red" if fooled else "black")
        row[0].set_ylabel(title, fontsize=8)
    figure.tight_layout()
    return figure


class AdversarialExamples(L.Callback):
    """Log an image grid of ``num_images`` seeded evaluation images attacked by ``attack``.

    At the end of validation (every ``every_n_epochs`` during ``fit``) and of test, under
    ``val/adversarial_examples/<attack>`` or ``test/...``; TensorBoard logger only, rank zero only.

    Args:
        attack: the attack to show.
        num_images: images in the grid (the whole split if smaller), >= 1.
        every_n_epochs: during ``fit``, draw every n-th epoch, >= 1.
        seed: picks the images and seeds the attack, an integer in [0, 2**64 - 1].
    """

    def __init__(self, attack: Attack, num_images: int = 8, every_n_epochs: int = 1, seed: int = 0):
        self.attack = attack
        self.num_images = check_int("num_images", num_images, 1)
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs, 1)
        self.seed = check_int("seed", seed, 0, MAX_SEED)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self.draw(trainer, pl_module, "val", trainer.val_dataloaders)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw(trainer, pl_module, "test", trainer.test_dataloaders)

    def draw(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, dataloaders
    ) -> Figure | None:
        dataset = first_dataset(dataloaders)
        if not trainer.is_global_zero or not isinstance(trainer.logger, TensorBoardLogger) or dataset is None:
            return None
        x, y = stack_items(dataset, seeded_subset(len(dataset), self.num_images, self.seed).tolist())
        x, y = x.to(pl_module.device), y.to(pl_module.device)
        with seeded_rng(self.seed, pl_module.device):
            x_adv = self.attack(pl_module, x, y)
        figure = example_grid(x, x_adv, y, predict_labels(pl_module, x), predict_labels(pl_module, x_adv))
        tag = f"{stage}/adversarial_examples/{self.attack.name}"
        trainer.logger.experiment.add_figure(tag, figure, trainer.global_step)
        return figure
