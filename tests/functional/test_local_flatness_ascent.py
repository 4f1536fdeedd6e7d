"""The local-flatness inner maximization (functional.local_flatness) against a naive per-sample loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.functional.local_flatness import (
    BALLS,
    GRADIENT_NORMS,
    INIT_STD,
    check_inner_maximization,
    maximize_gradient_norm,
)
from lit_robust.models import Normalize


def tanh_net(seed: int = 0) -> nn.Module:
    """Smooth (nonzero second derivatives everywhere), with BatchNorm and dropout that must stay in eval."""
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize(0.5, 0.3),
        nn.Flatten(),
        nn.Linear(16, 12),
        nn.BatchNorm1d(12),
        nn.Tanh(),
        nn.Dropout(0.5),
        nn.Linear(12, 3),
    ).double()


def _reference_ascent(network, x, y, eps, alpha, steps, p, q):
    """The update of the paper's inner max, one sample at a time, from x itself (init_std = 0):
    ``x <- clip_[0,1](x0 + Proj_eps(x + alpha d(grad_x ||grad_x CE||_q) - x0))``."""
    network.eval()
    rows = []
    for b in range(len(x)):
        x0, yb = x[b : b + 1], y[b : b + 1]
        xt = x0.clone()
        for _ in range(steps):
            xt = xt.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(network(xt), yb), xt, create_graph=True)
            r = g.abs().sum() if q == 1 else g.norm()
            (s,) = torch.autograd.grad(r, xt)
            step = s.sign() if p == "inf" else s / s.norm()
            delta = xt.detach() + alpha * step - x0
            scale = min(1.0, eps / float(delta.norm()))  # the L2 ball's radial projection
            delta = delta.clamp(-eps, eps) if p == "inf" else delta * scale
            xt = (x0 + delta).clamp(0, 1)
        rows.append(xt.detach())
    return torch.cat(rows)


@pytest.mark.parametrize(("p", "q", "eps"), [("inf", 1, 0.1), ("2", 2, 0.5)])
def test_batched_ascent_equals_the_per_sample_loop(p, q, eps):
    network = tanh_net()
    network.train()
    torch.manual_seed(1)
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    x_tilde = maximize_gradient_norm(network, x, y, eps, alpha=0.03, steps=5, p=p, q=q, init_std=0.0)
    assert all(m.training for m in network.modules())  # each module's mode restored
    assert all(param.grad is None and param.requires_grad for param in network.parameters())
    assert not x_tilde.requires_grad
    expected = _reference_ascent(tanh_net(), x, y, eps, alpha=0.03, steps=5, p=p, q=q)
    torch.testing.assert_close(x_tilde, expected)
    assert not torch.equal(x_tilde, x)


def test_the_random_start_has_the_official_spread_and_stays_in_the_box():
    network = tanh_net()
    x = torch.full((400, 1, 4, 4), 0.5, dtype=torch.float64)
    y = torch.zeros(400, dtype=torch.long)
    start = maximize_gradient_norm(network, x, y, eps=0.3, alpha=0.01, steps=0)
    assert INIT_STD == 0.001
    torch.testing.assert_close((start - x).std().item(), INIT_STD, rtol=0.05, atol=0)
    edge = maximize_gradient_norm(network, torch.zeros_like(x), y, eps=0.3, alpha=0.01, steps=0)
    assert edge.min() >= 0  # clipped to [0, 1]


def test_arguments_are_checked_with_their_names():
    assert set(BALLS) == {"inf", "2"} and set(GRADIENT_NORMS) == {1, 2}
    assert check_inner_maximization(0.3, 0.01, 40, "inf", 1, 0.001) == (0.3, 0.01, 40, "inf", 1, 0.001)
    with pytest.raises(ValueError, match="p \\(the ball\\) must be 'inf' or '2', got '1'"):
        check_inner_maximization(0.3, 0.01, 40, "1", 1, 0.001)
    with pytest.raises(ValueError, match="q \\(the gradient norm\\) must be 1 or 2, got True"):
        check_inner_maximization(0.3, 0.01, 40, "inf", True, 0.001)
    with pytest.raises(ValueError, match="eps"):
        check_inner_maximization(1.5, 0.01, 40, "inf", 1, 0.001)
    assert check_inner_maximization(1.5, 0.01, 40, "2", 2, 0.0)[0] == 1.5  # L2 radii may exceed 1
    with pytest.raises(ValueError, match="alpha"):
        check_inner_maximization(0.3, 0.0, 40, "inf", 1, 0.001)
    with pytest.raises(ValueError, match="steps"):
        check_inner_maximization(0.3, 0.01, -1, "inf", 1, 0.001)
