"""Defenses: LightningModules whose training step adds a regularizer or trains on attacks."""

from lit_robust.defenses.adversarial_training import AdversarialTraining
from lit_robust.defenses.base import RobustClassifier
from lit_robust.defenses.deep_defense import DeepDefense
from lit_robust.defenses.flow_gradient import FlowGradientRegularization
from lit_robust.defenses.gfa import GFA
from lit_robust.defenses.input_gradient import InputGradientRegularization
from lit_robust.defenses.local_flatness import LocalFlatnessRegularization
from lit_robust.defenses.standard import StandardTraining
from lit_robust.defenses.trades import TRADES
from lit_robust.defenses.wnll import WNLL

__all__ = [
    "GFA",
    "TRADES",
    "WNLL",
    "AdversarialTraining",
    "DeepDefense",
    "FlowGradientRegularization",
    "InputGradientRegularization",
    "LocalFlatnessRegularization",
    "RobustClassifier",
    "StandardTraining",
]
