"""The masking checks fire on a deliberately masked model and stay quiet on a normal one."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from lit_robust.attacks import FGSM, PGD, GradientMaskingWarning, Transfer
from lit_robust.callbacks import GradientMaskingChecks
from lit_robust.defenses import StandardTraining
from tests.helpers import NUM_CLASSES, tiny_data


class _KillGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return torch.zeros_like(grad)


class KillGradient(nn.Module):
    """Identity forward, zero backward: a network behind it looks perfectly robust to gradients."""

    def forward(self, x: Tensor) -> Tensor:
        return _KillGradient.apply(x)


def checks_for(network: nn.Module, source: nn.Module) -> GradientMaskingChecks:
    return GradientMaskingChecks(
        white_box=PGD(0.3, steps=10),
        single_step=FGSM(0.3),
        black_box=[Transfer(PGD(0.3, steps=10), source=source, source_name="twin")],
        stronger=PGD(0.3, steps=20, name="pgd_20_steps"),
        other_loss=PGD(0.3, steps=10, random_start="none", name="pgd_no_start"),
        eps_sweep=[PGD(eps, steps=10) for eps in (0.1, 0.5, 0.9)],
        num_samples=32,
    )


def run(tmp_path, network: nn.Module, callback: GradientMaskingChecks) -> dict[str, float]:
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[callback],
    )  # fmt: skip
    return trainer.test(StandardTraining(network=network, num_classes=NUM_CLASSES), datamodule=tiny_data())[0]


def test_a_masked_model_is_flagged(tmp_path, trained_tiny):
    network, _, _ = trained_tiny
    masked = nn.Sequential(KillGradient(), network)
    with pytest.warns(GradientMaskingWarning, match="transfer_twin"):
        logged = run(tmp_path, masked, checks_for(masked, source=network))
    assert logged["test/masking/zero_grad_frac"] == 1.0 and logged["test/masking/zero_grad_frac_flag"] == 1.0
    assert logged["test/masking/transfer_twin_linf_0.3_only_frac_flag"] == 1.0
    assert logged["test/masking/eps_sweep_ok"] == 0.0  # the white-box curve never reaches 0
    assert logged["test/masking/flags"] >= 3


def test_a_normal_model_passes(tmp_path, trained_tiny):
    network, _, _ = trained_tiny
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        logged = run(tmp_path, network, checks_for(network, source=network))
    assert logged["test/masking/flags"] == 0.0, {k: v for k, v in logged.items() if "masking" in k}
    assert logged["test/masking/zero_grad_frac"] == 0.0
    assert logged["test/masking/eps_sweep_ok"] == 1.0
    assert "test/masking/loss_gap" in logged
