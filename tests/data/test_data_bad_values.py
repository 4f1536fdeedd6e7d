"""Every exported DataModule refuses a bad value (NaN, inf, -inf, negative, zero, a string) of each numeric
constructor argument where it is given (``tests/bad_values.py``), without touching any data: construction
reads nothing (ImageNet lists the class folders of an empty temporary ``data_dir``)."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import pytest

import lit_robust.data as data_module
from lit_robust.data import (
    CIFAR10DataModule,
    ImageDataModule,
    ImageNetDataModule,
    MNISTDataModule,
    MNISTSampleDataModule,
    SyntheticDataModule,
)
from tests.bad_values import cases, check_refused, unknown_allowances

DATAMODULES: tuple[type, ...] = (
    CIFAR10DataModule,
    ImageNetDataModule,
    MNISTDataModule,
    MNISTSampleDataModule,
    SyntheticDataModule,
)

# value kind -> {"Class.parameter" or "*.parameter": why that value is meaningful}
ALLOWS: dict[str, dict[str, str]] = {
    "zero": {
        "*.val_size": "no validation split (every training image trains)",
        "SyntheticDataModule.num_val": "no validation split",
        "SyntheticDataModule.num_test": "no test split",
        "SyntheticDataModule.noise": "noise-free images: the class prototypes themselves",
        "*.num_workers": "load in the main process (the default)",
        "*.seed": "0 is a seed like any other (the default)",
    },
}


@pytest.fixture
def build(tmp_path: Path):
    def build(cls: type, **kwargs: Any) -> ImageDataModule:
        folder = {"path": str(tmp_path / "mnist_5k.csv.gz")} if cls is MNISTSampleDataModule else {}
        if cls in (CIFAR10DataModule, ImageNetDataModule, MNISTDataModule):
            folder = {"data_dir": str(tmp_path)}
        return cls(**{**folder, **kwargs})

    return build


def test_every_exported_datamodule_is_covered():
    exported = (getattr(data_module, name) for name in data_module.__all__)
    modules = {c for c in exported if inspect.isclass(c) and issubclass(c, ImageDataModule)}
    assert modules - {ImageDataModule} == set(DATAMODULES)


def test_every_allowance_names_a_numeric_parameter_of_a_covered_datamodule():
    assert not unknown_allowances(DATAMODULES, ALLOWS)


@pytest.mark.parametrize(("cls", "parameter", "kind"), cases(dict.fromkeys(DATAMODULES)))
def test_bad_values_are_refused_where_they_are_given(build, cls, parameter, kind):
    check_refused(build, cls, parameter, kind, ALLOWS)


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    [
        (SyntheticDataModule, {"input_shape": (1, math.nan, 28)}, "input_shape"),
        (SyntheticDataModule, {"input_shape": (1, 0, 28)}, "input_shape"),
        (SyntheticDataModule, {"input_shape": "1x28x28"}, "input_shape"),
        (ImageNetDataModule, {"image_size": 64, "resize_size": 63}, "resize_size"),
        (CIFAR10DataModule, {"val_size": 50000}, "val_size"),
        (MNISTDataModule, {"val_size": 60000}, "val_size"),
    ],
)
def test_bad_values_of_other_arguments_are_refused(build, cls, kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        build(cls, **kwargs)
