"""TRADES: Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, "Theoretically Principled Trade-off between
Robustness and Accuracy", ICML 2019 (arXiv 1901.08573)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_robust.attacks.base import Attack
from lit_robust.defenses.adversarial_training import AdversarialTraining
from lit_robust.validation import check_real


class TRADES(AdversarialTraining):
    """``L = (1/B) sum_i [ CE(f(x_i), y_i) + beta * KL(softmax f(x_i) || softmax f(x_i')) ]``.

    ``x_i'`` maximizes that KL inside the eps-ball: ``attack`` must be ``PGD(..., loss="kl")``
    (the official code: ``random_start="normal"``, MNIST eps 0.3 / step 0.01 / 40 steps,
    CIFAR-10 eps 0.031 / step 0.007 / 10 steps). The KL is differentiated through both the clean
    and the adversarial prediction, as in the official code (``KLDivLoss(sum) / B``).

    Args:
        network: the classifier (starts with ``Normalize``; inputs in [0, 1]).
        attack: the inner maximization, an attack with ``loss="kl"``.
        beta: weight of the robustness term, dimensionless, finite and >= 0 (official: 1.0 on MNIST,
            6.0 on CIFAR-10); 0 trains on the clean cross-entropy only.
        num_classes, optimizer, lr_scheduler, init_from: see :class:`RobustClassifier`.

    Logs ``train/ce`` (clean cross-entropy) and ``train/kl`` (unweighted). A kind of
    :class:`AdversarialTraining`: it shares the training attack, and replaces the loss.
    """

    def __init__(
        self,
        network: nn.Module,
        attack: Attack,
        beta: float = 6.0,
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        init_from: str | None = None,
    ):
        super().__init__(network, attack, num_classes, optimizer, lr_scheduler, init_from)
        if getattr(attack, "loss", "kl") != "kl":
            raise ValueError(
                f"TRADES' inner attack must maximize the KL divergence (loss='kl'), "
                f"got {type(attack).__name__} with loss={attack.loss!r}"
            )
        self.beta = check_real("beta", beta, 0)

    def compute_loss(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        x_adv = self.attack(self, x, y)
        logits_clean = self(x)
        logits_adv = self(x_adv)
        ce = F.cross_entropy(logits_clean, y)
        kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
        return {"loss": ce + self.beta * kl, "ce": ce, "kl": kl}
