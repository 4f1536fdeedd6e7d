"""Transfer attacks craft on the source and never look at the target."""

from __future__ import annotations

import sys

import pytest
import torch

from lit_robust.attacks import PGD, Transfer
from lit_robust.cli import LitRobustCLI
from tests.helpers import config_args, tiny_cnn


def test_examples_come_from_the_source(trained_tiny):
    target, x, y = trained_tiny
    source = tiny_cnn(seed=3).eval()
    inner = PGD(0.1, steps=3, random_start="none")
    transfer = Transfer(inner, source=source, source_name="other")
    torch.testing.assert_close(transfer(target, x, y), inner(source, x, y))
    self_transfer = Transfer(inner, source=target)
    torch.testing.assert_close(self_transfer(tiny_cnn(seed=4), x, y), inner(target, x, y))
    assert transfer.name == "transfer_other_linf_0.1" and transfer.eps == 0.1


def test_source_from_a_lit_robust_checkpoint(tmp_path, monkeypatch, trained_tiny):
    monkeypatch.chdir(tmp_path)
    args = ["fit", *config_args("data/synthetic", "model/standard", "trainer/debug")]
    args.append("--trainer.enable_progress_bar=false")
    cli = LitRobustCLI(args=args)
    checkpoint = cli.trainer.checkpoint_callback.best_model_path
    transfer = Transfer(PGD(0.1, steps=2, random_start="none"), source_checkpoint=checkpoint)
    x = torch.rand(4, 1, 28, 28)
    y = torch.arange(4)
    expected = PGD(0.1, steps=2, random_start="none")(cli.model, x, y)
    torch.testing.assert_close(transfer(tiny_cnn(), x, y), expected)


def test_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        Transfer(PGD(0.1))
    with pytest.raises(ValueError, match="exactly one"):
        Transfer(PGD(0.1), source=tiny_cnn(), source_checkpoint="x.ckpt")


def test_a_checkpoint_names_an_imported_lightning_module_or_is_refused(tmp_path, trained_tiny):
    """The file names the class to rebuild; Transfer imports nothing a file names and builds nothing else."""
    _, x, y = trained_tiny
    weights = tiny_cnn().state_dict()
    files = {
        "bare": {},  # saved from code: no class recorded
        "foreign": {"_class_path": "not_imported_package.Model"},
        "not_lightning": {"_class_path": "torch.nn.Linear", "in_features": 2, "out_features": 2},
    }
    for stem, hparams in files.items():
        torch.save({"state_dict": weights, "hyper_parameters": hparams}, tmp_path / f"{stem}.ckpt")

    def run(stem: str) -> None:
        Transfer(PGD(0.1, steps=1), source_checkpoint=str(tmp_path / f"{stem}.ckpt"))(tiny_cnn(), x, y)

    with pytest.raises(ValueError, match=r"bare\.ckpt' does not name its model class"):
        run("bare")
    with pytest.raises(ValueError, match=r"holds a not_imported_package\.Model, which is not an imported"):
        run("foreign")
    assert "not_imported_package" not in sys.modules
    with pytest.raises(ValueError, match=r"holds a torch\.nn\.Linear, which is not an imported Lightning"):
        run("not_lightning")
    with pytest.raises(FileNotFoundError, match="source_checkpoint: no file"):
        run("missing")
