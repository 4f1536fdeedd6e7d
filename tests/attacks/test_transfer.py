"""Transfer attacks craft on the source and never look at the target."""

from __future__ import annotations

import pytest
import torch

from lit_robust.attacks import PGD, Transfer
from lit_robust.cli import LitRobustCLI
from tests.conftest import config_args, tiny_cnn


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
