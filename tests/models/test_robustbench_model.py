"""``RobustBenchModel``: a RobustBench model-zoo network, loaded offline and weights-only.

Offline throughout: the weights are random weights of RobustBench's own architecture code
(``Ding2020MMA``, a WRN-28-4 that builds in milliseconds), saved in RobustBench's file layout
(``<model_dir>/cifar10/Linf/<name>.pt``, a ``state_dict`` entry with ``module.`` keys) in the test's folder.
"""

from __future__ import annotations

import builtins
import contextlib
import json
from pathlib import Path

import pytest
import torch

from lit_robust.models.robustbench_model import import_robustbench

with contextlib.suppress(ImportError):  # robustbench 1.1.1 imports pyautoattack as ``autoattack``
    import_robustbench()
pytest.importorskip("robustbench")

import robustbench.utils  # noqa: E402
from robustbench.model_zoo import model_dicts  # noqa: E402
from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel  # noqa: E402

from lit_robust.cli import main  # noqa: E402
from lit_robust.loading import UnsafeFileError  # noqa: E402
from lit_robust.models import Normalize, RobustBenchModel  # noqa: E402
from tests.helpers import CONFIGS, config_args  # noqa: E402

NAME = "Ding2020MMA"  # WRN-28-4, the smallest single-file CIFAR-10 Linf entry of the zoo


def architecture() -> torch.nn.Module:
    return model_dicts[BenchmarkDataset("cifar10")][ThreatModel("Linf")][NAME]["model"]()


@pytest.fixture
def zoo(tmp_path) -> tuple[Path, torch.nn.Module]:
    """``(model_dir, reference)``: random weights of the architecture, saved as RobustBench stores them."""
    torch.manual_seed(0)
    reference = architecture().eval()
    path = tmp_path / "models" / "cifar10" / "Linf" / f"{NAME}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    return tmp_path / "models", reference


@pytest.fixture
def offline(monkeypatch):
    """Any attempt at the network (RobustBench's download, gdown, requests) fails the test."""

    def no_network(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(robustbench.utils, "download_gdrive_new", no_network)
    monkeypatch.setattr(robustbench.utils.gdown, "download", no_network)
    monkeypatch.setattr(robustbench.utils.requests, "get", no_network)
    monkeypatch.setattr(robustbench.utils.requests.Session, "request", no_network)


def test_loads_the_weights_and_predicts_as_the_architecture(zoo, offline):
    model_dir, reference = zoo
    model = RobustBenchModel(NAME, model_dir=str(model_dir))
    assert not model.training
    assert not any(isinstance(module, Normalize) for module in model.modules())  # RobustBench's normalizes
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_a_missing_file_names_where_to_put_it_and_downloads_nothing(tmp_path, offline):
    expected = tmp_path / "nowhere" / "cifar10" / "Linf" / f"{NAME}.pt"
    with pytest.raises(FileNotFoundError) as error:
        RobustBenchModel(NAME, model_dir=str(tmp_path / "nowhere"))
    message = str(error.value)
    assert str(expected) in message and "robustbench.github.io" in message and "load_model" in message
    assert not (tmp_path / "nowhere").exists()  # RobustBench's loader would have created the folders


def test_an_unknown_name_lists_the_closest(tmp_path):
    with pytest.raises(ValueError, match=r"got 'Ding2020MM'; closest: \['Ding2020MMA'"):
        RobustBenchModel("Ding2020MM", model_dir=str(tmp_path))


class WritesMarker:
    """Unpickling this runs ``exec``, which writes ``path``: what an attacker's file would do."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.path)!r}, 'w').write('pwned')",)


def test_a_file_that_needs_code_to_load_is_refused(zoo, offline):
    model_dir, reference = zoo
    marker = model_dir.parent / "marker"
    path = model_dir / "cifar10" / "Linf" / f"{NAME}.pt"
    torch.save({"state_dict": reference.state_dict(), "payload": WritesMarker(marker)}, path)
    with pytest.raises(UnsafeFileError, match="refused to load"):
        RobustBenchModel(NAME, model_dir=str(model_dir))
    assert not marker.exists()


def test_lit_robust_test_evaluates_it_and_writes_a_report(zoo, offline, monkeypatch, capsys):
    model_dir, _ = zoo
    monkeypatch.chdir(model_dir.parent)  # runs/ lands in the test's folder
    args = [
        "test",
        *config_args(
            CONFIGS / "data" / "synthetic.yaml",
            CONFIGS / "model" / "standard.yaml",
            CONFIGS / "network" / "robustbench.yaml",
            CONFIGS / "eval" / "robustbench_cifar10.yaml",
        ),
        f"--model.init_args.network.init_args.name={NAME}",
        "--data.init_args.input_shape=[3, 32, 32]",
        "--data.init_args.num_train=4",
        "--data.init_args.num_val=4",
        "--data.init_args.num_test=4",
        "--data.init_args.batch_size=4",
        "--robustness.num_samples=4",
        "--robustness.attacks=[{class_path: lit_robust.attacks.FGSM, init_args: {eps: 0.0313725}}]",
        "--trainer.enable_progress_bar=false",
    ]
    main(args)
    reports = sorted(Path("runs").rglob("report.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["run"]["command"] == "test" and report["run"]["completed"]
    assert "fgsm_linf_8_255" in report["robust_acc"]
