"""No code runs from a file the user did not choose to trust: every entry point that loads a file.

The malicious file is a real pickle whose ``__reduce__`` writes a marker file when unpickled: each
entry point must leave no marker and raise an error that names the file and says why.
"""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from lit_robust.attacks import FGSM, Transfer
from lit_robust.cli import LitRobustCLI, main
from lit_robust.defenses import StandardTraining
from lit_robust.defenses.base import load_network_state
from lit_robust.defenses.checkpoint_io import SafeCheckpointIO
from lit_robust.loading import UnsafeFileError, load_file, recorded_progress, save_safetensors
from tests.helpers import CONFIGS, config_args, quick_trainer, tiny_cnn, tiny_data

BASE = [CONFIGS / "data" / "synthetic.yaml", CONFIGS / "model" / "standard.yaml"]
DEBUG = [CONFIGS / "trainer" / "debug.yaml", CONFIGS / "eval" / "smoke.yaml"]
SAFE_ONLY = r".*evil\.pt.*loads only tensors and plain data"
REFUSED = "refused to load " + SAFE_ONLY


class WritesMarker:
    """Unpickling this runs ``exec``, which writes ``path``: what an attacker's file would do."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.path)!r}, 'w').write('pwned')",)


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """``(evil.pt, marker)``: a checkpoint-shaped file whose unpickling writes ``marker``."""
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny_cnn().state_dict(), "payload": WritesMarker(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_the_payload_really_runs_when_unpickled(evil):
    path, marker = evil  # the test file is dangerous: so the tests below can fail
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


def test_load_file_and_load_network_state_refuse_it(evil):
    path, marker = evil
    with pytest.raises(UnsafeFileError, match=REFUSED):
        load_file(path, "evil file")
    with pytest.raises(UnsafeFileError, match="refused to load init_from " + SAFE_ONLY):
        load_network_state(path, tiny_cnn())
    assert not marker.exists()


def test_tensors_and_plain_data_still_load(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": tiny_cnn().state_dict(), "epoch": 3, "name": "x", "sizes": (1, 2)}, path)
    assert load_file(path)["epoch"] == 3
    assert set(load_network_state(path, tiny_cnn())) == set(tiny_cnn().state_dict())


def test_a_file_that_is_not_a_torch_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(UnsafeFileError, match="is not a file torch.save wrote"):
        load_file(path)


def test_init_from_and_load_network_weights_refuse_it(evil, tmp_path):
    path, marker = evil
    model = StandardTraining(network=tiny_cnn(), num_classes=4, init_from=str(path))
    with pytest.raises(UnsafeFileError, match=REFUSED):
        quick_trainer(tmp_path).fit(model, datamodule=tiny_data())
    with pytest.raises(UnsafeFileError, match=REFUSED):
        StandardTraining(network=tiny_cnn(), num_classes=4).load_network_weights(path)
    assert not marker.exists()


def test_trainer_ckpt_path_load_from_checkpoint_and_transfer_refuse_it(evil, tmp_path):
    path, marker = evil
    model = StandardTraining(network=tiny_cnn(), num_classes=4)
    with pytest.raises(UnsafeFileError, match="refused to load checkpoint " + SAFE_ONLY):
        quick_trainer(tmp_path).fit(model, datamodule=tiny_data(), ckpt_path=path)
    with pytest.raises(UnsafeFileError, match=REFUSED):
        StandardTraining.load_from_checkpoint(path, network=tiny_cnn())
    data = tiny_data()
    x, y = data.test_set.tensors
    with pytest.raises(UnsafeFileError, match=REFUSED):
        Transfer(FGSM(0.1), source_checkpoint=str(path))(tiny_cnn(), x[:2], y[:2])
    assert not marker.exists()


def test_an_explicit_weights_only_false_is_the_users_choice(evil, tmp_path):
    path, marker = evil  # trusting a file is possible, but only by saying so
    SafeCheckpointIO().load_checkpoint(path, weights_only=False)
    assert marker.exists()


def test_cli_init_from_and_ckpt_path_refuse_it(evil, tmp_path, monkeypatch, capsys):
    path, marker = evil
    monkeypatch.chdir(tmp_path)
    for option in (f"--model.init_args.init_from={path}", f"--ckpt_path={path}"):
        with pytest.raises(SystemExit):  # the refusal in one line (exit 2), the file never opened
            main(["test", *config_args(*BASE, *DEBUG), option])
        assert re.search(f"lit-robust: error: .*{REFUSED}", capsys.readouterr().err)
    assert not marker.exists()
    with pytest.raises(UnsafeFileError, match=REFUSED):  # the exception itself, for callers and debugging
        LitRobustCLI(args=["test", *config_args(*BASE, *DEBUG), f"--ckpt_path={path}"])


@pytest.mark.slow
def test_a_safe_checkpoint_naming_an_unsafe_init_from_never_opens_it(evil, tmp_path, monkeypatch, capsys):
    """The checkpoint itself loads safely, but its saved hyperparameters name ``init_from``: the
    CLI merges those into the config, and ``setup`` used to unpickle that file before restoring."""
    path, marker = evil
    monkeypatch.chdir(tmp_path)
    main(["fit", *config_args(*BASE, *DEBUG)])
    checkpoint = next(Path("runs/debug/version_0/checkpoints").glob("best-*.ckpt"))
    stored = torch.load(checkpoint, weights_only=True)
    stored["hyper_parameters"]["init_from"] = str(path)
    torch.save(stored, checkpoint)

    main(["test", *config_args(*BASE, *DEBUG), f"--ckpt_path={checkpoint}"])
    assert not marker.exists()
    assert "worst case over all attacks" in capsys.readouterr().out


def test_init_from_is_not_opened_when_a_checkpoint_is_restored(tmp_path):
    trainer = quick_trainer(tmp_path)
    model = StandardTraining(network=tiny_cnn(), num_classes=4)
    trainer.fit(model, datamodule=tiny_data())
    checkpoint = tmp_path / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    restored = StandardTraining(network=tiny_cnn(seed=3), num_classes=4, init_from=str(tmp_path / "absent"))
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_test_batches=1).test(
        restored, datamodule=tiny_data(), ckpt_path=checkpoint, verbose=False
    )  # init_from names no file: opening it would raise
    for first, second in zip(model.parameters(), restored.parameters(), strict=True):
        assert torch.equal(first, second)


def test_safetensors_weights_round_trip_into_init_from(tmp_path):
    """``.safetensors`` (tensors only: nothing in it can run) is an ``init_from`` format: the network
    starts from exactly the saved weights; a damaged file is refused with its name."""
    trained = tiny_cnn(seed=1)
    path = save_safetensors(trained.state_dict(), tmp_path / "weights.safetensors")
    model = StandardTraining(network=tiny_cnn(seed=2), num_classes=4, init_from=str(path))
    model.on_fit_start()  # where a Trainer loads init_from
    for name, value in trained.state_dict().items():
        assert torch.equal(model.network.state_dict()[name], value), name
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="broken.safetensors' is not a readable .safetensors file"):
        load_file(broken, "init_from")


def test_scored_from_exported_weights_a_model_reports_their_training_progress(tmp_path):
    """``test`` with ``init_from`` an exported file scores its weights and takes the training progress
    recorded with them (as a checkpoint would give); ``fit`` from the same file trains from it and
    keeps no progress of the source's."""
    progress = {"epochs_completed": 2, "max_epochs": 2, "global_step": 8, "train_seconds": 1.5}
    trained = tiny_cnn(seed=1)
    path = save_safetensors(trained.state_dict(), tmp_path / "weights.safetensors", progress)
    scored = StandardTraining(network=tiny_cnn(seed=2), num_classes=4, init_from=str(path))
    quick_trainer(tmp_path, limit_test_batches=1).test(scored, datamodule=tiny_data())
    assert scored.checkpoint_progress == progress and scored.init_from_scored
    assert torch.equal(scored.network[1].weight, trained[1].weight)
    tuned = StandardTraining(network=tiny_cnn(seed=2), num_classes=4, init_from=str(path))
    quick_trainer(tmp_path).fit(tuned, datamodule=tiny_data())
    assert tuned.checkpoint_progress is None and not tuned.init_from_scored


