"""The rule for ``configs/model/*.yaml``: a model config states only deviations from the constructor defaults.

Every ``init_args`` entry, at every level (the defense, its network, attack, optimizer and scheduler), either
fills an argument without a default or sets a value other than the default. A default lives in one place,
the constructor (and its docstring); a config that repeats it would silently disagree once the default
moved. The comments of each config say where its deviations come from (the paper, the official code).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import CONFIGS

# Files left out of the rule for now, with the reason; strict: the test fails once one of them complies.
PENDING: dict[str, str] = {}  # config name -> why it does not follow the rule yet (strict xfail)
MODEL_CONFIGS = sorted((CONFIGS / "model").glob("*.yaml"))


def resolve(class_path: str) -> type:
    """``"package.module.Name"`` -> the class."""
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def plain(value: Any) -> Any:
    """Tuples as lists, recursively, so that a YAML list can equal a tuple default."""
    if isinstance(value, (tuple, list)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def is_default(value: Any, default: Any) -> bool:
    """Whether the YAML ``value`` restates ``default`` (a class default restated as a bare ``class_path``)."""
    if default is inspect.Parameter.empty:
        return False
    if isinstance(value, dict) and "class_path" in value:
        return (
            inspect.isclass(default)
            and resolve(value["class_path"]) is default
            and not value.get("init_args")
        )
    return plain(value) == plain(default)


def restated_defaults(node: dict, where: str) -> list[str]:
    """Every ``init_args`` entry under the ``class_path`` node ``node`` that repeats its constructor default
    (or names no argument of it), as ``"where.argument = value"``."""
    parameters = inspect.signature(resolve(node["class_path"])).parameters
    found = []
    for name, value in (node.get("init_args") or {}).items():
        if name not in parameters:
            found.append(f"{where}.{name}: not an argument of {node['class_path']}")
        elif is_default(value, parameters[name].default):
            found.append(f"{where}.{name} = {value!r}")
        for index, item in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(item, dict) and "class_path" in item:
                found += restated_defaults(
                    item, f"{where}.{name}" + (f"[{index}]" if isinstance(value, list) else "")
                )
    return found


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(path, marks=pytest.mark.xfail(reason=PENDING[path.name], strict=True))
        if path.name in PENDING
        else path
        for path in MODEL_CONFIGS
    ],
    ids=lambda path: path.name,
)
def test_a_model_config_states_only_deviations_from_the_defaults(path: Path):
    model = yaml.safe_load(path.read_text())["model"]
    assert restated_defaults(model, "model") == []


def test_the_pending_configs_exist():
    assert set(PENDING) <= {path.name for path in MODEL_CONFIGS}


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0}}, ["x.momentum = 0"]),
        (
            {"class_path": "lit_robust.models.LeNet", "init_args": {"conv_channels": [6, 16]}},
            ["x.conv_channels"],
        ),
        (
            {
                "class_path": "lit_robust.defenses.StandardTraining",
                "init_args": {
                    "network": {
                        "class_path": "lit_robust.models.SmallCNN",
                        "init_args": {"zero_init_head": True},
                    }
                },
            },
            ["x.network.zero_init_head = True"],
        ),  # fmt: skip
        (
            {
                "class_path": "lit_robust.defenses.StandardTraining",
                "init_args": {"optimizer": {"class_path": "torch.optim.Adam"}},
            },
            ["x.optimizer = "],
        ),  # fmt: skip
        ({"class_path": "torch.optim.SGD", "init_args": {"learning_rate": 0.1}}, ["x.learning_rate: not an"]),
        ({"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "nesterov": True}}, []),
    ],
)
def test_restated_defaults_finds_every_kind(node, expected):
    """The checker itself: a restated default at any depth, a list restating a tuple, a bare class_path
    restating a class default and an unknown argument are found; deviations are not."""
    found = restated_defaults(node, "x")
    assert len(found) == len(expected)
    assert all(message.startswith(prefix) for message, prefix in zip(found, expected, strict=True)), found
