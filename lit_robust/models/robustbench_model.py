"""A model of the RobustBench model zoo (Croce et al., NeurIPS 2021 Datasets and Benchmarks), by name.

``RobustBenchModel("Ding2020MMA")`` is the network RobustBench's ``robustbench.utils.load_model(
model_name="Ding2020MMA", dataset="cifar10", threat_model="Linf", model_dir="models")`` returns, in eval
mode, so that ``lit-robust test`` evaluates it like any other network (``--ckpt_path`` is not needed:
the weights come with the network).

Inputs and normalization: RobustBench models take images in [0, 1] and standardize them *inside*
(the ones that need it carry their own mean/std), exactly the input contract of every network in
:mod:`lit_robust.models` (pixels in [0, 1], ``eps`` in pixel units). So this wrapper adds no
:class:`~lit_robust.models.Normalize` of its own and takes no ``mean``/``std``: adding the data's
statistics would normalize twice. (Nothing in lit_robust enforces that a network starts with a
``Normalize``; without one, DeepFool's ``space="normalized"`` falls back to pixel space.) It takes no
``num_classes`` either: the zoo's architecture fixes it, and :class:`RobustClassifier` checks the
logits against the data's classes at setup.

Offline and weights-only: the weights must already be at ``<model_dir>/<dataset>/<threat_model>/<name>.pt``
(RobustBench's own layout; run ``robustbench.utils.load_model`` once on a machine with internet, or
download the file linked from https://robustbench.github.io, and copy it there). A missing file is a
``FileNotFoundError`` naming that path *before* anything could download. RobustBench's loader calls
``torch.load`` without ``weights_only`` (so it unpickles under torch < 2.6); here the file is read with
:func:`lit_robust.loading.load_file` (``weights_only=True``: a file that needs code to load raises
``UnsafeFileError``), the architecture is built from RobustBench's model-zoo registry, and the state
dict is mapped as ``load_model`` does (a ``state_dict`` entry, ``module.``/``model.`` prefixes, the
``last`` entry of the Kireev2021Effectiveness / Andriushchenko2020Understanding files, the ImageNet
``model.`` prefix) and loaded with RobustBench's ``_safe_load_state_dict``. Not supported: the zoo's
ensembles (several weight files) and the entries RobustBench loads through ``timm``.

Needs the optional extra ``pip install lit-robust[robustbench]``. RobustBench 1.1.1 (PyPI) imports
``pkg_resources`` (setuptools < 82) and ``autoattack``, while the package it depends on, pyautoattack,
installs as ``pyautoattack``: :func:`import_robustbench` makes ``autoattack`` name that same package
when no ``autoattack`` is installed.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from lit_robust.loading import load_file

ZOO_PAGE = "https://robustbench.github.io"

# load_model's ImageNet exceptions: these checkpoints are not stored under a ``model.`` prefix
IMAGENET_UNPREFIXED = {
    "Singh2023Revisiting_ConvNeXt-T-ConvStem",
    "Singh2023Revisiting_ViT-B-ConvStem",
    "Singh2023Revisiting_ConvNeXt-S-ConvStem",
    "Singh2023Revisiting_ConvNeXt-B-ConvStem",
    "Singh2023Revisiting_ConvNeXt-L-ConvStem",
    "Peng2023Robust",
    "Chen2024Data_WRN_50_2",
    "Xu2024MIMIR_Swin-B",
    "Xu2024MIMIR_Swin-L",
}
IMAGENET_SWIN = {
    "Liu2023Comprehensive_Swin-B",
    "Liu2023Comprehensive_Swin-L",
    "Mo2022When_Swin-B",
    "RodriguezMunoz2024Characterizing_Swin-B",
    "RodriguezMunoz2024Characterizing_Swin-L",
}


def import_robustbench() -> Any:
    """``robustbench.utils``, after making ``autoattack`` importable as pyautoattack if needed.

    Raises:
        ImportError: robustbench (or what it imports) is missing, with the command that installs it.
    """
    if "autoattack" not in sys.modules and importlib.util.find_spec("autoattack") is None:
        # robustbench 1.1.1 depends on pyautoattack (a core dependency here) but imports it as ``autoattack``
        sys.modules["autoattack"] = importlib.import_module("pyautoattack")
        sys.modules["autoattack.state"] = importlib.import_module("pyautoattack.state")
    try:
        return importlib.import_module("robustbench.utils")
    except ImportError as error:
        hint = (
            " (robustbench 1.1.1 imports pkg_resources: pip install 'setuptools<82')"
            if (getattr(error, "name", None) == "pkg_resources")
            else ""
        )
        raise ImportError(
            f"RobustBenchModel needs robustbench: pip install 'lit-robust[robustbench]'{hint}; "
            f"importing it failed with {type(error).__name__}: {error}"
        ) from error


def weights_path(
    name: str, dataset: str = "cifar10", threat_model: str = "Linf", model_dir: str = "models"
) -> Path:
    """``<model_dir>/<dataset>/<threat_model>/<name>.pt``: where RobustBench keeps the weights."""
    return Path(model_dir) / dataset / threat_model / f"{name}.pt"


def state_dict_of(checkpoint: Any, name: str, imagenet: bool, architecture: nn.Module) -> dict[str, Tensor]:
    """The state dict in a RobustBench weights file, keys mapped as ``robustbench.utils.load_model`` does."""
    rb = import_robustbench()
    if "Kireev2021Effectiveness" in name or name == "Andriushchenko2020Understanding":
        checkpoint = checkpoint["last"]  # RobustBench takes the last model (choices: 'last', 'best')
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        state = rb.rm_substr_from_state_dict(checkpoint["state_dict"], "module.")
    elif isinstance(checkpoint, dict) and "model_state_dict" in checkpoint:
        state = rb.rm_substr_from_state_dict(checkpoint["model_state_dict"], "module.")
    else:
        state = rb.rm_substr_from_state_dict(checkpoint, "module.")
    state = rb.rm_substr_from_state_dict(state, "model.")
    if imagenet:
        if name in IMAGENET_SWIN:
            try:  # timm comes with robustbench; optional, so imported only here
                swin = importlib.import_module("timm.models.swin_transformer")
                state = swin.checkpoint_filter_fn(state, architecture.model)
            except Exception:  # as load_model: keep the state as it is
                pass
        if name not in IMAGENET_UNPREFIXED:
            state = rb.add_substr_to_state_dict(state, "model.")
    return state


class RobustBenchModel(nn.Module):
    """A RobustBench model-zoo network with its weights, in eval mode; inputs in [0, 1], no ``Normalize``.

    The zoo's network is the submodule ``network`` (tap names read ``network.<its layers>``). See the
    module docstring for the weights file, its safe loading, and normalization.

    Args:
        name: the model's name in the zoo, e.g. ``"Standard"`` or ``"Ding2020MMA"`` (see
            https://robustbench.github.io or ``robustbench.model_zoo.models.model_dicts``).
        dataset: ``"cifar10"``, ``"cifar100"`` or ``"imagenet"``.
        threat_model: ``"Linf"``, ``"L2"`` or ``"corruptions"``.
        model_dir: the folder holding RobustBench's weights layout (``robustbench``'s ``model_dir``).

    Raises:
        ImportError: robustbench is not installed.
        ValueError: an unknown dataset, threat model or name (with the closest names), or a zoo entry
            this wrapper cannot load (an ensemble, a timm model).
        FileNotFoundError: the weights file is missing, naming where to put it and where to get it.
        lit_robust.loading.UnsafeFileError: the file needs code to load.
    """

    def __init__(
        self, name: str, dataset: str = "cifar10", threat_model: str = "Linf", model_dir: str = "models"
    ):
        super().__init__()
        rb = import_robustbench()
        enums = importlib.import_module("robustbench.model_zoo.enums")
        BenchmarkDataset, ThreatModel = enums.BenchmarkDataset, enums.ThreatModel  # noqa: N806

        try:
            dataset_ = BenchmarkDataset(dataset)
        except ValueError:
            raise ValueError(
                f"dataset must be one of {[d.value for d in BenchmarkDataset]}, got {dataset!r}"
            ) from None
        try:  # as load_model: the corruptions threat models share one folder
            threat_ = ThreatModel(ThreatModel(threat_model).value.replace("_3d", ""))
        except ValueError:
            raise ValueError(
                f"threat_model must be one of {[t.value for t in ThreatModel]}, got {threat_model!r}"
            ) from None
        zoo = rb.all_models[dataset_].get(threat_, {})
        if name not in zoo:
            close = difflib.get_close_matches(str(name), list(zoo), n=5, cutoff=0.5)
            raise ValueError(
                f"name must be a RobustBench {dataset_.value} {threat_.value} model, got {name!r}; closest: "
                f"{close}; all {len(zoo)}: robustbench.model_zoo.models.model_dicts or {ZOO_PAGE}"
            )
        entry = zoo[name]
        if isinstance(entry.get("gdrive_id"), list):
            raise ValueError(
                f"{name!r} is an ensemble of several weight files, which RobustBenchModel does not load"
            )
        if entry.get("gdrive_id") is None:
            raise ValueError(
                f"{name!r} has no weights file in RobustBench's zoo (a timm model), not supported"
            )
        self.name, self.dataset, self.threat_model = name, dataset_.value, threat_.value
        self.weights_path = weights_path(name, dataset_.value, threat_.value, model_dir)
        if not self.weights_path.is_file():  # before anything could try to download it
            raise FileNotFoundError(
                f"RobustBenchModel({name!r}): no weights at {str(self.weights_path)!r} (absolute: "
                f"{self.weights_path.resolve()}); lit_robust never downloads them. Put the file there: run "
                f"robustbench.utils.load_model(model_name={name!r}, dataset={dataset_.value!r}, "
                f"threat_model={threat_.value!r}, model_dir=...) on a machine with internet, or download it "
                f"from RobustBench's model zoo ({ZOO_PAGE}), and copy its <model_dir>/{dataset_.value}/"
                f"{threat_.value}/{name}.pt to that path (or point model_dir at the folder holding "
                f"{dataset_.value}/)"
            )
        network = entry["model"]()
        checkpoint = load_file(self.weights_path, f"RobustBench weights of {name!r}")
        state = state_dict_of(checkpoint, name, dataset_ == BenchmarkDataset.imagenet, network)
        self.network = rb._safe_load_state_dict(network, name, state, dataset_).eval()
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dataset={self.dataset!r}, threat_model={self.threat_model!r}"