def test_a_restored_checkpoint_wins_over_init_from_and_says_so(tmp_path):
    """A ``ckpt_path`` (a resumed fit's ``config.yaml`` keeps one) is restored and scored; the
    ``init_from`` it overrides is not loaded, and a test run says so instead of staying silent."""
    trained = StandardTraining(network=tiny_cnn(seed=1), num_classes=4)
    trainer = quick_trainer(tmp_path)
    trainer.fit(trained, datamodule=tiny_data())
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    other = save_safetensors(tiny_cnn(seed=2).state_dict(), tmp_path / "other.safetensors")
    scored = StandardTraining(network=tiny_cnn(seed=3), num_classes=4, init_from=str(other))
    with pytest.warns(UserWarning, match="other.safetensors' is not loaded: a checkpoint was restored"):
        quick_trainer(tmp_path, limit_test_batches=1).test(
            scored, datamodule=tiny_data(), ckpt_path=tmp_path / "last.ckpt"
        )
    assert torch.equal(scored.network[1].weight, trained.network[1].weight)


def test_exported_weights_carry_their_training_progress_in_the_metadata(tmp_path):
    """The benchmark's exported weights keep their checkpoint's ``training_progress`` (what a report
    scored from them shows); files without it, or of another format, have none."""
    progress = {"epochs_completed": 3, "max_epochs": 3, "global_step": 87, "train_seconds": 12.5}
    weights = tiny_cnn(seed=1).state_dict()
    with_progress = save_safetensors(weights, tmp_path / "with.safetensors", progress)
    assert recorded_progress(with_progress) == progress
    assert load_file(with_progress).keys() == weights.keys()  # the metadata is not a tensor
    assert recorded_progress(save_safetensors(weights, tmp_path / "without.safetensors")) is None
    torch.save(weights, tmp_path / "weights.pt")
    assert recorded_progress(tmp_path / "weights.pt") is None
