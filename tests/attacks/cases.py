"""The attack instances every family test runs on: cheap settings of every exported attack.

Each group of attacks adds its own ``cases_<group>.py`` beside this file with a ``CASES`` list;
they are collected here, so adding an attack never means editing a shared list.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from lit_robust.attacks import FGSM, PGD, Attack, Transfer
from tests.conftest import tiny_cnn

ATTACKS: list[Attack] = [
    FGSM(0.1),
    FGSM(0.1, random_start=True),
    PGD(0.1, steps=3),
    PGD(0.1, steps=3, random_start="none"),
    PGD(0.1, steps=3, random_start="normal", loss="kl"),
    PGD(0.5, norm="l2", steps=3),
    Transfer(PGD(0.1, steps=3), source=tiny_cnn(seed=7), source_name="untrained"),
]
for _module in sorted(Path(__file__).parent.glob("cases_*.py")):
    ATTACKS += importlib.import_module(f"tests.attacks.{_module.stem}").CASES
