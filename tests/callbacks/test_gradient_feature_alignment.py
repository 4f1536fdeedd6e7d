"""GradientFeatureAlignment: the GFA value of any model on a seeded subset, in fit, validate and test."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_robust.callbacks.gradient_feature_alignment import GradientFeatureAlignment
from lit_robust.callbacks.subset_evaluation import seeded_subset, stack_items
from lit_robust.defenses import StandardTraining
from lit_robust.defenses.gfa import GFA
from lit_robust.functional.alignment import l1_over_l2, per_sample_cosine
from lit_robust.models.taps import Taps
from tests.helpers import NUM_CLASSES, quick_trainer, tiny_cnn, tiny_data


def trainer(tmp_path, callback, **kwargs) -> L.Trainer:
    return quick_trainer(tmp_path, **{"enable_checkpointing": False, "callbacks": [callback], **kwargs})


def _reference_value(network, x, y):
    """Eval-mode GFA value per tap, one sample at a time: input (centered at 0.5) and the Linear's input."""
    network.eval()
    rows = []
    for b in range(len(x)):
        xb = x[b : b + 1].clone().requires_grad_(True)
        with Taps(network, names=["7"]).recording() as record:
            loss = torch.nn.functional.cross_entropy(network(xb), y[b : b + 1])
        h = record.module_inputs()["7"]
        g_x, g_h = torch.autograd.grad(loss, [xb, h])
        rows.append([per_sample_cosine(g_x, xb - 0.5, 0.0), per_sample_cosine(g_h, h, 0.0)])
    cosines = torch.tensor([[float(c.detach()) for c in row] for row in rows])
    return {"input": cosines[:, 0], "7": cosines[:, 1]}


def test_values_equal_a_per_sample_reference_and_leave_the_model_untouched():
    model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
    model.train()
    dataset = tiny_data().val_set
    callback = GradientFeatureAlignment(num_samples=10, seed=3)
    x, y = stack_items(dataset, seeded_subset(len(dataset), 10, 3).tolist())
    values = callback.per_sample(model, x, y)
    assert list(values) == ["input", "7", "grad_l1_over_l2/input"]
    assert model.network.training and all(m.training for m in model.modules())  # modes restored
    assert all(p.grad is None for p in model.parameters())
    reference = _reference_value(tiny_cnn(), x, y)
    for name in reference:
        torch.testing.assert_close(values[name], reference[name], rtol=1e-4, atol=1e-6)
    metrics = callback.summarize("val", values)
    torch.testing.assert_close(
        metrics["val/gfa_abs_cos/7"], reference["7"].abs().mean(), rtol=1e-4, atol=1e-6
    )
    torch.testing.assert_close(metrics["val/gfa_cos/input"], reference["input"].mean(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [StandardTraining, GFA])
def test_fit_logs_per_layer_values_for_any_defense(cls, tmp_path):
    model = cls(network=tiny_cnn(), num_classes=NUM_CLASSES)
    fit = trainer(tmp_path, GradientFeatureAlignment(num_samples=16, batch_size=8))
    fit.fit(model, datamodule=tiny_data())
    metrics = fit.callback_metrics
    for name in ("input", "7"):
        assert 0 <= metrics[f"val/gfa_abs_cos/{name}"] <= 1
        assert -1 <= metrics[f"val/gfa_cos/{name}"] <= 1
    assert metrics["val/gfa_abs_cos/7"] > 0


def test_validate_and_test_under_inference_mode(tmp_path):
    model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
    callback = GradientFeatureAlignment(taps="first", num_samples=8)
    run = trainer(tmp_path, callback, inference_mode=True)
    run.validate(model, datamodule=tiny_data(), verbose=False)
    assert "val/gfa_abs_cos/input" in run.callback_metrics
    assert "val/gfa_abs_cos/7" not in run.callback_metrics  # FIRST: the input only
    run.test(model, datamodule=tiny_data(), verbose=False)
    assert 0 < run.callback_metrics["test/gfa_abs_cos/input"] <= 1


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="task_loss"):
        GradientFeatureAlignment(task_loss="hinge")
    with pytest.raises(ValueError, match="taps"):
        GradientFeatureAlignment(taps="middle")


def test_the_input_gradients_l1_over_l2_ratio_is_measured_per_sample():
    model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
    dataset = tiny_data().val_set
    x, y = stack_items(dataset, seeded_subset(len(dataset), 6, 0).tolist())
    values = GradientFeatureAlignment(num_samples=6).per_sample(model, x, y)
    network = tiny_cnn().eval()
    expected = []
    for b in range(len(x)):
        xb = x[b : b + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(network(xb), y[b : b + 1]), xb)
        expected.append(float(g.abs().sum() / g.square().sum().sqrt()))
    torch.testing.assert_close(values["grad_l1_over_l2/input"], torch.tensor(expected), rtol=1e-4, atol=0)
    assert min(expected) >= 1 and max(expected) <= x[0].numel() ** 0.5


def test_l1_over_l2_spans_one_to_root_d():
    one_hot, flat = torch.zeros(2, 16), torch.full((2, 16), -0.3)
    one_hot[:, 3] = 5.0
    torch.testing.assert_close(l1_over_l2(one_hot), torch.ones(2))
    torch.testing.assert_close(l1_over_l2(flat), torch.full((2,), 4.0))
    assert l1_over_l2(torch.zeros(1, 4)).isnan().all()
