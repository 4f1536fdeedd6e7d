"""LocalFlatness: the inner-max estimate of LF_eps for any model, in fit, validate and test."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lit_robust.callbacks.local_flatness import LocalFlatness
from lit_robust.defenses import LocalFlatnessRegularization, StandardTraining
from tests.helpers import NUM_CLASSES, quick_trainer, tiny_cnn, tiny_data


def trainer(tmp_path, callback, **kwargs) -> L.Trainer:
    return quick_trainer(tmp_path, **{"enable_checkpointing": False, "callbacks": [callback], **kwargs})


def _reference_l1_norms(network, x, y):
    """||d/dx CE(f(x_b), y_b)||_1, one sample at a time."""
    norms = []
    for b in range(len(x)):
        xb = x[b : b + 1].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(network(xb), y[b : b + 1]), xb)
        norms.append(grad.abs().sum())
    return torch.stack(norms)


def test_eps_zero_gives_the_clean_gradient_norm_and_leaves_the_model_untouched():
    model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
    model.train()
    x, y = tiny_data().val_set.tensors
    values = LocalFlatness(eps=0.0, init_std=0.0, steps=2).per_sample(model, x, y)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    reference = _reference_l1_norms(tiny_cnn().eval(), x, y)
    torch.testing.assert_close(values["grad_norm_clean"], reference)
    torch.testing.assert_close(values["local_flatness"], reference)


def test_the_ascent_finds_steeper_points_than_the_clean_ones(trained_tiny):
    network, x, y = trained_tiny
    values = LocalFlatness(eps=0.1, alpha=0.01, steps=10).per_sample(network, x, y)
    assert values["local_flatness"].mean() > 1.5 * values["grad_norm_clean"].mean()


@pytest.mark.parametrize("cls", [StandardTraining, LocalFlatnessRegularization])
def test_fit_logs_the_estimate_for_any_defense(cls, tmp_path):
    model = cls(network=tiny_cnn(), num_classes=NUM_CLASSES)
    fit = trainer(tmp_path, LocalFlatness(eps=0.1, steps=3, num_samples=16, batch_size=8))
    fit.fit(model, datamodule=tiny_data())
    metrics = fit.callback_metrics
    assert metrics["val/lfr_local_flatness"] >= metrics["val/lfr_grad_norm_clean"] > 0


def test_validate_and_test_under_inference_mode(tmp_path):
    model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
    run = trainer(tmp_path, LocalFlatness(eps=0.1, steps=2, num_samples=8), inference_mode=True)
    run.validate(model, datamodule=tiny_data(), verbose=False)
    assert torch.isfinite(run.callback_metrics["val/lfr_local_flatness"])
    run.test(model, datamodule=tiny_data(), verbose=False)
    assert run.callback_metrics["test/lfr_local_flatness"] > 0


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="eps must be in"):
        LocalFlatness(eps=2.0)
    with pytest.raises(ValueError, match="q .the gradient norm"):
        LocalFlatness(q=3)
    with pytest.raises(ValueError, match="steps"):
        LocalFlatness(steps=-1)
