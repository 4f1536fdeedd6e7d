"""Projection onto an Lp ball around a clean input, intersected with the [0, 1] image box.

Shared by every attack (``Attack.__call__`` guarantees its bound with it) and by the inner
maximizations of the defenses (local flatness). Pure tensor math: budgets in pixel units of [0, 1]
images, norms per sample (every dimension but the first).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

Ball = Literal["linf", "l2", "l1"]
BALLS: tuple[str, ...] = ("linf", "l2", "l1")
TINY_NORM = 1e-12  # floor of a perturbation's norm: a zero perturbation is left as it is


def project_ball(x_adv: Tensor, x: Tensor, eps: float, ball: Ball) -> Tensor:
    """Project ``x_adv`` onto ``{x' : ||x' - x||_p <= eps}``, then clip to [0, 1].

    Linf clamps every coordinate of ``x_adv - x`` to ``[-eps, eps]``; L2 and L1 rescale each sample's
    perturbation by ``min(1, eps / ||x_adv - x||_p)`` (for L1 a radial rescaling, not the Euclidean
    projection onto the L1 ball). Clipping after the projection keeps the point inside the ball:
    ``x`` lies in [0, 1], so clipping only shrinks each coordinate of ``x_adv - x``.

    Args:
        x_adv: candidate points, shape ``(B, ...)``.
        x: the clean inputs in [0, 1], same shape.
        eps: the ball's radius in pixel units, >= 0.
        ball: ``"linf"``, ``"l2"`` or ``"l1"``.
    """
    if ball not in BALLS:  # equality, so a ``str`` enum member (``ThreatModel.L2``) is accepted too
        raise ValueError(f"ball must be one of {BALLS}, got {ball!r}")
    delta = x_adv - x
    if ball == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        order = 2 if ball == "l2" else 1
        norms = delta.flatten(1).norm(p=order, dim=1).clamp_min(TINY_NORM)
        scale = (eps / norms).clamp(max=1.0).view(-1, *([1] * (delta.dim() - 1)))
        delta = delta * scale
    return (x + delta).clamp(0.0, 1.0)


__all__ = ["BALLS", "Ball", "project_ball"]
