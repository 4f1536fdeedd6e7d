"""Input-gradient regularization (double backpropagation) against its formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.cli import main
from lit_robust.defenses.input_gradient import InputGradientRegularization
from tests.helpers import (
    NUM_CLASSES,
    assert_every_parameter_has_a_gradient,
    assert_same_step_as_standard_training,
    config_args,
    logged_scalars,
    tiny_cnn,
    tiny_data,
)


def _reference_penalty(network: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """Naive: one forward/backward per sample, norm from its definition."""
    values = []
    for xb, yb in zip(x, y, strict=True):
        xb = xb[None].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(network(xb), yb[None]), xb)
        flat = grad.flatten()
        values.append({"l2sq": (flat**2).sum(), "l2": (flat**2).sum().sqrt(), "l1": flat.abs().sum()}[norm])
    return torch.stack(values).mean()


@pytest.mark.parametrize("norm", ["l2sq", "l2", "l1"])
def test_penalty_equals_a_per_sample_loop(norm):
    x, y = next(iter(tiny_data().train_dataloader()))
    network = tiny_cnn().eval()  # eval: BatchNorm does not couple the samples
    model = InputGradientRegularization(network=network, lam=2.5, norm=norm, num_classes=NUM_CLASSES)
    terms = model.compute_loss(x, y)
    expected = _reference_penalty(network, x, y, norm)
    torch.testing.assert_close(terms["input_grad_reg"], 2.5 * expected, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(terms["ce"], F.cross_entropy(network(x), y))
    torch.testing.assert_close(terms["loss"], terms["ce"] + terms["input_grad_reg"])


@pytest.mark.parametrize("norm", ["l2sq", "l1"])
def test_gradcheck_of_the_penalty_in_the_weights_float64(norm):
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 3 * 3, 3)).double()
    model = InputGradientRegularization(network=network, lam=1.0, norm=norm, num_classes=3)
    x = torch.rand(3, 1, 5, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    names = [name for name, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def penalty(*weights):
        def step(inp):
            return torch.func.functional_call(model, dict(zip(names, weights, strict=True)), (inp,))

        xr = x.clone().requires_grad_(True)
        return model.regularizer(xr, y, step(xr))["input_grad_reg"]

    assert torch.autograd.gradcheck(penalty, params)


def test_lam_zero_gives_the_plain_cross_entropy_gradients():
    x, y = next(iter(tiny_data().train_dataloader()))
    model = InputGradientRegularization(network=tiny_cnn(), lam=0.0, rs_sigma_px=0.3, num_classes=NUM_CLASSES)
    assert_same_step_as_standard_training(model, x, y)


def test_every_parameter_gets_a_finite_nonzero_gradient_from_the_penalty_alone():
    x, y = next(iter(tiny_data().train_dataloader()))
    model = InputGradientRegularization(network=tiny_cnn(), num_classes=NUM_CLASSES)
    model.train()
    model.compute_loss(x, y)["input_grad_reg"].backward()
    assert_every_parameter_has_a_gradient(model)


def test_random_start_option_takes_the_loss_at_the_deformed_image():
    x, y = next(iter(tiny_data().train_dataloader()))
    network = tiny_cnn().eval()
    model = InputGradientRegularization(network=network, rs_sigma_px=0.3, num_classes=NUM_CLASSES)
    torch.manual_seed(0)
    ce = model.compute_loss(x, y)["ce"]
    assert not torch.allclose(ce, F.cross_entropy(network(x), y))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="lam"):
        InputGradientRegularization(network=tiny_cnn(), lam=-1.0)
    with pytest.raises(ValueError, match="norm"):
        InputGradientRegularization(network=tiny_cnn(), norm="linf")
    with pytest.raises(ValueError, match="rs_sigma_px"):
        InputGradientRegularization(network=tiny_cnn(), rs_sigma_px=-0.1)


def test_cli_fit_on_the_sample_logs_the_regularizer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", *config_args("data/mnist_sample", "model/input_gradient", "trainer/debug", "eval/smoke")])
    expected = {"train/loss", "train/ce", "train/input_grad_reg", "val/acc"}
    assert expected <= logged_scalars(tmp_path / "runs").keys()
