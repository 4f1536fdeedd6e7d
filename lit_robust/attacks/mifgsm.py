"""Momentum iterative FGSM (Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018, arXiv
1710.06081), wrapping advertorch's ``MomentumIterativeAttack``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lit_robust.attacks.advertorch_compat import (
    MomentumIterativeAttack,
    clamp_by_pnorm,
    normalize_by_pnorm,
)
from lit_robust.attacks.base import Attack, Objective, ThreatModel
from lit_robust.attacks.losses import cross_entropy_sum
from lit_robust.validation import check_choice, check_int, check_optional_real, check_real

NORMS = {"linf": ThreatModel.LINF, "l2": ThreatModel.L2}


class MIFGSM(Attack):
    """Iterative FGSM with a momentum of L1-normalized gradients, from the clean point:

    ``g_{t+1} = decay * g_t + grad / ||grad||_1``,
    ``x_{t+1} = Proj_{B(x, eps) ∩ [0,1]}(x_t + step_size * d(g_{t+1}))``,

    ``grad = grad_x CE(f(x_t), y)``, ``d = sign`` for Linf and ``g / ||g||_2`` for L2. Returns the last
    iterate.

    Linf runs advertorch's ``MomentumIterativeAttack``. L2 runs the same update written out here:
    advertorch 0.2.3 projects onto the L2 ball with ``delta *= clamp(eps * (delta / ||delta||) / delta,
    max=1)``, which is ``0 / 0 = NaN`` in every coordinate where ``delta`` is still exactly 0 (any pixel
    with a zero gradient), and the NaN then spreads to the whole image.

    Args:
        eps: budget in pixel units (Linf: in [0, 1]; L2: >= 0).
        norm: ``"linf"`` or ``"l2"``.
        steps: number of iterations, >= 1; default 10 (Dong et al.).
        decay: momentum decay factor ``mu`` (dimensionless), >= 0 and finite; 0 is BIM on
            L1-normalized gradients. Default 1.0 (Dong et al.). evaluation.md §4, LFR code on MNIST:
            ``MIFGSM(0.3, steps=40, step_size=0.01, decay=0.1)``.
        step_size: step length in pixel units, > 0 and finite; default ``eps / steps`` (Dong et al.).
        name: metric name; default ``mifgsm_<norm>_<eps>``.
    """

    short_name = "mifgsm"
    objective = Objective.CE

    def __init__(
        self,
        eps: float,
        norm: Literal["linf", "l2"] = "linf",
        steps: int = 10,
        decay: float = 1.0,
        step_size: float | None = None,
        name: str | None = None,
    ):
        norm = check_choice("norm", norm, NORMS)
        super().__init__(eps, name, threat_model=NORMS[norm])
        self.norm = norm
        self.steps = check_int("steps", steps, low=1)
        self.decay = check_real("decay", decay, low=0)
        step_size = check_optional_real("step_size", step_size, low=0, low_open=True)
        self.step_size = step_size if step_size is not None else self.eps / self.steps

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self.norm == "linf":
            attack = MomentumIterativeAttack(
                model, cross_entropy_sum, eps=self.eps, nb_iter=self.steps, decay_factor=self.decay,
                eps_iter=self.step_size,
            )  # fmt: skip
            return attack.perturb(x, y)
        delta = torch.zeros_like(x, requires_grad=True)
        momentum = torch.zeros_like(x)
        for _ in range(self.steps):
            (grad,) = torch.autograd.grad(cross_entropy_sum(model(x + delta), y), delta)
            momentum = self.decay * momentum + normalize_by_pnorm(grad, p=1)
            with torch.no_grad():
                delta += self.step_size * normalize_by_pnorm(momentum, p=2)
                delta.copy_(clamp_by_pnorm(delta, 2, self.eps))
                delta.copy_((x + delta).clamp(0.0, 1.0) - x)
        return x + delta.detach()
