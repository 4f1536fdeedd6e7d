"""eval_mode and frozen_parameters restore what they change, module by module, even on errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_robust.models.modes import eval_mode, frozen_parameters


def mixed_model(state: str) -> nn.Module:
    """A network with BatchNorm and dropout in nested containers; ``state`` picks the starting modes."""
    model = nn.Sequential(
        nn.Linear(4, 8),
        nn.BatchNorm1d(8),
        nn.Dropout(0.5),
        nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU()),
        nn.Linear(8, 3),
    )
    if state == "train":
        model.train()
    elif state == "eval":
        model.eval()
    else:  # a frozen BatchNorm and a frozen inner block inside a training model
        model.train()
        model[1].eval()
        model[3].eval()
        model[3][2].train()
    return model


def modes(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


STATES = pytest.mark.parametrize("state", ["train", "eval", "mixed"])


def test_mixed_model_really_is_mixed():
    flags = set(modes(mixed_model("mixed")).values())
    assert flags == {True, False}


@STATES
def test_eval_mode_sets_eval_and_restores_each_module(state):
    model = mixed_model(state)
    before = modes(model)
    with eval_mode(model) as inside:
        assert inside is model
        assert not any(modes(model).values())
    assert modes(model) == before


@STATES
def test_eval_mode_restores_when_the_body_raises(state):
    model = mixed_model(state)
    before = modes(model)
    with pytest.raises(KeyError), eval_mode(model):
        raise KeyError("boom")
    assert modes(model) == before


def test_eval_mode_undoes_changes_made_in_the_body():
    model = mixed_model("mixed")
    before = modes(model)
    with eval_mode(model):
        model.train()
    assert modes(model) == before


def test_eval_mode_freezes_batchnorm_statistics():
    model = mixed_model("train")
    running_mean = model[1].running_mean.clone()
    x = torch.randn(16, 4) + 3.0
    with eval_mode(model), torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first, second)  # no dropout, fixed statistics
    assert torch.equal(model[1].running_mean, running_mean)
    model(x)
    assert not torch.equal(model[1].running_mean, running_mean)  # back in training mode


def test_frozen_parameters_restores_only_trainable_ones():
    model = mixed_model("train")
    already_frozen = [model[0].weight, model[3][1].bias]
    for parameter in already_frozen:
        parameter.requires_grad_(False)
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    assert set(before.values()) == {True, False}
    with frozen_parameters(model) as inside:
        assert inside is model
        assert not any(p.requires_grad for p in model.parameters())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before
    assert not any(p.requires_grad for p in already_frozen)


def test_frozen_parameters_restores_when_the_body_raises():
    model = mixed_model("train")
    model[4].bias.requires_grad_(False)
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    with pytest.raises(ValueError), frozen_parameters(model):
        raise ValueError("boom")
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before


def test_frozen_parameters_leave_parameter_grads_alone():
    model = mixed_model("eval")
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 7.0)
    x = torch.randn(5, 4, requires_grad=True)
    with frozen_parameters(model):
        model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for parameter in model.parameters():
        assert torch.equal(parameter.grad, torch.full_like(parameter, 7.0))


def test_frozen_parameters_with_a_shared_layer():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    with frozen_parameters(model):
        assert not shared.weight.requires_grad
    assert shared.weight.requires_grad and shared.bias.requires_grad
