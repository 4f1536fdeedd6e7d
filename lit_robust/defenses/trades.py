"""TRADES: Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, "Theoretically Principled Trade-off between
Robustness and Accuracy", ICML 2019 (arXiv 1901.08573)."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_robust.attacks.base import Attack
from lit_robust.defenses.base import RobustClassifier
from lit_robust.validation import check_real


class TRADES(RobustClassifier):
    """``L = (1/B) sum_i [ CE(f(x_i), y_i) + beta * KL(softmax f(x_i) || softmax f(x_i')) ]``.

    ``x_i'`` maximizes that KL inside the eps-ball: ``attack`` must be ``PGD(..., loss="kl")``
    (the official code: ``random_start="normal"``, MNIST eps 0.3 / step 0.01 / 40 steps,
    CIFAR-10 eps 0.031 / step 0.007 / 10 steps). The KL is differentiated through both the clean
    and the adversarial prediction, as in the official code (``KLDivLoss(sum) / B``).

    It is :class:`RobustClassifier` with ``adversary=attack, trades_beta=beta`` (the name users look
    for): any regularization defense takes the same two arguments for its TRADES variant.

    Args:
        network: the classifier (starts with ``Normalize``; inputs in [0, 1]).
        attack: the inner maximization, an attack with ``loss="kl"``.
        beta: weight of the robustness term, dimensionless, finite and >= 0 (official: 1.0 on MNIST,
            6.0 on CIFAR-10); 0 trains on the clean cross-entropy only.
        num_classes, optimizer, lr_scheduler, init_from, input_transform: see :class:`RobustClassifier`.

    Logs ``train/ce`` (clean cross-entropy) and ``train/kl`` (unweighted).
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
        input_transform: nn.Module | None = None,
    ):
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be a lit_robust Attack, got {type(attack).__name__}")
        beta = check_real("beta", beta, 0)
        super().__init__(
            network,
            num_classes,
            optimizer,
            lr_scheduler,
            init_from,
            adversary=attack,
            trades_beta=beta,
            input_transform=input_transform,
        )

    @property
    def attack(self) -> Attack:
        """The inner maximization (the ``adversary``)."""
        return self.adversary

    @property
    def beta(self) -> float:
        """The KL weight (``trades_beta``)."""
        return self.trades_beta
