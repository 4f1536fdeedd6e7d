"""No lost weights and exact resumes: ``last.ckpt`` is the last epoch, ``--ckpt_path last`` goes on
where the run stopped, and 1 epoch + resume + 1 epoch equals 2 epochs straight."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from lit_robust.callbacks.checkpoint import RunCheckpoint
from lit_robust.cli import main
from lit_robust.defenses import StandardTraining
from tests.helpers import CONFIGS, config_args, logged_scalars, quick_trainer, tiny_cnn, tiny_data


class WorseEachEpoch(StandardTraining):
    """Logs ``val/score`` = -epoch, so the best checkpoint is always epoch 0."""

    def on_validation_epoch_end(self) -> None:
        self.log("val/score", -float(self.current_epoch))


def test_last_checkpoint_holds_the_final_epoch_when_the_best_was_earlier(tmp_path):
    checkpoint = RunCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", filename="best-{epoch}")
    model = WorseEachEpoch(network=tiny_cnn(), num_classes=4)
    quick_trainer(tmp_path, max_epochs=3, callbacks=[checkpoint]).fit(model, datamodule=tiny_data())
    assert Path(checkpoint.best_model_path).name == "best-epoch=0.ckpt"
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["training_progress"]["epochs_completed"] == 3
    for name, value in model.state_dict().items():
        assert torch.equal(last["state_dict"][name], value), name


def test_save_last_link_is_refused():
    with pytest.raises(ValueError, match="save_last must be True or False"):
        RunCheckpoint(save_last="link")


FIT = [  # a resumable run in seconds: adversarial training (random starts) on synthetic digits
    *config_args(CONFIGS / "data" / "synthetic.yaml", CONFIGS / "model" / "adversarial_training.yaml"),
    *config_args(CONFIGS / "trainer" / "debug.yaml", CONFIGS / "eval" / "smoke.yaml"),
    "--trainer.limit_train_batches=4",
    "--trainer.enable_progress_bar=false",
    "--model.init_args.attack.init_args.steps=1",
    "--robustness.num_samples=16",
]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_one_epoch_resume_one_epoch_equals_two_epochs_straight(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", *FIT, "--trainer.max_epochs=2"])  # runs/debug/version_0
    main(["fit", *FIT, "--trainer.max_epochs=1"])  # runs/debug/version_1, interrupted after 1
    main(["fit", *FIT, "--trainer.max_epochs=2", "--ckpt_path=last"])  # goes on in version_1

    straight, resumed = Path("runs/debug/version_0"), Path("runs/debug/version_1")
    assert sorted(p.name for p in Path("runs/debug").iterdir()) == ["version_0", "version_1"]
    first, second = final_weights(straight), final_weights(resumed)
    for name, value in first.items():
        torch.testing.assert_close(second[name], value, rtol=0, atol=1e-6, msg=name)
    saved = yaml.safe_load((resumed / "config.yaml").read_text())
    assert saved["trainer"]["logger"]["init_args"]["version"] is None  # reusing it starts a new folder
    logged_straight, logged_resumed = logged_scalars(straight), logged_scalars(resumed)
    for tag in ("val/acc", "val/robust_acc/pgd_linf_0.1", "train/loss"):
        assert logged_resumed[tag] == pytest.approx(logged_straight[tag], abs=1e-6), tag


def test_ckpt_path_last_without_a_run_is_an_error_not_a_fresh_start(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["fit", *FIT, "--ckpt_path=last"])
    assert re.search(r"error: .*no run to resume.*runs/debug/version_\*", capsys.readouterr().err)
    assert not Path("runs").exists()


def test_training_order_changes_with_the_epoch_and_not_with_a_resume():
    loader = tiny_data().train_dataloader()
    orders = []
    for epoch in (0, 1, 1):
        loader.sampler.set_epoch(epoch)
        orders.append(torch.cat([y for _, y in loader]))
    labels = torch.cat([y for _, y in tiny_data().train_dataloader()])
    assert torch.equal(orders[0], labels)  # a fresh loader starts at epoch 0
    assert not torch.equal(orders[0], orders[1]) and torch.equal(orders[1], orders[2])
