"""Adversarial training: Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models
Resistant to Adversarial Attacks", ICLR 2018 (arXiv 1706.06083)."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_robust.attacks.base import Attack
from lit_robust.defenses.base import RobustClassifier


class AdversarialTraining(RobustClassifier):
    """Train on adversarial examples: ``L = (1/B) sum_i CE(f(x_i'), y_i)``, ``x_i' = attack(f, x_i, y_i)``.

    The inner maximization is the ``attack`` argument, crafted with the model in eval mode:

    * Madry et al. (PGD-AT): ``PGD(eps, steps=40, step_size=0.01)`` on MNIST at eps 0.3,
      ``PGD(0.0313725, steps=10, step_size=0.0078431)`` on CIFAR-10 (8/255, 2/255);
    * "fast adversarial training" (Wong, Rice, Kolter, ICLR 2020): ``FGSM(eps, random_start=True)``,
      one step of 1.25 eps from a uniform random start. A config, not a class.

    It is :class:`RobustClassifier` with ``adversary=attack`` (the name users look for): any other
    defense given an ``adversary`` trains on the same inputs, with its regularizer on top.
    Logs ``train/adv_ce``.

    Args:
        network: the classifier (starts with ``Normalize``; inputs in [0, 1]).
        attack: the training attack; its ``eps`` is the threat model trained for (pixel units).
        num_classes, optimizer, lr_scheduler, init_from, input_transform: see :class:`RobustClassifier`.
    """

    def __init__(
        self,
        network: nn.Module,
        attack: Attack,
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        init_from: str | None = None,
        input_transform: nn.Module | None = None,
    ):
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be a lit_robust Attack, got {type(attack).__name__}")
        super().__init__(
            network,
            num_classes,
            optimizer,
            lr_scheduler,
            init_from,
            adversary=attack,
            input_transform=input_transform,
        )

    @property
    def attack(self) -> Attack:
        """The training attack (the ``adversary``)."""
        return self.adversary
