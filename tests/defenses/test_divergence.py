"""A diverged run stops with a clear error: no checkpoint and no accuracy from non-finite numbers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from lit_robust.attacks import FGSM
from lit_robust.callbacks import RobustnessEvaluation, robust_flags
from lit_robust.callbacks.checkpoint import RunCheckpoint
from lit_robust.cli import main
from lit_robust.defenses import StandardTraining
from lit_robust.finite import NonFiniteError
from tests.helpers import CONFIGS, config_args, quick_trainer, tiny_cnn, tiny_data


class InfiniteAtStep(StandardTraining):
    """A regularizer that overflows at training step ``bad_step`` (what lam = 1e4 does for real)."""

    def __init__(self, network, bad_step: int = 1, **kwargs):
        super().__init__(network, **kwargs)
        self.bad_step = bad_step

    def regularizer(self, x, y, logits):
        value = float("inf") if self.global_step == self.bad_step else 0.0
        return {"huge_reg": logits.new_tensor(value)}


class PoisonWeights(L.Callback):
    """Turns every weight into NaN after the last training batch, as an exploding step would."""

    def on_train_epoch_end(self, trainer, pl_module):
        with torch.no_grad():
            for parameter in pl_module.parameters():
                parameter.fill_(float("nan"))


def nan_network() -> torch.nn.Module:
    network = tiny_cnn()
    with torch.no_grad():
        network[-1].bias.fill_(float("nan"))
    return network


def test_a_non_finite_loss_stops_training_naming_the_step_and_the_terms(tmp_path):
    model = InfiniteAtStep(tiny_cnn(), bad_step=1, num_classes=4)
    checkpoint = RunCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/acc", mode="max")
    trainer = quick_trainer(tmp_path, max_epochs=2, callbacks=[checkpoint])
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteError, match=r"not finite at epoch 0, step 1 \(batch 1\): loss, huge_reg"):
        trainer.fit(model, datamodule=tiny_data())
    assert not (tmp_path / "checkpoints").exists()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # step 0 ran
    assert all(torch.isfinite(p).all() for p in model.parameters())  # step 1 never reached them


def test_no_checkpoint_and_no_accuracy_from_non_finite_weights(tmp_path):
    model = StandardTraining(tiny_cnn(), num_classes=4)
    checkpoint = RunCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/acc", mode="max")
    trainer = quick_trainer(tmp_path, callbacks=[checkpoint, PoisonWeights()], limit_val_batches=0)
    with pytest.raises(NonFiniteError, match="refusing to write a checkpoint at epoch 0"):
        trainer.fit(model, datamodule=tiny_data())
    assert not list(tmp_path.rglob("*.ckpt"))

    with pytest.raises(NonFiniteError, match="outputs are not finite"):
        quick_trainer(tmp_path).validate(model, datamodule=tiny_data(), verbose=False)


def test_attacks_refuse_to_score_a_model_with_non_finite_outputs(tmp_path):
    x, y = tiny_data().test_set.tensors
    with pytest.raises(NonFiniteError, match="robustness evaluation"):
        robust_flags(nan_network().eval(), x, y, [FGSM(0.1)])
    model = StandardTraining(nan_network(), num_classes=4)
    evaluation = RobustnessEvaluation(attacks=[FGSM(0.1)], num_samples=8)
    with pytest.raises(NonFiniteError):
        quick_trainer(tmp_path, callbacks=[evaluation]).test(model, datamodule=tiny_data(), verbose=False)


def test_a_diverged_cli_run_fails_and_its_report_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "diverging.yaml"
    config.write_text(
        "model:\n  class_path: tests.defenses.test_divergence.InfiniteAtStep\n"
        "  init_args:\n    bad_step: 2\n    network:\n      class_path: lit_robust.models.SmallCNN\n"
    )
    args = config_args(CONFIGS / "data" / "synthetic.yaml", config, CONFIGS / "trainer" / "debug.yaml")
    with pytest.raises(NonFiniteError):
        main(["fit", *args, "--test_after_fit=true"])
    assert "lit-robust fit: failed with NonFiniteError" in capsys.readouterr().err
    run = Path("runs/debug/version_0")
    assert "did not complete" in (run / "report.md").read_text()
    assert not list(run.rglob("*.ckpt"))
