"""Invariants every network in ``lit_robust.models.__all__`` must keep (DESIGN.md, section 4).

A network is an exported class that takes ``num_classes``; ``test_every_exported_network_is_covered`` keeps
``NETWORKS`` complete, so a new architecture cannot skip these checks. Each runs at a small size: the
per-architecture details (layer order, parameter counts, shortcuts) are in ``test_architectures.py``.
"""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
from torch import nn

import lit_robust.models as models
from lit_robust.models import (
    MLP,
    VGG,
    VGG11,
    VGG13,
    VGG16,
    VGG19,
    BiasFreeCNN,
    BiasFreeMLP,
    CifarResNet,
    ConvNet,
    LeNet,
    Normalize,
    PreActResNet,
    PreActResNet18,
    ResNet20,
    ResNet56,
    SmallCNN,
    TorchvisionModel,
    WideResNet,
)

NUM_CLASSES = 5  # not 10, so a hard-coded head size shows up
BATCH = 4
CHEAP = 1_000_000  # parameters: below this the network also runs in float64

# class -> (the arguments of a small instance besides num_classes, mean and std; the image shape)
NETWORKS: dict[type, tuple[dict, tuple[int, int, int]]] = {
    MLP: ({"input_shape": (1, 8, 8), "hidden": (6,)}, (1, 8, 8)),
    LeNet: ({"in_channels": 1, "input_size": 28}, (1, 28, 28)),
    SmallCNN: ({"in_channels": 1, "input_size": 28, "dropout": 0.5}, (1, 28, 28)),
    BiasFreeCNN: ({"in_channels": 1, "input_size": 28}, (1, 28, 28)),
    BiasFreeMLP: ({"input_shape": (1, 8, 8), "hidden": (6,)}, (1, 8, 8)),
    ConvNet: ({"in_channels": 3}, (3, 32, 32)),
    CifarResNet: ({"depth": 8, "in_channels": 3}, (3, 16, 16)),
    ResNet20: ({"in_channels": 3}, (3, 16, 16)),
    ResNet56: ({"in_channels": 3}, (3, 16, 16)),
    PreActResNet: ({"num_blocks": (1, 1, 1, 1), "in_channels": 3}, (3, 16, 16)),
    PreActResNet18: ({"in_channels": 3}, (3, 16, 16)),
    WideResNet: ({"depth": 10, "widen_factor": 1, "dropout": 0.3, "in_channels": 3}, (3, 16, 16)),
    VGG: ({"depth": 11, "in_channels": 3}, (3, 32, 32)),
    VGG11: ({"in_channels": 3}, (3, 32, 32)),
    VGG13: ({"in_channels": 3}, (3, 32, 32)),
    VGG16: ({"in_channels": 3}, (3, 32, 32)),
    VGG19: ({"in_channels": 3}, (3, 32, 32)),
    TorchvisionModel: ({"name": "resnet18"}, (3, 32, 32)),
}
# networks built around another network of the family, with their own tests instead
WRAPPERS = {
    "WNLLNetwork": "a backbone's features plus a WNLL head (test_wnll.py); the backbone's own head is unused",
}
MEAN = {1: (0.3,), 3: (0.2, 0.4, 0.6)}
STD = {1: (0.5,), 3: (0.25, 0.5, 2.0)}
FAMILY = pytest.mark.parametrize("cls", list(NETWORKS), ids=lambda cls: cls.__name__)


