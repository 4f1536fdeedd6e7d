"""Our wrappers against deliberately naive references written from the papers' update rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_robust.attacks import FGSM, PGD, eps_tag


def _input_grad(model, x, y):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y, reduction="sum").backward()
    return x.grad


def _reference_fgsm(model, x, y, eps):
    """Goodfellow et al. 2015: x + eps * sign(grad_x CE), clipped to [0, 1]."""
    return (x + eps * _input_grad(model, x, y).sign()).clamp(0, 1)


def _reference_pgd(model, x, y, eps, steps, step_size, norm):
    """Madry et al. 2018 from a zero start: ascent step, project onto the ball, clip to [0, 1]."""
    x_adv = x.clone()
    for _ in range(steps):
        grad = _input_grad(model, x_adv, y)
        if norm == "linf":
            x_adv = x + (x_adv + step_size * grad.sign() - x).clamp(-eps, eps)
        else:
            direction = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x_adv = x_adv + step_size * direction
        x_adv = x_adv.clamp(0, 1)
        if norm == "l2":
            delta = x_adv - x
            scale = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1).view(-1, 1, 1, 1)
            x_adv = x + delta * scale
    return x_adv


def test_fgsm_matches_reference(trained_tiny):
    model, x, y = trained_tiny
    torch.testing.assert_close(FGSM(0.07)(model, x, y), _reference_fgsm(model, x, y, 0.07))


@pytest.mark.parametrize(("norm", "eps", "step"), [("linf", 0.1, 0.03), ("l2", 0.8, 0.3)])
def test_pgd_matches_reference(trained_tiny, norm, eps, step):
    model, x, y = trained_tiny
    ours = PGD(eps, norm=norm, steps=4, step_size=step, random_start="none")(model, x, y)
    torch.testing.assert_close(ours, _reference_pgd(model, x, y, eps, 4, step, norm), atol=1e-5, rtol=0)


def test_pgd_is_at_least_as_strong_as_fgsm(trained_tiny):
    model, x, y = trained_tiny
    loss_fgsm = F.cross_entropy(model(FGSM(0.15)(model, x, y)), y)
    loss_pgd = F.cross_entropy(model(PGD(0.15, steps=20, step_size=0.02)(model, x, y)), y)
    assert loss_pgd >= loss_fgsm


def test_random_start_is_random_and_seedable(trained_tiny):
    model, x, y = trained_tiny
    attack = PGD(0.1, steps=1, step_size=0.01)
    torch.manual_seed(1)
    first = attack(model, x, y)
    torch.manual_seed(1)
    assert torch.equal(first, attack(model, x, y))
    assert not torch.equal(first, attack(model, x, y))


@pytest.mark.parametrize(
    ("eps", "tag"),
    [(0.3, "0.3"), (0.0313725, "8_255"), (8 / 255, "8_255"), (0.031, "0.031"), (0.2, "0.2"), (2.0, "2")],
)
def test_eps_tags_keep_fractions_of_255_distinct(eps, tag):
    assert eps_tag(eps) == tag


def test_metric_names():
    assert PGD(0.3).name == "pgd_linf_0.3"
    assert PGD(0.5, norm="l2").name == "pgd_l2_0.5"
    assert FGSM(0.0313725).name == "fgsm_linf_8_255"
    assert FGSM(0.3, random_start=True).name == "fgsm_rs_linf_0.3"
    assert PGD(0.3, loss="kl").name == "pgd_kl_linf_0.3"
    assert PGD(0.3, name="mine").name == "mine"
