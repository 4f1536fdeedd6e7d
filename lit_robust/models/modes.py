"""Context managers that change a network's modes temporarily and restore them module by module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore *each* module's previous ``training`` flag.

    A blanket ``model.train()`` afterwards would be wrong for models that keep some parts frozen
    in eval mode (a frozen BatchNorm, a teacher network), so the flags are saved one by one.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Turn off ``requires_grad`` on every parameter that has it, and turn it back on afterwards.

    Attacks differentiate with respect to the input only; frozen parameters keep their ``.grad``
    untouched and save the cost of parameter gradients.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield model
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
