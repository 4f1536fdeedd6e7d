"""Every evaluation callback, through a real ``trainer.validate`` / ``trainer.test``, on the edge cases:
a model wrong everywhere, a subset of one sample, and attacks that break every point. No crash, and
every logged number means what the docstrings say (an accuracy over no point is 0, a median over no
success is ``inf``, a statistic over no attacked point is NaN)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn

from lit_robust.attacks import FGSM, PGD, Attack, DeepFool, ThreatModel
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
from tests.helpers import NUM_CLASSES, quick_trainer, tiny_cnn, tiny_data

WRONG, ONE, BROKEN = "wrong_everywhere", "one_sample", "always_broken"
STAGE = {WRONG: "val", ONE: "test", BROKEN: "test"}  # one code path: the scenarios share the stages out
NUM_SAMPLES = {WRONG: 8, ONE: 1, BROKEN: 8}
BATCH_SIZE = 3  # 8 samples: batches of 3, 3 and 2, some of them possibly without a clean-correct point


class AbsentClass(nn.Module):
    """Appends a logit that always wins by 1: class ``NUM_CLASSES``, which no label has. Wrong everywhere,
    with gradients as alive as the wrapped network's."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        logits = self.network(x)
        return torch.cat([logits, logits.amax(dim=1, keepdim=True) + 1], dim=1)


class Unchanged(Attack):
    """Returns the input: an attack that never succeeds."""

    threat_model = ThreatModel.UNBOUNDED
    short_name = "unchanged"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return x.clone()


def model_for(scenario: str, trained: nn.Module) -> StandardTraining:
    if scenario == WRONG:
        return StandardTraining(network=AbsentClass(trained), num_classes=NUM_CLASSES + 1)
    if scenario == ONE:
        return StandardTraining(network=trained, num_classes=NUM_CLASSES)
    return StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)  # untrained: Linf 1 breaks all


def is_share(value: float, n: int) -> bool:
    """A fraction of ``n`` points: k / n for an integer k in [0, n]."""
    return 0 <= value <= 1 and math.isclose(value * n, round(value * n), abs_tol=1e-6)


# --- per callback: how to build it for a scenario, and what it must log there -----------------------


def robustness(scenario: str, n: int) -> L.Callback:
    return RobustnessEvaluation([PGD(1.0, steps=5)], num_samples=n, batch_size=BATCH_SIZE)


def check_robustness(scenario: str, n: int, stage: str, logged: dict[str, float]) -> None:
    clean, worst = logged[f"{stage}/subset_acc"], logged[f"{stage}/worst_case_acc"]
    assert worst == logged[f"{stage}/robust_acc/pgd_linf_1"] <= clean
    assert is_share(clean, n) and is_share(worst, n)
    if scenario == WRONG:
        assert clean == 0
    if scenario == BROKEN:
        assert clean > 0 and worst == 0  # clean-correct points exist, none survives


def minimal(scenario: str, n: int) -> L.Callback:
    attacks = [DeepFool(max_iter=10), Unchanged()]
    return MinimalPerturbation(attacks, rho2_steps=[3], num_samples=n, batch_size=BATCH_SIZE)


def check_minimal(scenario: str, n: int, stage: str, logged: dict[str, float]) -> None:
    statistics = ("median_l2", "median_linf", "mean_l2", "success_rate", "rho2")
    assert logged[f"{stage}/deepfool_rho2_u3"] > 0  # over every point, correct or not
    if scenario == WRONG:  # nothing to attack: every per-attack statistic is NaN, not 0 or inf
        for name in ("deepfool_l2", "unchanged"):
            assert all(math.isnan(logged[f"{stage}/{s}/{name}"]) for s in statistics), logged
        return
    never = {s: logged[f"{stage}/{s}/unchanged"] for s in statistics}
    assert never["success_rate"] == 0 and math.isinf(never["median_l2"]) and math.isinf(never["median_linf"])
    assert math.isnan(never["mean_l2"]) and math.isnan(never["rho2"])  # means over no success
    assert logged[f"{stage}/success_rate/deepfool_l2"] == 1  # DeepFool breaks these every time
    for statistic in ("median_l2", "median_linf", "mean_l2", "rho2"):
        assert 0 < logged[f"{stage}/{statistic}/deepfool_l2"] < math.inf


def masking(scenario: str, n: int) -> L.Callback:
    return GradientMaskingChecks(
        white_box=PGD(1.0, steps=3),
        single_step=FGSM(1.0),
        stronger=PGD(1.0, steps=5, name="pgd_5_steps"),
        other_loss=PGD(1.0, steps=3, random_start="none", name="pgd_no_start"),
        eps_sweep=[PGD(0.5, steps=3), PGD(0.9, steps=3)],
        num_samples=n,
        batch_size=BATCH_SIZE,
    )


def check_masking(scenario: str, n: int, stage: str, logged: dict[str, float]) -> None:
    ours = {key: value for key, value in logged.items() if key.startswith(f"{stage}/masking/")}
    shares = {key: value for key, value in ours.items() if key.endswith("_frac")}
    assert len(shares) == 3 and all(is_share(value, n) for value in shares.values())
    assert ours[f"{stage}/masking/flags"] == sum(v for k, v in ours.items() if k.endswith("_flag"))
    if scenario in (WRONG, BROKEN):  # nothing survives the white-box attack: no share, no flag
        assert all(value == 0 for value in shares.values()), shares
        assert ours[f"{stage}/masking/robust_acc/pgd_linf_1"] == 0
        assert ours[f"{stage}/masking/flags"] == 0, ours


