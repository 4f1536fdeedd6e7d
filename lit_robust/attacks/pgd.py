"""Projected gradient descent (Madry et al., ICLR 2018) in Linf, L2 and L1, wrapping advertorch."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_robust.attacks.advertorch_compat import perturb_iterative, rand_init_delta
from lit_robust.attacks.base import Attack, Objective, ThreatModel
from lit_robust.attacks.losses import ATTACK_LOSSES, check_loss_name
from lit_robust.validation import check_choice, check_int, check_optional_real

NORMS = {"linf": ThreatModel.LINF, "l2": ThreatModel.L2, "l1": ThreatModel.L1}
ORDERS = {ThreatModel.LINF: np.inf, ThreatModel.L2: 2, ThreatModel.L1: 1}
DEFAULT_L1_SPARSITY = 0.95  # advertorch SparseL1DescentAttack; Tramer & Boneh use q in [80, 99] percent
NORMAL_START_STD = 0.001  # TRADES code: x + 0.001 * N(0, 1)
RANDOM_STARTS = ("uniform", "normal", "none")


def uniform_start(x: Tensor, eps: float, threat_model: ThreatModel) -> Tensor:
    """advertorch's random start, in [0, 1]: uniform in the Linf ball; for L2 uniform in [0, 1], clipped to
    the L2 ball; for L1 a Laplace direction scaled to a radius uniform in [0, eps]."""
    delta = torch.zeros_like(x)
    rand_init_delta(delta, x, ORDERS[threat_model], eps, 0.0, 1.0)
    return (x + delta).clamp(0.0, 1.0) - x


class PGD(Attack):
    """``steps`` iterations of ``x <- Proj_{B(x0, eps) ∩ [0,1]}(x + step_size * d(grad))``.

    ``d`` is ``sign`` for Linf and ``g / ||g||_2`` for L2. For L1 it is sparse L1 descent (SLIDE, Tramer
    & Boneh, "Adversarial Training and Robustness for Multiple Perturbations", NeurIPS 2019, arXiv
    1904.13000, Algorithm 1): ``sign(g)`` on the ``k = round((1 - l1_sparsity) * d)`` coordinates of
    largest ``|g|``, zero elsewhere, scaled to unit L1 norm; ``Proj`` is the exact L1-ball projection.
    (advertorch, unlike the paper, does not skip coordinates already at the [0, 1] edge.)

    The objective is the summed cross-entropy (``loss="ce"``, ``objective`` ``"ce"``), or ``loss="kl"``: the
    KL divergence from the model's clean prediction, the inner maximization of TRADES (``objective``
    ``"kl"``; then ``y`` is not used). Returns the last iterate.

    Args:
        eps: budget in pixel units (Linf: in [0, 1]; L2 and L1: >= 0).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        steps: number of iterations, >= 1.
        step_size: step length in pixel units, > 0 and finite; default ``2.5 * eps / steps`` (Madry et al.).
        random_start: ``"uniform"`` in the ball (Madry), ``"normal"`` ``N(0, 0.001^2)`` (TRADES
            code) or ``"none"``.
        loss: ``"ce"`` or ``"kl"``.
        l1_sparsity: L1 only: fraction of coordinates left out of each step, in [0, 1); default 0.95
            (advertorch's ``SparseL1DescentAttack``). 0 updates every coordinate.
        name: metric name; default ``pgd_<norm>_<eps>`` (``pgd_kl_<norm>_<eps>`` for ``loss="kl"``).
    """

    def __init__(
        self,
        eps: float,
        norm: Literal["linf", "l2", "l1"] = "linf",
        steps: int = 50,
        step_size: float | None = None,
        random_start: Literal["uniform", "normal", "none"] = "uniform",
        loss: Literal["ce", "kl"] = "ce",
        l1_sparsity: float | None = None,
        name: str | None = None,
    ):
        norm = check_choice("norm", norm, NORMS)
        loss = check_loss_name(loss)
        super().__init__(
            eps, name, threat_model=NORMS[norm], short_name="pgd" if loss == "ce" else f"pgd_{loss}",
            objective=Objective(loss),
        )  # fmt: skip
        self.steps = check_int("steps", steps, low=1)
        step_size = check_optional_real("step_size", step_size, low=0, low_open=True)
        self.random_start = check_choice("random_start", random_start, RANDOM_STARTS)
        l1_sparsity = check_optional_real("l1_sparsity", l1_sparsity, 0, 1, high_open=True)
        if norm != "l1" and l1_sparsity is not None:
            raise ValueError(f"l1_sparsity applies to norm='l1' only, got {l1_sparsity} with norm={norm!r}")
        if norm == "l1" and l1_sparsity is None:
            l1_sparsity = DEFAULT_L1_SPARSITY
        self.l1_sparsity = l1_sparsity
        self.norm = norm
        self.step_size = step_size if step_size is not None else 2.5 * self.eps / self.steps
        self.loss = loss

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self.norm == "l1" and round((1 - self.l1_sparsity) * x[0].numel()) < 1:
            raise ValueError(
                f"l1_sparsity={self.l1_sparsity} leaves no coordinate to update on inputs of "
                f"{x[0].numel()} values; lower it"
            )
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
            ord=ORDERS[self.threat_model], l1_sparsity=self.l1_sparsity,
        )  # fmt: skip
