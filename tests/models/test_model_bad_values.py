"""Every exported model class refuses a bad value (NaN, inf, -inf, negative, zero, a string) of each
numeric constructor argument where it is given (``tests/bad_values.py``), before building any layer;
``ALLOWS`` is the specification of the values that mean something."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import lit_robust.models as models_module
from lit_robust.functional.bpda import identity
from lit_robust.models import (
    BPDA,
    EOT,
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
    RobustBenchModel,
    SmallCNN,
    Taps,
    TemplateBank,
    TorchvisionModel,
    TotalVariationMinimization,
    WideResNet,
    WNLLNetwork,
)
from tests.bad_values import cases, check_refused, unknown_allowances

# the arguments each class needs (or that keep an accepted value cheap to build); nothing here is tested
REQUIRED: dict[type, dict[str, Any]] = {
    BPDA: {"transform": identity},
    EOT: {"model": nn.Identity()},
    MLP: {"hidden": (8,)},
    BiasFreeCNN: {},
    BiasFreeMLP: {"hidden": (8,)},
    VGG: {},
    VGG11: {},
    VGG13: {},
    VGG16: {},
    VGG19: {},
    CifarResNet: {},
    ConvNet: {},
    LeNet: {},
    Normalize: {},
    PreActResNet: {},
    PreActResNet18: {},
    ResNet20: {},
    ResNet56: {},
    RobustBenchModel: {"name": "Ding2020MMA"},  # no numeric arguments: nothing built here
    SmallCNN: {},
    Taps: {"network": nn.Identity()},
    TorchvisionModel: {"name": "resnet18"},
    TotalVariationMinimization: {},
    WideResNet: {"depth": 10, "widen_factor": 1},
    WNLLNetwork: {"backbone": nn.Linear(4, 3)},
    TemplateBank: {"dataset": TensorDataset(torch.rand(6, 1, 2, 2), torch.arange(6) % 2), "num_templates": 4},
}

# value kind -> {"Class.parameter" or "*.parameter": why that value is meaningful}
ALLOWS: dict[str, dict[str, str]] = {
    "zero": {
        "*.dropout": "no dropout (the default of SmallCNN and WideResNet)",
        "LeNet.first_padding": "the MatConvNet / Caffe LeNet of Deep Defense has no padding",
        "TotalVariationMinimization.drop_prob": "keep every pixel: TV denoising only",
        "TotalVariationMinimization.train_probability": "the identity in training (the spec's default)",
        "TotalVariationMinimization.seed": "0 is a seed like any other",
        "TemplateBank.seed": "0 is a seed like any other (WNLL's default template seed)",
    },
}


def build(cls: type, **kwargs: Any) -> nn.Module:
    return cls(**{**REQUIRED[cls], **kwargs})


def test_every_exported_class_is_covered():
    exported = {getattr(models_module, name) for name in models_module.__all__}
    assert {c for c in exported if inspect.isclass(c)} == set(REQUIRED)


def test_every_allowance_names_a_numeric_parameter_of_a_covered_class():
    assert not unknown_allowances(REQUIRED, ALLOWS)


@pytest.mark.parametrize(("cls", "parameter", "kind"), cases(REQUIRED))
def test_bad_values_are_refused_where_they_are_given(cls, parameter, kind):
    check_refused(build, cls, parameter, kind, ALLOWS)


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    [
        (Normalize, {"mean": math.nan}, "mean"),
        (Normalize, {"mean": (0.5, 1.5, 0.5)}, "mean"),
        (Normalize, {"std": math.inf}, "std"),
        (Normalize, {"std": (0.2, math.nan, 0.2)}, "std"),
        (Normalize, {"std": torch.tensor([0.2, 0.0])}, "std"),
        (Normalize, {"std": ()}, "std"),
        (SmallCNN, {"mean": math.nan}, "mean"),
        (MLP, {"hidden": (8, math.nan)}, "hidden"),
        (MLP, {"input_shape": (1, 0, 28)}, "input_shape"),
        (LeNet, {"conv_channels": (20, -50)}, "conv_channels"),
        (LeNet, {"hidden": (500, 0)}, "hidden"),
        (LeNet, {"input_size": 11}, "input_size"),
        (SmallCNN, {"input_size": 15}, "input_size"),
        (SmallCNN, {"dropout": 1.0}, "dropout"),
        (PreActResNet, {"num_blocks": (2, True, 2, 2)}, "num_blocks"),
        (VGG, {"depth": 16.0}, "depth"),
        (EOT, {"average": "median"}, "average"),
        (BiasFreeCNN, {"activation": "gelu"}, "activation"),
        (BiasFreeMLP, {"init": "xavier"}, "init"),
        (BiasFreeMLP, {"hidden": (8, 0)}, "hidden"),
        (BiasFreeCNN, {"input_size": 15}, "input_size"),
        (SmallCNN, {"bias": "no"}, "bias"),
    ],
)
def test_bad_values_of_other_arguments_are_refused(cls, kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        build(cls, **kwargs)


def test_normalize_accepts_numpy_and_tensor_statistics():
    numpy = pytest.importorskip("numpy")
    layer = Normalize(numpy.array([0.1, 0.2]), torch.tensor([0.5, 0.25]))
    assert layer.mean.flatten().tolist() == pytest.approx([0.1, 0.2])
    assert layer.std.flatten().tolist() == pytest.approx([0.5, 0.25])
