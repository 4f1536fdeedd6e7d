"""Fast gradient sign method (Goodfellow, Shlens, Szegedy, ICLR 2015), wrapping advertorch."""

from __future__ import annotations

from torch import Tensor, nn

from lit_robust.attacks.advertorch_compat import GradientSignAttack, perturb_iterative
from lit_robust.attacks.base import Attack, Objective, ThreatModel
from lit_robust.attacks.losses import cross_entropy_sum
from lit_robust.attacks.pgd import uniform_start
from lit_robust.validation import check_optional_real


class FGSM(Attack):
    """One signed-gradient step: ``x_adv = clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1)``.

    With ``random_start`` it is "FGSM with random start" (Wong, Rice, Kolter, ICLR 2020, "fast
    adversarial training"): ``delta ~ U[-eps, eps]``, one step of ``step_size`` (they recommend
    ``1.25 * eps``), projected back onto the Linf ball.

    Args:
        eps: Linf budget in pixel units, in [0, 1].
        random_start: start from a uniform random point of the ball.
        step_size: step length in pixel units, > 0 and finite; defaults to ``eps`` (``1.25 * eps``
            with random start).
        name: metric name; default ``fgsm_linf_<eps>`` (``fgsm_rs_linf_<eps>`` with random start).
    """

    threat_model = ThreatModel.LINF
    short_name = "fgsm"
    objective = Objective.CE

    def __init__(
        self,
        eps: float,
        random_start: bool = False,
        step_size: float | None = None,
        name: str | None = None,
    ):
        super().__init__(eps, name, short_name="fgsm_rs" if random_start else "fgsm")
        step_size = check_optional_real("step_size", step_size, low=0, low_open=True)
        self.random_start = random_start
        self.step_size = step_size if step_size is not None else self.eps * (1.25 if random_start else 1.0)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if not self.random_start and self.step_size == self.eps:
            return GradientSignAttack(model, cross_entropy_sum, eps=self.eps).perturb(x, y)
        delta = uniform_start(x, self.eps, ThreatModel.LINF) if self.random_start else None
        return perturb_iterative(
            x, y, model, nb_iter=1, eps=self.eps, eps_iter=self.step_size,
            loss_fn=cross_entropy_sum, delta_init=delta,
        )  # fmt: skip
