"""Shared fixtures: tiny networks and data that make every test fast on two CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from lit_robust.data import SyntheticDataModule
from lit_robust.models import Normalize

torch.set_num_threads(1)  # tiny models: threads cost more than they give on two cores

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


@pytest.fixture
def all_cores():
    """For SmallCNN-sized work, where every core helps; tiny tests run on one thread."""
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(1)


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


def assert_same_step_as_standard_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """``model`` (built on ``tiny_cnn()``) takes exactly StandardTraining's training step: the same
    loss, parameter gradients, BatchNorm statistics and use of the random stream."""
    from lit_robust.defenses import StandardTraining

    results = []
    for candidate in (StandardTraining(network=tiny_cnn(), num_classes=model.num_classes), model):
        candidate.train()
        torch.manual_seed(0)
        loss = candidate.compute_loss(x, y)["loss"]
        loss.backward()
        grads = [p.grad for p in candidate.parameters()]
        results.append((loss.detach(), grads, [b.clone() for b in candidate.buffers()], torch.rand(1)))
    (loss0, grads0, buffers0, rng0), (loss1, grads1, buffers1, rng1) = results
    assert torch.equal(loss0, loss1) and torch.equal(rng0, rng1)
    for first, second in zip(grads0 + buffers0, grads1 + buffers1, strict=True):
        assert torch.equal(first, second)


@pytest.fixture(scope="session")
def trained_tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny CNN trained to ~100% on the synthetic task (eval mode), and a batch of its test data."""
    datamodule = tiny_data(num_train=256)
    model = tiny_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    images, labels = datamodule.train_set.tensors
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for parameter in model.parameters():
        parameter.grad = None
    x, y = datamodule.test_set.tensors
    return model, x, y
