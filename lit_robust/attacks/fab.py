"""Fast adaptive boundary attack (Croce & Hein, "Minimally distorted Adversarial Examples with a Fast
Adaptive Boundary Attack", ICML 2020, arXiv 1907.02044), untargeted, wrapping advertorch's ``FABAttack``."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lit_robust.attacks.advertorch_compat import FABAttack, quiet_advertorch
from lit_robust.attacks.base import Attack, Objective, ThreatModel
from lit_robust.attacks.float32 import float32_view
from lit_robust.attacks.minimal import keep_if_fooled
from lit_robust.validation import check_choice, check_int, check_optional_real, check_real

NORMS = {"linf": "Linf", "l2": "L2"}


class FAB(Attack):
    """Minimal Lp perturbation (p = inf or 2) by projections onto the linearized decision boundary:

    ``x_{t+1} = clip_{[0,1]}((1 - a) (x_t + eta * d_t) + a (x + eta * d_0))``,

    ``d_t`` (``d_0``) the minimal-Lp step from ``x_t`` (from ``x``) onto the box-constrained
    hyperplane of the closest linearized class boundary, ``a = min(|d_t| / (|d_t| + |d_0|), alpha_max)``.
    When ``x_{t+1}`` is adversarial it is kept if smallest so far, then pulled back,
    ``x_{t+1} <- x + beta (x_{t+1} - x)``. Only clean-correct samples are attacked.

    Failures: advertorch returns the clean image for samples it never fooled (and for misclassified
    ones). The output is re-classified: per sample, the adversarial point if it fools the model, else
    the clean ``x`` (never a "distance 0" success).

    Args:
        norm: ``"linf"`` (short name ``fab_linf``) or ``"l2"`` (``fab_l2``).
        steps: iterations per restart, >= 1; default 100 (AutoAttack; torchattacks' FAB uses 10).
        restarts: runs, >= 1; restarts after the first start at a random point of radius
            ``min(best, restart_eps) / 2`` (pixel units); default 1.
        alpha_max: largest weight of the step from the clean point, in [0, 1] (0: no bias toward the
            clean point); default 0.1.
        eta: overshoot factor, >= 1; default 1.05.
        beta: backward step factor, in (0, 1]; default 0.9.
        restart_eps: radius for the random restarts, > 0 and finite; default advertorch's 0.3 (Linf)
            or 1.0 (L2).
        name: metric name; default ``fab_<norm>``.
    """

    threat_model = ThreatModel.UNBOUNDED
    objective = Objective.MINIMAL

    def __init__(
        self,
        norm: Literal["linf", "l2"] = "linf",
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        restart_eps: float | None = None,
        name: str | None = None,
    ):
        self.norm = check_choice("norm", norm, NORMS)
        super().__init__(None, name, short_name=f"fab_{self.norm}")
        self.steps = check_int("steps", steps, low=1)
        self.restarts = check_int("restarts", restarts, low=1)
        self.alpha_max = check_real("alpha_max", alpha_max, 0, 1)
        self.eta = check_real("eta", eta, low=1)
        self.beta = check_real("beta", beta, 0, 1, low_open=True)
        self.restart_eps = check_optional_real("restart_eps", restart_eps, low=0, low_open=True)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        view, x32 = float32_view(model, x)  # advertorch's FAB casts x with .float()
        attack = FABAttack(
            view, norm=NORMS[self.norm], n_restarts=self.restarts, n_iter=self.steps,
            eps=self.restart_eps, alpha_max=self.alpha_max, eta=self.eta, beta=self.beta,
        )  # fmt: skip
        with quiet_advertorch():
            x_adv = attack.perturb(x32, y).to(x.dtype)
        return keep_if_fooled(model, x, y, x_adv)
