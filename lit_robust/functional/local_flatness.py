"""The inner maximization of local flatness (Xu, Li, Jiang, Xia, "Adversarial Defense via Local Flatness
Regularization", ICIP 2020, arXiv 1910.12165; official code ``Uooga/Local-Flatness-Regularization``;
spec ``shared/papers/local_flatness.md``): the point of the eps-ball where the input-gradient norm of
the loss is largest.

Shared by the ``LocalFlatnessRegularization`` defense (which penalizes the norm there) and the
``LocalFlatness`` callback (which measures it for any model). Pure tensor math, no Lightning.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lit_robust.functional.input_gradient import Norm, cross_entropy_gradient_norms
from lit_robust.functional.projection import Ball, project_ball
from lit_robust.models.modes import eval_mode, frozen_parameters
from lit_robust.validation import check_int, check_real

BALLS: dict[str, Ball] = {"inf": "linf", "2": "l2"}  # p (the ball, as the paper writes it) -> its name
GRADIENT_NORMS: dict[int, Norm] = {1: "l1", 2: "l2"}  # q -> the norm's name
INIT_STD = 0.001  # official code: x + 0.001 * N(0, I), clipped to [0, 1]


def check_inner_maximization(
    eps: float, alpha: float, steps: int, p: str, q: int, init_std: float
) -> tuple[float, float, int, str, int, float]:
    """The arguments of :func:`maximize_gradient_norm`, checked before any work and returned as
    ``(eps, alpha, steps, p, q, init_std)``.

    Ranges: ``p`` ``"inf"`` or ``"2"``; ``q`` 1 or 2; ``eps`` in pixel units, in [0, 1] for
    ``p="inf"``, finite and >= 0 for ``p="2"``; ``alpha`` > 0 (pixel units per step); ``steps`` an
    integer >= 0; ``init_std`` >= 0 (pixel units).
    """
    if isinstance(p, bool) or p not in BALLS:
        raise ValueError(f"p (the ball) must be 'inf' or '2', got {p!r}")
    if isinstance(q, bool) or not isinstance(q, int) or q not in GRADIENT_NORMS:
        raise ValueError(f"q (the gradient norm) must be 1 or 2, got {q!r}")
    eps = check_real("eps", eps, 0, 1 if p == "inf" else None)
    alpha = check_real("alpha", alpha, 0, low_open=True)
    steps = check_int("steps", steps, 0)
    init_std = check_real("init_std", init_std, 0)
    return eps, alpha, steps, p, q, init_std


def maximize_gradient_norm(
    network: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    alpha: float,
    steps: int,
    p: Literal["inf", "2"] = "inf",
    q: int = 1,
    init_std: float = INIT_STD,
) -> Tensor:
    """The inner maximization: ``x̃ ≈ argmax_{x' ∈ B_p(x, eps) ∩ [0,1]^D} ||∇_{x'} ℓ(x')||_q``.

    ``x̃⁰ = Π(x + init_std·N(0, I))``, then ``steps`` times ``x̃ ← Π(x̃ + alpha·d(∇_x̃ r))`` with
    ``r = mean_b ||∇ℓ_b(x̃_b)||_q`` (double backprop), ``d = sign`` for ``p="inf"`` and ``s / ||s||_2``
    per sample for ``p="2"``; ``Π`` projects onto the ball, then clips to [0, 1]. Every sample's
    ascent is independent (``r`` is a sum over samples up to ``1/B``, which the step ignores).
    ``eps``, ``alpha`` and ``init_std`` are in pixel units; ``ℓ`` is the per-sample cross-entropy.

    ``network`` runs in eval mode with frozen parameters (each module's mode and each parameter's
    ``requires_grad`` restored afterwards): no BatchNorm update, no dropout, no ``.grad`` on the
    parameters. Returns ``x̃`` detached.
    """
    ball = BALLS[p]
    x = x.detach()
    with torch.enable_grad(), eval_mode(network), frozen_parameters(network):
        x_t = x + init_std * torch.randn_like(x) if init_std > 0 else x.clone()
        x_t = project_ball(x_t, x, eps, ball)
        for _ in range(steps):
            x_t.requires_grad_(True)
            r = cross_entropy_gradient_norms(network, x_t, y, GRADIENT_NORMS[q], create_graph=True).mean()
            (s,) = torch.autograd.grad(r, x_t)
            if ball == "linf":
                step = s.sign()
            else:
                norms = s.flatten(1).norm(dim=1).clamp_min(1e-12)
                step = s / norms.view(-1, *([1] * (s.dim() - 1)))
            x_t = project_ball(x_t.detach() + alpha * step, x, eps, ball)
    return x_t.detach()


__all__ = ["BALLS", "GRADIENT_NORMS", "INIT_STD", "check_inner_maximization", "maximize_gradient_norm"]
