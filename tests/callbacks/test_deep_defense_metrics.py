"""The Deep Defense paper's metrics: DeepFool rho_2 over every point (``MinimalPerturbation(rho2_steps=...)``)
and FGS accuracy at fractions of eps_ref (``FGSEpsRef``), pinned by closed forms on linear classifiers."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lit_robust.callbacks.fgs_eps_ref import FGSEpsRef, fraction_tag
from lit_robust.callbacks.minimal_perturbation import MinimalPerturbation, paper_rho2, rho2_metric_name
from lit_robust.defenses.standard import StandardTraining
from lit_robust.functional.deepfool import deepfool, relative_size
from lit_robust.models.normalize import Normalize


def run(
    stage: str, model: L.LightningModule, x: torch.Tensor, y: torch.Tensor, *callbacks: L.Callback
) -> dict[str, float]:
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        inference_mode=stage == "test", callbacks=list(callbacks),
    )  # fmt: skip
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    getattr(trainer, stage)(model, dataloaders=loader, verbose=False)
    return {key: float(value) for key, value in trainer.callback_metrics.items()}


def linear_model(
    weight: torch.Tensor, bias: torch.Tensor, mean: float = 0.0, std: float = 1.0
) -> StandardTraining:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return StandardTraining(
        nn.Sequential(Normalize(mean, std), nn.Flatten(), layer), num_classes=weight.shape[0]
    )


def test_rho2_is_the_mean_closed_form_distance_over_every_point():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 16, generator=g)
    x = 0.3 + 0.4 * torch.rand(40, 1, 4, 4, generator=g)
    z = ((x - 0.5) / 0.25).flatten(1)  # what the linear layer sees
    bias = -(z @ weight.T).mean(0)
    model = linear_model(weight, bias, mean=0.5, std=0.25)
    y = torch.randint(0, 3, (40,), generator=g)  # many misclassified: rho_2 counts them all anyway
    callback = MinimalPerturbation(rho2_steps=[50, 5], rho2_normalized=True, num_samples=40)

    metrics = run("test", model, x, y, callback)

    logits = z @ weight.T + bias
    s = logits.argmax(1)
    scaled = weight / 0.25  # the weights on the pixels
    gaps = (logits - logits.gather(1, s[:, None])).abs()
    distance = (gaps / (scaled[None] - scaled[s][:, None]).norm(dim=2)).scatter(1, s[:, None], math.inf)
    rho = 1.02 * distance.amin(1) / x.flatten(1).norm(dim=1)
    rho_normalized = 1.02 * distance.amin(1) / (x - 0.5).flatten(1).norm(dim=1)  # both sizes / std
    assert (s != y).sum() > 10
    for steps in (50, 5):
        assert metrics[rho2_metric_name("test", steps)] == pytest.approx(float(rho.mean()), rel=1e-4)
        assert metrics[rho2_metric_name("test", steps, True)] == pytest.approx(
            float(rho_normalized.mean()), rel=1e-4
        )
    assert rho2_metric_name("test", 50) == "test/deepfool_rho2"
    assert rho2_metric_name("val", 5, True) == "val/deepfool_rho2_u5_normalized"
    assert callback.metric_names("test") == {
        "test/deepfool_rho2", "test/deepfool_rho2_u5", "test/deepfool_rho2_normalized",
        "test/deepfool_rho2_u5_normalized",
    }  # fmt: skip


def test_paper_rho2_keeps_the_partial_perturbation_of_points_not_fooled():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)).eval()
    with torch.no_grad():
        network[1].weight.mul_(10)  # curved enough that one DeepFool step does not fool every point
    x = torch.rand(30, 1, 4, 4)
    assert not deepfool(network, x, max_iter=1).fooled.all()
    rho = paper_rho2(network, x, max_iter=1)
    assert (rho > 0).all() and not any(p.grad is not None for p in network.parameters())
    torch.testing.assert_close(rho, relative_size(deepfool(network, x, max_iter=1).delta, x))
    assert not torch.equal(rho, paper_rho2(network, x, max_iter=50))


def binary_fgs_problem(n: int = 40) -> tuple[StandardTraining, Tensor, Tensor, Tensor]:
    """Logits ``[0, w.x + b]``: FGSM breaks sample i exactly when ``eps > |f_i| / ||w||_1`` (no clamping)."""
    g = torch.Generator().manual_seed(1)
    w = torch.rand(16, generator=g) - 0.5
    x = 0.35 + 0.3 * torch.rand(4 * n, 1, 4, 4, generator=g)
    f = x.flatten(1) @ w
    bias = -f.median()
    critical = (f + bias).abs() / w.abs().sum()
    keep = ((critical > 0.005) & (critical < 0.3)).nonzero().flatten()[:n]
    assert len(keep) == n
    x, f = x[keep], f[keep] + bias
    model = linear_model(torch.stack([torch.zeros(16), w]), torch.tensor([0.0, float(bias)]))
    return model, x, (f > 0).long(), critical[keep]


def test_fgs_eps_ref_search_and_fraction_accuracies_match_the_closed_form():
    model, x, y, critical = binary_fgs_problem()
    callback = FGSEpsRef(num_samples=len(x), tolerance=1e-3)

    validation = run("validate", model, x, y, callback)

    eps_50 = float(critical.sort().values[len(x) // 2 - 1])  # first eps with accuracy <= 50%
    assert validation["val/fgs_eps_50"] == pytest.approx(eps_50, abs=1e-3)
    assert callback.found_eps_ref == validation["val/fgs_eps_ref"] == validation["val/fgs_eps_50"]
    test = run("test", model, x, y, callback)  # test reuses the eps_ref found at validation
    assert test["test/fgs_eps_ref"] == pytest.approx(callback.found_eps_ref)
    for fraction in (0.2, 0.5, 1.0):
        expected = float((critical > fraction * callback.found_eps_ref).float().mean())
        assert test[f"test/robust_acc/fgs_{fraction_tag(fraction)}_eps_ref"] == pytest.approx(expected)
    assert "test/fgs_eps_50" not in test

    fixed = run("test", model, x, y, FGSEpsRef(eps_ref=0.1, num_samples=len(x)))
    assert fixed["test/fgs_eps_ref"] == pytest.approx(0.1)
    assert fixed["test/robust_acc/fgs_0.5_eps_ref"] == pytest.approx(float((critical > 0.05).float().mean()))
    assert set(fixed) >= FGSEpsRef(eps_ref=0.1).metric_names("test")


def test_fgs_eps_ref_arguments_and_names():
    assert [fraction_tag(f) for f in (0.2, 0.5, 1, 0.25)] == ["0.2", "0.5", "1.0", "0.25"]
    with pytest.raises(ValueError, match="eps_ref"):
        FGSEpsRef(eps_ref=2.0)
    with pytest.raises(ValueError, match="fractions"):
        FGSEpsRef(fractions=[0.5, -1.0])
    with pytest.raises(ValueError, match="target_acc"):
        FGSEpsRef(target_acc=1.0)
    with pytest.raises(ValueError, match="non-empty"):
        MinimalPerturbation()
    with pytest.raises(ValueError, match="rho2_steps"):
        MinimalPerturbation(rho2_steps=[5, 5])


def test_fgs_eps_ref_search_ends_below_float_resolution_and_at_zero_for_a_model_already_at_target():
    model, x, y, critical = binary_fgs_problem()
    # a tolerance below float resolution once looped forever: the bracket stops narrowing
    fine = run("validate", model, x, y, FGSEpsRef(num_samples=len(x), tolerance=1e-300))
    eps_50 = float(critical.sort().values[len(x) // 2 - 1])
    assert fine["val/fgs_eps_50"] == pytest.approx(eps_50, abs=1e-6)
    wrong = run("validate", model, x, 1 - y, FGSEpsRef(num_samples=len(x)))  # clean accuracy 0
    assert wrong["val/fgs_eps_50"] == 0 and "val/fgs_eps_ref" not in wrong
