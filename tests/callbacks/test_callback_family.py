"""Invariants every callback in ``lit_robust.callbacks.__all__`` must keep (DESIGN.md, section 4).

Each runs in a real ``trainer.validate`` and ``trainer.test`` on a tiny trained model, logs only names under
its stage's prefix, leaves the model as it found it (modes, parameters, no ``.grad``) and gives the same
numbers twice with its seed, whatever the global random stream. The edge cases (no correct point, one
sample, attacks that break everything) are in ``test_edge_cases.py``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import lit_robust.callbacks as callbacks_module
from lit_robust.attacks import FGSM, PGD, DeepFool
from lit_robust.callbacks import (
    AdversarialExamples,
    FGSEpsRef,
    GradientFeatureAlignment,
    GradientMaskingChecks,
    LocalFlatness,
    MinimalPerturbation,
    RobustnessEvaluation,
)
from lit_robust.defenses import StandardTraining
from tests.helpers import NUM_CLASSES, quick_trainer, tiny_data

SUBSET = {"num_samples": 8, "batch_size": 4}
# class -> a cheap instance, random where the callback has randomness (random starts), so the seed matters
CALLBACKS: dict[type, Callable[[], L.Callback]] = {
    AdversarialExamples: lambda: AdversarialExamples(PGD(0.3, steps=2), num_images=4),
    FGSEpsRef: lambda: FGSEpsRef(tolerance=0.05, num_probes=3, **SUBSET),
    GradientFeatureAlignment: lambda: GradientFeatureAlignment(**SUBSET),
    GradientMaskingChecks: lambda: GradientMaskingChecks(
        white_box=PGD(0.3, steps=2), single_step=FGSM(0.3), eps_sweep=[PGD(0.6, steps=2)], **SUBSET
    ),
    LocalFlatness: lambda: LocalFlatness(eps=0.1, steps=2, **SUBSET),
    MinimalPerturbation: lambda: MinimalPerturbation([DeepFool(max_iter=5)], rho2_steps=[2], **SUBSET),
    RobustnessEvaluation: lambda: RobustnessEvaluation([PGD(0.3, steps=2), FGSM(0.3)], **SUBSET),
}
FAMILY = pytest.mark.parametrize("cls", list(CALLBACKS), ids=lambda cls: cls.__name__)
STAGES = pytest.mark.parametrize("stage", ["validate", "test"])
PREFIX = {"validate": "val/", "test": "test/"}


class Probe(L.Callback):
    """Placed after the callback under test: records the model at epoch start and compares at epoch end,
    once the tested callback has run."""

    def __init__(self):
        self.before: tuple | None = None
        self.checked = 0

    def snapshot(self, model: nn.Module) -> tuple:
        modes = {name: module.training for name, module in model.named_modules()}
        state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        return modes, state, torch.is_grad_enabled()

    def start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.before = self.snapshot(pl_module)

    def end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        modes, state, grad_enabled = self.snapshot(pl_module)
        assert self.before is not None
        assert modes == self.before[0]
        assert state.keys() == self.before[1].keys()
        assert all(torch.equal(state[name], self.before[1][name]) for name in state), "parameters changed"
        assert grad_enabled == self.before[2]
        assert [name for name, p in pl_module.named_parameters() if p.grad is not None] == []
        self.checked += 1

    on_validation_epoch_start = on_test_epoch_start = start
    on_validation_epoch_end = on_test_epoch_end = end


def run(tmp_path: Path, trained: nn.Module, callback: L.Callback, stage: str, global_seed: int):
    """``stage`` with ``callback`` on a copy of the trained tiny CNN: (metrics, image tags and images)."""
    torch.manual_seed(global_seed)  # the global stream: the callback's own seed must decide its numbers
    model = StandardTraining(network=copy.deepcopy(trained), num_classes=NUM_CLASSES)
    probe = Probe()
    logger = TensorBoardLogger(tmp_path, name=f"run{global_seed}")
    trainer = quick_trainer(
        tmp_path, logger=logger, limit_test_batches=1, enable_checkpointing=False, callbacks=[callback, probe]
    )
    getattr(trainer, stage)(model, datamodule=tiny_data(), verbose=False)
    assert probe.checked == 1
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    metrics = {key: value for key, value in metrics.items() if "/attack_seconds/" not in key}  # a clock
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    images = {tag: [i.encoded_image_string for i in events.Images(tag)] for tag in events.Tags()["images"]}
    return metrics, images


@pytest.fixture(scope="module")
def model_metrics(trained_tiny, tmp_path_factory) -> dict[str, set[str]]:
    """What the model logs by itself, per stage: the names left to a callback are the others."""
    return {
        stage: set(run(tmp_path_factory.mktemp(stage), trained_tiny[0], L.Callback(), stage, 0)[0])
        for stage in PREFIX
    }


def test_every_exported_callback_is_covered():
    exported = (getattr(callbacks_module, name) for name in callbacks_module.__all__)
    concrete = {obj for obj in exported if inspect.isclass(obj) and not inspect.isabstract(obj)}
    assert concrete == set(CALLBACKS)


@FAMILY
@STAGES
@pytest.mark.filterwarnings("ignore:FGSEpsRef. no eps_ref given")  # test without validation: searched on test
def test_runs_logs_under_its_stage_leaves_the_model_and_is_seeded(
    tmp_path, trained_tiny, model_metrics, cls, stage
):
    """Two runs from different global seeds: the same numbers (and images), all named ``<stage>/...``; the
    Probe checks the model after each."""
    first = run(tmp_path / "first", trained_tiny[0], CALLBACKS[cls](), stage, global_seed=1)
    second = run(tmp_path / "second", trained_tiny[0], CALLBACKS[cls](), stage, global_seed=2)
    metrics, images = first
    ours = set(metrics) - model_metrics[stage]
    logged = ours | set(images)
    assert logged, "the callback logged nothing"
    assert all(name.startswith(PREFIX[stage]) for name in logged), sorted(logged)
    assert first == second
