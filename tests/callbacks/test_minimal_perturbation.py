"""MinimalPerturbation: norms of successes, +inf for failures, medians and rho_2 that follow."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from lit_robust.attacks import PGD, Attack, ThreatModel
from lit_robust.callbacks import MinimalPerturbation
from lit_robust.defenses import StandardTraining
from tests.callbacks.test_robustness_evaluation import PixelClassifier, pixel_batch
from tests.helpers import NUM_CLASSES, tiny_data


class NudgeGroup(Attack):
    """Moves pixel (0, 0) to the next class (a change of 0.1) on the samples marked ``marker``;
    on the others it returns the input unchanged: a failure, which must not read as distance 0."""

    threat_model = ThreatModel.UNBOUNDED
    short_name = "nudge"

    def __init__(self, marker: float):
        super().__init__()
        self.marker = marker

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        hit = (x[:, 0, 0, 1] - self.marker).abs() < 1e-6
        x = x.clone()
        x[hit, 0, 0, 0] += 0.1
        return x


def test_failures_are_infinite_and_medians_follow():
    x, y, _ = pixel_batch()  # 10 clean-correct points; marker 0.25 on 3 of them (rows 1, 2, 3)
    callback = MinimalPerturbation([NudgeGroup(0.25)])
    values = callback.per_sample(PixelClassifier(), x, y)
    l2 = values["nudge/l2"]
    assert len(l2) == 10
    assert torch.isinf(l2).sum() == 7
    torch.testing.assert_close(l2[l2.isfinite()], torch.full((3,), 0.1))
    metrics = callback.summarize("test", values)
    assert math.isinf(metrics["test/median_l2/nudge"])  # more than half failed
    assert metrics["test/success_rate/nudge"] == pytest.approx(0.3)
    assert metrics["test/mean_l2/nudge"] == pytest.approx(0.1)
    norms_x = x[[1, 2, 3]].flatten(1).norm(dim=1)
    torch.testing.assert_close(metrics["test/rho2/nudge"], (0.1 / norms_x).mean())


def test_logged_through_test(tmp_path, trained_tiny):
    network, _, _ = trained_tiny
    callback = MinimalPerturbation([PGD(0.3, steps=5)], num_samples=24)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        inference_mode=True, default_root_dir=tmp_path, callbacks=[callback],
    )  # fmt: skip
    logged = trainer.test(StandardTraining(network=network, num_classes=NUM_CLASSES), datamodule=tiny_data())[
        0
    ]
    name = "pgd_linf_0.3"
    assert 0 < logged[f"test/success_rate/{name}"] <= 1
    assert logged[f"test/mean_l2/{name}"] > 0
    assert logged[f"test/median_linf/{name}"] <= 0.3 + 1e-6 or math.isinf(logged[f"test/median_linf/{name}"])
    assert logged[f"test/rho2/{name}"] > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        MinimalPerturbation([])
