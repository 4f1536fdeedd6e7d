"""Adversarial training (Madry et al., ICLR 2018): trains on the attack's output, and it helps."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lit_robust.attacks import FGSM, PGD
from lit_robust.callbacks.robustness_evaluation import robust_flags
from lit_robust.data import MNISTSampleDataModule
from lit_robust.defenses import AdversarialTraining, StandardTraining
from lit_robust.models import SmallCNN


def test_loss_is_cross_entropy_on_the_attack_output(trained_tiny):
    network, x, y = trained_tiny
    attack = FGSM(0.1)
    model = AdversarialTraining(network=network, attack=attack, num_classes=4)
    terms = model.compute_loss(x, y)
    expected = F.cross_entropy(network(attack(network, x, y)), y)
    torch.testing.assert_close(terms["loss"], expected)
    assert terms["loss"] > F.cross_entropy(network(x), y)


@pytest.mark.slow
def test_pgd_training_beats_standard_training_under_pgd(all_cores):
    """Same network, data, seed and epochs: only the training loss differs."""
    datamodule = MNISTSampleDataModule(batch_size=64)
    eps = 0.2
    robust = {}
    for cls, extra in ((StandardTraining, {}), (AdversarialTraining, {"attack": PGD(eps, steps=5)})):
        L.seed_everything(0)
        network = SmallCNN(mean=MNISTSampleDataModule.mean, std=MNISTSampleDataModule.std)
        model = cls(network=network, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3), **extra)
        trainer = L.Trainer(
            max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        )  # fmt: skip
        trainer.fit(model, datamodule=datamodule)
        x, y = (t[::3] for t in datamodule.test_set.tensors)  # 334 images, every class
        torch.manual_seed(0)
        flags = robust_flags(model, x, y, [PGD(eps, steps=10)])
        robust[cls.__name__] = flags[f"pgd_linf_{eps}"].float().mean().item()
        assert flags["clean"].float().mean() > 0.9, cls.__name__
    assert robust["AdversarialTraining"] > robust["StandardTraining"] + 0.2, robust
