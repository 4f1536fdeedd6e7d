"""The attack instances every family test runs on: cheap settings of every exported attack.

Each group of attacks adds its own ``cases_<group>.py`` beside this file with a ``CASES`` list;
they are collected here, so adding an attack never means editing a shared list.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import Tensor, nn

from lit_robust.attacks import FGSM, PGD, Attack, Transfer, WithGradMode
from tests.helpers import tiny_cnn


class GradientViews(nn.Module):
    """``network`` behind the ``gradient_view(mode)`` interface that :class:`WithGradMode` attacks (WNLL
    has it). Every view is the network itself, so each family invariant applies unchanged; the modes
    asked for are recorded in ``requested``."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.requested: list[str] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def gradient_view(self, mode: str) -> nn.Module:
        self.requested.append(mode)
        return self.network


def target_for(attack: Attack, model: nn.Module) -> nn.Module:
    """The model to give ``attack`` in a family test: ``model``, behind :class:`GradientViews` for the
    attacks that need gradient views."""
    return GradientViews(model) if isinstance(attack, WithGradMode) else model


ATTACKS: list[Attack] = [
    FGSM(0.1),
    FGSM(0.1, random_start=True),
    PGD(0.1, steps=3),
    PGD(0.1, steps=3, random_start="none"),
    PGD(0.1, steps=3, random_start="normal", loss="kl"),
    PGD(0.5, norm="l2", steps=3),
    Transfer(PGD(0.1, steps=3), source=tiny_cnn(seed=7), source_name="untrained"),
    WithGradMode(PGD(0.1, steps=3), "exact"),
    WithGradMode(PGD(0.1, steps=3, random_start="normal", loss="kl"), "surrogate", eot_samples=2),
]
for _module in sorted(Path(__file__).parent.glob("cases_*.py")):
    ATTACKS += importlib.import_module(f"tests.attacks.{_module.stem}").CASES
