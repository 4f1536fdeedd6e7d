"""The loss-choice check (APGD-CE against APGD-T, evaluation.md §6.1 item 6) fires on the failure GFA's
derivation predicts: a model whose cross-entropy gradient carries no signal while a margin loss still
finds the boundary (issue 14: "targeted or margin losses ... break it")."""

from __future__ import annotations

import lightning as L
import pytest
from torch import Tensor, nn

from lit_robust.attacks import APGDCE, APGDT, GradientMaskingWarning
from lit_robust.callbacks import GradientMaskingChecks
from lit_robust.defenses import StandardTraining
from tests.helpers import NUM_CLASSES, tiny_data


class Saturated(nn.Module):
    """``network``'s logits times ``scale``: the same decisions, a softmax saturated to exactly one-hot in
    fp32, so the cross-entropy gradient of confidently classified points is exactly 0, while APGD-T's
    targeted DLR loss (a ratio of logit differences) does not see the scale at all."""

    def __init__(self, network: nn.Module, scale: float):
        super().__init__()
        self.network, self.scale = network, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x) * self.scale


def loss_gap(tmp_path, network: nn.Module) -> dict[str, float]:
    checks = GradientMaskingChecks(
        white_box=APGDCE(0.3, steps=10), other_loss=APGDT(0.3, steps=10), num_samples=32
    )
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[checks], inference_mode=False,
    )  # fmt: skip
    model = StandardTraining(network=network, num_classes=NUM_CLASSES)
    return trainer.test(model, datamodule=tiny_data(), verbose=False)[0]


def test_the_loss_choice_check_fires_when_only_the_margin_loss_breaks_the_model(tmp_path, trained_tiny):
    network, _, _ = trained_tiny
    with pytest.warns(GradientMaskingWarning, match="loss_gap"):
        logged = loss_gap(tmp_path, Saturated(network, 1e4))
    assert logged["test/masking/loss_gap"] > 0.05 and logged["test/masking/loss_gap_flag"] == 1.0


def test_the_loss_choice_check_stays_quiet_on_the_same_decisions_unsaturated(tmp_path, trained_tiny):
    network, _, _ = trained_tiny
    logged = loss_gap(tmp_path, network)
    assert logged["test/masking/loss_gap"] <= 0.05 and logged["test/masking/loss_gap_flag"] == 0.0
