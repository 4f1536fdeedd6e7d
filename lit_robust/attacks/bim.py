"""Basic iterative method (Kurakin, Goodfellow, Bengio, "Adversarial examples in the physical world",
ICLR 2017 workshop, arXiv 1607.02533), wrapping advertorch's ``LinfBasicIterativeAttack``."""

from __future__ import annotations

import math

from torch import Tensor, nn

from lit_robust.attacks.advertorch_compat import LinfBasicIterativeAttack
from lit_robust.attacks.base import Attack, Objective, ThreatModel
from lit_robust.attacks.losses import cross_entropy_sum
from lit_robust.validation import check_optional_int, check_optional_real


def kurakin_steps(eps: float) -> int:
    """Kurakin et al.'s iteration count ``min(255 eps + 4, 1.25 * 255 eps)`` (rounded up, at least 1)."""
    return max(1, math.ceil(min(255 * eps + 4, 1.25 * 255 * eps)))


class BIM(Attack):
    """Iterative FGSM from the clean point (no random start), a.k.a. I-FGSM:

    ``x_0 = x,  x_{t+1} = clip_{[0,1] ∩ B_inf(x, eps)}(x_t + step_size * sign(grad_x CE(f(x_t), y)))``,

    returning the last iterate. It is PGD-Linf without the random start. evaluation.md §4's
    paper-mirroring IFGSM settings: WNLL v3 ``BIM(0.031, steps=100, step_size=0.003)``, WNLL v1
    ``BIM(0.1, steps=10, step_size=0.1)``.

    Args:
        eps: Linf budget in pixel units, in [0, 1].
        steps: number of iterations, >= 1; default Kurakin et al.'s ``min(255 eps + 4, 1.25 * 255 eps)``
            (81 at eps 0.3, 10 at 8/255).
        step_size: step length in pixel units, > 0 and finite; default 1/255 (Kurakin et al.).
        name: metric name; default ``bim_linf_<eps>``.
    """

    threat_model = ThreatModel.LINF
    short_name = "bim"
    objective = Objective.CE

    def __init__(
        self, eps: float, steps: int | None = None, step_size: float | None = None, name: str | None = None
    ):
        super().__init__(eps, name)
        steps = check_optional_int("steps", steps, low=1)
        step_size = check_optional_real("step_size", step_size, low=0, low_open=True)
        self.steps = steps if steps is not None else kurakin_steps(self.eps)
        self.step_size = step_size if step_size is not None else 1 / 255

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        attack = LinfBasicIterativeAttack(
            model, cross_entropy_sum, eps=self.eps, nb_iter=self.steps, eps_iter=self.step_size
        )
        return attack.perturb(x, y)