def eps_search(scenario: str, n: int) -> L.Callback:
    return FGSEpsRef(tolerance=0.05, num_samples=n, batch_size=BATCH_SIZE)


def check_eps_search(scenario: str, n: int, stage: str, logged: dict[str, float]) -> None:
    found = logged[f"{stage}/fgs_eps_50"]
    if scenario in (WRONG, BROKEN):  # clean accuracy already <= 50%: eps 0, and no fraction to report
        assert found == 0
        assert not any("eps_ref" in key for key in logged), logged
        return
    assert 0 < found <= 1 and logged[f"{stage}/fgs_eps_ref"] == pytest.approx(found)
    assert all(is_share(logged[f"{stage}/robust_acc/fgs_{f}_eps_ref"], n) for f in ("0.2", "0.5", "1.0"))


def eps_fixed(scenario: str, n: int) -> L.Callback:
    return FGSEpsRef(eps_ref=1.0, num_samples=n, batch_size=BATCH_SIZE)


def check_eps_fixed(scenario: str, n: int, stage: str, logged: dict[str, float]) -> None:
    accuracies = [logged[f"{stage}/robust_acc/fgs_{f}_eps_ref"] for f in ("0.2", "0.5", "1.0")]
    assert logged[f"{stage}/fgs_eps_ref"] == 1.0 and f"{stage}/fgs_eps_50" not in logged
    assert all(is_share(value, n) for value in accuracies)
    if scenario in (WRONG, BROKEN):
        assert accuracies[-1] == 0
    if scenario == WRONG:
        assert accuracies == [0, 0, 0]


def examples(scenario: str, n: int) -> L.Callback:
    return AdversarialExamples(FGSM(0.3), num_images=n)


def check_examples(scenario: str, n: int, stage: str, logged: dict[str, float], log_dir: str) -> None:
    events = EventAccumulator(log_dir)
    events.Reload()
    assert events.Tags()["images"] == [f"{stage}/adversarial_examples/fgsm_linf_0.3"]


def alignment(scenario: str, n: int) -> L.Callback:
    return GradientFeatureAlignment(num_samples=n, batch_size=BATCH_SIZE)


def check_alignment(scenario: str, n: int, stage: str, logged: dict[str, float]) -> None:
    values = {key: value for key, value in logged.items() if key.startswith(f"{stage}/gfa_abs_cos/")}
    assert f"{stage}/gfa_abs_cos/input" in values and len(values) >= 2  # the input and the Linear
    assert all(0 <= value <= 1 for value in values.values()), values


def flatness(scenario: str, n: int) -> L.Callback:
    return LocalFlatness(eps=0.1, steps=2, num_samples=n, batch_size=BATCH_SIZE)


def check_flatness(scenario: str, n: int, stage: str, logged: dict[str, float]) -> None:
    assert 0 < logged[f"{stage}/lfr_local_flatness"] < math.inf
    assert 0 < logged[f"{stage}/lfr_grad_norm_clean"] < math.inf


CALLBACKS: dict[str, tuple[Callable[[str, int], L.Callback], Callable[..., None]]] = {
    "RobustnessEvaluation": (robustness, check_robustness),
    "MinimalPerturbation": (minimal, check_minimal),
    "GradientMaskingChecks": (masking, check_masking),
    "FGSEpsRef-search": (eps_search, check_eps_search),
    "FGSEpsRef-fixed": (eps_fixed, check_eps_fixed),
    "AdversarialExamples": (examples, check_examples),
    "GradientFeatureAlignment": (alignment, check_alignment),
    "LocalFlatness": (flatness, check_flatness),
}


def run(tmp_path, model: L.LightningModule, callback: L.Callback, stage: str) -> tuple[dict[str, float], str]:
    logger = TensorBoardLogger(tmp_path, name="edge")
    trainer = quick_trainer(
        tmp_path, logger=logger, limit_test_batches=1, enable_checkpointing=False, callbacks=[callback]
    )
    datamodule = tiny_data()  # loaders, not the datamodule: its num_classes check would refuse AbsentClass
    if stage == "val":
        trainer.validate(model, dataloaders=datamodule.val_dataloader(), verbose=False)
    else:
        trainer.test(model, dataloaders=datamodule.test_dataloader(), verbose=False)
    return {key: float(value) for key, value in trainer.callback_metrics.items()}, logger.log_dir


@pytest.mark.parametrize("scenario", [WRONG, ONE, BROKEN])
@pytest.mark.parametrize("name", list(CALLBACKS))
def test_edge_case(tmp_path, trained_tiny, name: str, scenario: str):
    build, check = CALLBACKS[name]
    n, stage = NUM_SAMPLES[scenario], STAGE[scenario]
    model = model_for(scenario, trained_tiny[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logged, log_dir = run(tmp_path, model, build(scenario, n), stage)
    messages = [str(w.message) for w in caught]
    if name == "GradientMaskingChecks":  # no clean-correct point: a clean bill that checked nothing
        assert (scenario == WRONG) == any("no point is classified correctly" in m for m in messages)
    extra: dict[str, Any] = {"log_dir": log_dir} if name == "AdversarialExamples" else {}
    check(scenario, n, stage, logged, **extra)


def test_the_covered_callbacks_are_the_exported_ones():
    from lit_robust import callbacks

    exported = {name for name in callbacks.__all__ if isinstance(getattr(callbacks, name), type)}
    assert {name.split("-")[0] for name in CALLBACKS} == exported - {"SubsetEvaluation"}
