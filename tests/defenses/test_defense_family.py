"""Invariants every defense in ``lit_robust.defenses.__all__`` must keep (DESIGN.md, section 4)."""

from __future__ import annotations

import inspect
import math

import lightning as L
import pytest
import torch

import lit_robust.defenses as defenses_module
from lit_robust.attacks import PGD
from lit_robust.defenses import (
    GFA,
    TRADES,
    WNLL,
    AdversarialTraining,
    DeepDefense,
    FlowGradientRegularization,
    InputGradientRegularization,
    LocalFlatnessRegularization,
    RobustClassifier,
    StandardTraining,
)
from lit_robust.defenses.wnll import WNLLNetwork
from tests.helpers import (
    NUM_CLASSES,
    assert_every_parameter_has_a_gradient,
    quick_trainer,
    tiny_cnn,
    tiny_data,
)

DEFENSES = {
    StandardTraining: {},
    AdversarialTraining: {"attack": PGD(0.1, steps=2)},
    TRADES: {"attack": PGD(0.1, steps=2, loss="kl", random_start="normal"), "beta": 1.0},
    GFA: {"lam": 1.0},
    InputGradientRegularization: {"lam": 1.0},
    FlowGradientRegularization: {"lam": 1.0},
    LocalFlatnessRegularization: {"eps": 0.1, "alpha": 0.05, "steps": 2},
    DeepDefense: {},
    WNLL: {"feature_dim": NUM_CLASSES, "k": 3, "k_sigma": 2, "stage_b_templates": 8, "query_batch_size": 16},
}


def network_arguments(cls, seed: int = 0) -> dict:
    """Every defense takes a network (WNLL wraps it as a backbone: the tiny CNN's logits as 4-d features)."""
    return {"network": tiny_cnn(seed=seed)}


def make(cls, **overrides) -> RobustClassifier:
    return cls(**network_arguments(cls), num_classes=NUM_CLASSES, **{**DEFENSES[cls], **overrides})


def test_every_exported_defense_is_covered():
    exported = (getattr(defenses_module, name) for name in defenses_module.__all__)
    concrete = {c for c in exported if inspect.isclass(c) and issubclass(c, RobustClassifier)}
    assert concrete - {RobustClassifier} <= set(DEFENSES)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    return quick_trainer(tmp_path, **{"inference_mode": False, **kwargs})


@pytest.mark.parametrize("cls", DEFENSES, ids=lambda c: c.__name__)
def test_short_fit_has_finite_loss_and_logs_its_terms(cls, tmp_path):
    model = make(cls)
    fit = trainer(tmp_path, enable_checkpointing=False)
    fit.fit(model, datamodule=tiny_data())
    metrics = fit.callback_metrics
    assert math.isfinite(metrics["train/loss"])
    assert 0 <= metrics["val/acc"] <= 1
    batch = next(iter(tiny_data().train_dataloader()))
    expected = set(model.compute_loss(*batch))
    assert {f"train/{key}" for key in expected} <= set(metrics)


@pytest.mark.parametrize("cls", DEFENSES, ids=lambda c: c.__name__)
def test_every_trainable_parameter_gets_a_finite_gradient(cls):
    model = make(cls)
    model.train()
    x, y = next(iter(tiny_data().train_dataloader()))
    model.compute_loss(x, y)["loss"].backward()
    assert_every_parameter_has_a_gradient(model)


@pytest.mark.parametrize("cls", DEFENSES, ids=lambda c: c.__name__)
def test_checkpoint_round_trip(cls, tmp_path):
    model = make(cls)
    fit = trainer(tmp_path)
    fit.fit(model, datamodule=tiny_data())
    path = fit.checkpoint_callback.best_model_path
    restored = cls.load_from_checkpoint(path, **network_arguments(cls, seed=1), **DEFENSES[cls])
    assert type(restored) is cls
    for key, value in model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value, msg=key)
    x = tiny_data().test_set.tensors[0]
    model.eval()
    restored.eval()
    if cls is WNLL:  # predicts against templates drawn (with its seed) from the training data
        for candidate in (model, restored):
            candidate.load_templates(tiny_data())
    torch.testing.assert_close(restored(x), model(x))


@pytest.mark.parametrize("cls", DEFENSES, ids=lambda c: c.__name__)
def test_init_from_fine_tunes_the_network_of_another_defense(cls, tmp_path):
    network = tiny_cnn(seed=1)
    if cls is WNLL:  # its network is backbone + buffer + head: a softmax run of the same network
        network = WNLLNetwork(network, feature_dim=NUM_CLASSES, num_classes=NUM_CLASSES)
    reference = StandardTraining(network=network, num_classes=NUM_CLASSES)
    fit = trainer(tmp_path, enable_checkpointing=False)
    fit.fit(reference, datamodule=tiny_data())
    fit.save_checkpoint(tmp_path / "reference.ckpt")
    model = make(cls, init_from=str(tmp_path / "reference.ckpt"))
    model.on_fit_start()  # where the Trainer loads it, after any checkpoint restore
    for key, value in reference.network.state_dict().items():
        torch.testing.assert_close(model.network.state_dict()[key], value, msg=key)


def test_num_classes_disagreement_is_a_clear_error(tmp_path):
    model = StandardTraining(network=tiny_cnn(num_classes=3), num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="num_classes=4"):
        trainer(tmp_path).fit(model, datamodule=tiny_data())
    model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="num_classes"):
        trainer(tmp_path).fit(model, datamodule=tiny_data(num_classes=5))


def test_a_network_that_cannot_take_the_data_is_named_with_the_data_shape(tmp_path):
    three_channels = tiny_cnn(channels=3)  # a plain nn.Sequential: only its convolution's error to go on
    model = StandardTraining(network=three_channels, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match=r"Sequential cannot take the data's images of shape \(1, 12, 12\)"):
        trainer(tmp_path).fit(model, datamodule=tiny_data())


def test_bad_arguments_are_clear_errors():
    with pytest.raises(TypeError, match="network"):
        StandardTraining(network="small_cnn")
    with pytest.raises(TypeError, match="attack"):
        AdversarialTraining(network=tiny_cnn(), attack="pgd")
    with pytest.raises(ValueError, match="loss='kl'"):
        TRADES(network=tiny_cnn(), attack=PGD(0.1))
    with pytest.raises(ValueError, match="beta"):
        TRADES(network=tiny_cnn(), attack=PGD(0.1, loss="kl"), beta=-1.0)
