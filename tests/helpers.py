"""Plain helpers for the tests: tiny networks, data, trainers and assertions (fixtures live in conftest.py).

Import them from here (``from tests.helpers import tiny_cnn``), never from ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import lightning as L
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from lit_robust.attacks import PGD, FlowPGD
from lit_robust.callbacks import robust_flags
from lit_robust.data import MNISTSampleDataModule, SyntheticDataModule
from lit_robust.defenses import (
    InputGradientRegularization,
    LocalFlatnessRegularization,
    RobustClassifier,
    StandardTraining,
)
from lit_robust.models import Normalize, SmallCNN

NUM_CLASSES = 4
SHAPE = (1, 12, 12)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_args(*configs: str | Path) -> list[str]:
    """``--config a --config b ...``; a string names ``configs/<string>.yaml`` (``"model/gfa"``)."""
    paths = [CONFIGS / f"{config}.yaml" if isinstance(config, str) else config for config in configs]
    return [arg for path in paths for arg in ("--config", str(path))]


def logged_scalars(log_dir: Path) -> dict[str, list[float]]:
    """Every scalar TensorBoard holds under ``log_dir``: tag -> logged values, in order."""
    logged: dict[str, list[float]] = {}
    for event_file in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            logged.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    return logged


def tiny_cnn(num_classes: int = NUM_CLASSES, channels: int = 1, seed: int = 0) -> nn.Module:
    """A small CNN with a Normalize layer, BatchNorm and dropout: everything an attack must respect."""
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize(0.5, 0.3),
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(8 * 6 * 6, num_classes),
    )


def quick_trainer(tmp_path, **overrides) -> L.Trainer:
    """A quiet CPU Trainer for one short epoch (2 training batches, 1 validation batch), no logger."""
    defaults = dict(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    return L.Trainer(**{**defaults, **overrides})


def tiny_data(**overrides) -> SyntheticDataModule:
    """A set-up SyntheticDataModule: NUM_CLASSES classes of SHAPE images, 64/32/32 samples, batches of 16."""
    kwargs = dict(num_classes=NUM_CLASSES, input_shape=SHAPE, num_train=64, num_val=32, num_test=32)
    kwargs.update(overrides)
    datamodule = SyntheticDataModule(batch_size=16, **kwargs)
    datamodule.setup()
    return datamodule


def assert_every_parameter_has_a_gradient(model: nn.Module) -> None:
    """Every parameter got a finite, nonzero ``.grad`` from the last backward."""
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def assert_same_step_as_standard_training(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, exact: bool = True
) -> None:
    """``model`` (built on ``tiny_cnn()``) takes StandardTraining's training step: the same loss,
    parameter gradients, BatchNorm statistics and use of the random stream. ``exact``: bit for bit;
    else to float32 rounding (relative 1e-6), for a model whose forward computes the same values by
    another kernel (an input that requires grad lets some CPUs pick another convolution)."""
    results = []
    for candidate in (StandardTraining(network=tiny_cnn(), num_classes=model.num_classes), model):
        candidate.train()
        torch.manual_seed(0)
        loss = candidate.compute_loss(x, y)["loss"]
        loss.backward()
        grads = [p.grad for p in candidate.parameters()]
        results.append((loss.detach(), grads, [b.clone() for b in candidate.buffers()], torch.rand(1)))
    (loss0, grads0, buffers0, rng0), (loss1, grads1, buffers1, rng1) = results
    same = torch.equal if exact else partial(torch.allclose, rtol=1e-6, atol=1e-8)
    assert same(loss0, loss1) and torch.equal(rng0, rng1)
    for first, second in zip(grads0 + buffers0, grads1 + buffers1, strict=True):
        assert same(first, second)


# --- the short-run robustness recipe ------------------------------------------------------------------
# A copy of the recipe of ``benchmarks/short_run_robustness.py`` (tests never import ``benchmarks/``), for
# the configurations that ``tests/defenses/test_robustness_claims.py`` checks. The names below are spelled
# as in the benchmark: ``test_robustness_claims.py::test_the_recipe_is_the_benchmarks`` compares their
# source with the benchmark's, so the claims stay measured exactly as the benchmark measures them.

MNIST = {"mean": 0.1307, "std": 0.3081}


def adam(parameters):
    return torch.optim.Adam(parameters, lr=1e-3)


# name -> (defense factory, optimizer, SmallCNN arguments); entries as in the benchmark's CONFIGURATIONS
CONFIGURATIONS: dict[str, tuple[Callable, Callable, dict]] = {
    "standard": (lambda net: StandardTraining(net), adam, MNIST),
    "input_gradient_lam10": (lambda net: InputGradientRegularization(net, lam=10.0), adam, MNIST),
    "local_flatness_k5": (
        lambda net: LocalFlatnessRegularization(net, eps=0.3, alpha=0.08, steps=5, lam=0.02),
        adam,
        MNIST,
    ),
}
ATTACKS = [PGD(0.1, steps=10), PGD(0.2, steps=10), FlowPGD(0.5, steps=20, units="pixels")]


def train(name: str, datamodule: MNISTSampleDataModule) -> RobustClassifier:
    """The configuration ``name`` trained for 2 epochs on ``datamodule`` from seed 0, in eval mode."""
    make, optimizer, network = CONFIGURATIONS[name]
    L.seed_everything(0, verbose=False)
    model = make(SmallCNN(**network))
    model.optimizer_factory = optimizer
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    return model.eval()


def evaluate(model: RobustClassifier, datamodule: MNISTSampleDataModule) -> dict[str, float]:
    """Clean and per-attack accuracy on every third test digit (334), attacks seeded."""
    x, y = (t[::3] for t in datamodule.test_set.tensors)
    torch.manual_seed(0)
    flags = robust_flags(model, x, y, ATTACKS)
    return {key: flag.float().mean().item() for key, flag in flags.items()}
