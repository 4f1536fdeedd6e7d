"""Flow gradient regularization (Xia and Li) against the warp-based reference and its options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.attacks import FlowPGD
from lit_robust.cli import main
from lit_robust.defenses.flow_gradient import FlowGradientRegularization
from lit_robust.functional.flow_gradient import flow_gradient_by_warp, random_deformation
from tests.helpers import (
    NUM_CLASSES,
    assert_every_parameter_has_a_gradient,
    assert_same_step_as_standard_training,
    config_args,
    logged_scalars,
    tiny_cnn,
    tiny_data,
)


def ringed_batch():
    """Images zero on a 2-pixel ring (like MNIST digits): every border convention agrees there."""
    x, y = next(iter(tiny_data().train_dataloader()))
    x = x.double()
    ring = torch.ones_like(x, dtype=torch.bool)
    ring[..., 2:-2, 2:-2] = False
    return x.masked_fill(ring, 0.0), y


def tiny_tanh_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * 6 * 6, NUM_CLASSES),
    ).double()  # fmt: skip


@pytest.mark.parametrize("convention", ["pixel", "official"])
def test_loss_is_ce_plus_lam_times_the_warp_reference(convention):
    x, y = ringed_batch()
    network = tiny_tanh_cnn()
    model = FlowGradientRegularization(
        network=network, lam=0.7, convention=convention, rs_sigma_px=0.0, num_classes=NUM_CLASSES
    )
    terms = model.compute_loss(x, y)
    grad = flow_gradient_by_warp(network, x, y, padding_mode="border", create_graph=True)
    batch, height, width = grad.shape[:3]
    sq_pix = grad.square().flatten(1).sum(1).mean()
    scale = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=grad.dtype)
    sq_off = (grad * scale).square().flatten(1).sum(1).mean() / batch**2
    reg = sq_pix if convention == "pixel" else sq_off
    torch.testing.assert_close(terms["flow_grad_sq_pix"], sq_pix.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(terms["flow_grad_sq_official"], sq_off.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(terms["flow_grad_penalty"], reg.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(terms["flow_grad_reg"], 0.7 * reg, rtol=1e-12, atol=0)  # as it enters the loss
    ce = F.cross_entropy(network(x), y)
    torch.testing.assert_close(terms["ce"], ce, rtol=1e-12, atol=0)
    torch.testing.assert_close(terms["loss"], ce + 0.7 * reg, rtol=1e-12, atol=0)
    # second order: the weights' gradients equal double backprop through the warp
    params = list(network.parameters())
    got = torch.autograd.grad(terms["loss"], params)
    want = torch.autograd.grad(ce + 0.7 * reg, params)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-13)


def test_ce_is_taken_at_the_random_start():
    x, y = next(iter(tiny_data().train_dataloader()))
    network = tiny_cnn().eval()
    model = FlowGradientRegularization(network=network, lam=1.0, rs_sigma_px=0.4, num_classes=NUM_CLASSES)
    torch.manual_seed(5)
    terms = model.compute_loss(x, y)
    torch.manual_seed(5)
    x_t = random_deformation(x, 0.4)
    assert not torch.equal(x_t, x)
    torch.testing.assert_close(terms["ce"], F.cross_entropy(network(x_t), y))


def test_adversary_replaces_the_random_start():
    x, y = next(iter(tiny_data().train_dataloader()))
    network = tiny_cnn().eval()
    adversary = FlowPGD(0.5, steps=2, units="pixels")
    model = FlowGradientRegularization(network=network, lam=1.0, adversary=adversary, num_classes=NUM_CLASSES)
    terms = model.compute_loss(x, y)
    expected = F.cross_entropy(network(adversary(network, x, y)), y)
    torch.testing.assert_close(terms["adv_ce"], expected)  # the CE at adversarial inputs, as in PGD-AT
    assert terms["adv_ce"] > F.cross_entropy(network(x), y)


def test_lam_zero_is_standard_training_and_skips_the_random_start():
    x, y = next(iter(tiny_data().train_dataloader()))
    model = FlowGradientRegularization(network=tiny_cnn(), lam=0.0, rs_sigma_px=0.5, num_classes=NUM_CLASSES)
    assert_same_step_as_standard_training(model, x, y)  # also: no random numbers drawn


def test_every_parameter_gets_a_finite_nonzero_gradient_from_the_penalty_alone():
    x, y = next(iter(tiny_data().train_dataloader()))
    model = FlowGradientRegularization(network=tiny_cnn(), num_classes=NUM_CLASSES)
    model.train()
    model.compute_loss(x, y)["flow_grad_reg"].backward()
    assert_every_parameter_has_a_gradient(model)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="lam"):
        FlowGradientRegularization(network=tiny_cnn(), lam=-1.0)
    with pytest.raises(ValueError, match="convention"):
        FlowGradientRegularization(network=tiny_cnn(), convention="pixels")
    with pytest.raises(ValueError, match="rs_sigma_px"):
        FlowGradientRegularization(network=tiny_cnn(), rs_sigma_px=-1.0)
    with pytest.raises(TypeError, match="adversary"):
        FlowGradientRegularization(network=tiny_cnn(), adversary="flow_pgd")


def test_cli_fit_on_the_sample_logs_the_regularizer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", *config_args("data/mnist_sample", "model/flow_gradient", "trainer/debug", "eval/smoke")])
    expected = {"train/ce", "train/flow_grad_reg", "train/flow_grad_sq_pix", "train/flow_grad_sq_official"}
    assert expected | {"train/loss", "val/acc"} <= logged_scalars(tmp_path / "runs").keys()