def build(cls: type, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A small instance of ``cls`` (seeded) and a batch of images in [0, 1] for it."""
    kwargs, shape = NETWORKS[cls]
    torch.manual_seed(seed)
    network = cls(num_classes=NUM_CLASSES, mean=MEAN[shape[0]], std=STD[shape[0]], **kwargs)
    return network, torch.rand(BATCH, *shape, generator=torch.Generator().manual_seed(seed))


def leaves(network: nn.Module) -> list[nn.Module]:
    return [module for module in network.modules() if not list(module.children())]


def cancelled_by_batchnorm(network: nn.Module, parameter_name: str) -> bool:
    """A bias directly followed by BatchNorm (VGG's convolutions): training-mode BatchNorm removes it."""
    module_name, _, kind = parameter_name.rpartition(".")
    return (
        isinstance(network, VGG)
        and kind == "bias"
        and isinstance(network.get_submodule(module_name), nn.Conv2d)
    )


def test_every_exported_network_is_covered():
    """Every class of ``lit_robust.models.__all__`` that takes ``num_classes`` is in ``NETWORKS`` (or is one
    of the ``WRAPPERS``, which say where they are tested)."""
    exported = [getattr(models, name) for name in models.__all__]
    networks = {
        obj for obj in exported if inspect.isclass(obj) and "num_classes" in inspect.signature(obj).parameters
    }
    assert {cls for cls in networks if cls.__name__ not in WRAPPERS} == set(NETWORKS)
    assert set(WRAPPERS) <= {cls.__name__ for cls in networks}


@FAMILY
def test_logits_have_the_batch_and_class_shape_in_both_modes(cls):
    network, x = build(cls)
    assert network.input_spec.accepts(tuple(x.shape))
    for mode in ("train", "eval"):
        getattr(network, mode)()
        with torch.no_grad():
            logits = network(x)
        assert logits.shape == (BATCH, NUM_CLASSES) and logits.dtype == torch.float32, mode
        assert torch.isfinite(logits).all(), mode
    with torch.no_grad():  # eval mode: no dropout, frozen BatchNorm, so the same logits twice
        torch.testing.assert_close(network(x), network(x), rtol=0, atol=0)


@FAMILY
def test_the_first_layer_applied_is_its_only_normalize_and_nothing_is_in_place(cls):
    network, x = build(cls)
    calls: list[tuple[nn.Module, torch.Tensor]] = []
    handles = [
        leaf.register_forward_pre_hook(lambda m, args: calls.append((m, args[0]))) for leaf in leaves(network)
    ]
    network.eval()(x)
    for handle in handles:
        handle.remove()
    first, first_input = calls[0]
    assert isinstance(first, Normalize) and first_input is x
    assert first.mean.flatten().tolist() == pytest.approx(MEAN[x.shape[1]])
    assert sum(isinstance(module, Normalize) for module in network.modules()) == 1
    assert [name for name, module in network.named_modules() if getattr(module, "inplace", False)] == []


@FAMILY
def test_every_parameter_gets_a_gradient(cls):
    network, x = build(cls)
    network.train()
    y = torch.arange(BATCH) % NUM_CLASSES
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    for _ in range(2):  # a zero-initialized head (SmallCNN) blocks every earlier gradient until it moves
        optimizer.zero_grad()
        nn.functional.cross_entropy(network(x), y).backward()
        optimizer.step()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0 or cancelled_by_batchnorm(network, name), name


@FAMILY
def test_state_dict_round_trip(cls):
    """A fresh instance that loads the state dict computes the same logits: parameters and buffers travel."""
    network, x = build(cls, seed=0)
    other, _ = build(cls, seed=1)
    with torch.no_grad():
        network.train()(x)  # BatchNorm running statistics move away from their initial values
        for parameter in network.parameters():  # and a zero-initialized head stops being zero
            parameter.add_(0.05 * torch.randn_like(parameter))
        expected = network.eval()(x)
        assert not torch.allclose(other.eval()(x), expected)
        other.load_state_dict(network.state_dict())
        torch.testing.assert_close(other(x), expected, rtol=0, atol=0)


@functools.cache
def cheap(cls: type) -> bool:
    return sum(parameter.numel() for parameter in build(cls)[0].parameters()) < CHEAP


@pytest.mark.parametrize("cls", [cls for cls in NETWORKS if cheap(cls)], ids=lambda cls: cls.__name__)
def test_float64(cls):
    """In float64 the logits are float64 and equal the float32 ones to float32 precision."""
    network, x = build(cls)
    network.eval()
    with torch.no_grad():
        single = network(x)
        double = network.double()(x.double())
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), single, rtol=1e-4, atol=1e-5)


def test_the_float64_family_is_not_empty():
    assert sum(cheap(cls) for cls in NETWORKS) >= 6
