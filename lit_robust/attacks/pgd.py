"""Projected gradient descent (Madry et al., ICLR 2018) in Linf and L2, wrapping advertorch."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_robust.attacks.advertorch_compat import perturb_iterative, rand_init_delta
from lit_robust.attacks.base import Attack, ThreatModel
from lit_robust.attacks.losses import ATTACK_LOSSES, check_loss_name

NORMS = {"linf": ThreatModel.LINF, "l2": ThreatModel.L2}
NORMAL_START_STD = 0.001  # TRADES code: x + 0.001 * N(0, 1)


def uniform_start(x: Tensor, eps: float, threat_model: ThreatModel) -> Tensor:
    """advertorch's random start: uniform in the Linf ball (L2: clipped to the L2 ball), in [0, 1]."""
    order = np.inf if threat_model is ThreatModel.LINF else 2
    delta = torch.zeros_like(x)
    rand_init_delta(delta, x, order, eps, 0.0, 1.0)
    return (x + delta).clamp(0.0, 1.0) - x


class PGD(Attack):
    """``steps`` iterations of ``x <- Proj_{B(x0, eps) ∩ [0,1]}(x + step_size * d(grad))``.

    ``d`` is ``sign`` for Linf and ``g / ||g||_2`` for L2. The objective is the summed cross-entropy
    (``loss="ce"``), or ``loss="kl"``: the KL divergence from the model's clean prediction, the
    inner maximization of TRADES (then ``y`` is not used). Returns the last iterate.

    Args:
        eps: budget in pixel units (Linf: in [0, 1]; L2: >= 0).
        norm: ``"linf"`` or ``"l2"``.
        steps: number of iterations, >= 1.
        step_size: step length in pixel units; default ``2.5 * eps / steps`` (Madry et al.).
        random_start: ``"uniform"`` in the ball (Madry), ``"normal"`` ``N(0, 0.001^2)`` (TRADES
            code) or ``"none"``.
        loss: ``"ce"`` or ``"kl"``.
        name: metric name; default ``pgd_<norm>_<eps>`` (``pgd_kl_<norm>_<eps>`` for ``loss="kl"``).
    """

    short_name = "pgd"

    def __init__(
        self,
        eps: float,
        norm: Literal["linf", "l2"] = "linf",
        steps: int = 50,
        step_size: float | None = None,
        random_start: Literal["uniform", "normal", "none"] = "uniform",
        loss: Literal["ce", "kl"] = "ce",
        name: str | None = None,
    ):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {sorted(NORMS)}, got {norm!r}")
        self.threat_model = NORMS[norm]  # type: ignore[misc]  # per instance: one class, two norms
        super().__init__(eps, name)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if step_size is not None and step_size <= 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if random_start not in ("uniform", "normal", "none"):
            raise ValueError(f"random_start must be 'uniform', 'normal' or 'none', got {random_start!r}")
        self.norm = norm
        self.steps = steps
        self.step_size = step_size if step_size is not None else 2.5 * eps / steps
        self.random_start = random_start
        self.loss = check_loss_name(loss)
        if loss != "ce":
            self.short_name = f"pgd_{loss}"  # type: ignore[misc]

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self.random_start == "uniform":
            delta = uniform_start(x, self.eps, self.threat_model)
        elif self.random_start == "normal":
            delta = (x + NORMAL_START_STD * torch.randn_like(x)).clamp(0.0, 1.0) - x
        else:
            delta = torch.zeros_like(x)
        target = y
        if self.loss == "kl":
            with torch.no_grad():
                target = F.softmax(model(x), dim=1)
        return perturb_iterative(
            x, target, model, nb_iter=self.steps, eps=self.eps, eps_iter=self.step_size,
            loss_fn=ATTACK_LOSSES[self.loss], delta_init=delta,
            ord=np.inf if self.norm == "linf" else 2,
        )  # fmt: skip
