"""Fast adaptive boundary attack (Croce & Hein, "Minimally distorted Adversarial Examples with a Fast
Adaptive Boundary Attack", ICML 2020, arXiv 1907.02044), untargeted, wrapping advertorch's ``FABAttack``."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lit_robust.attacks.advertorch_compat import FABAttack, quiet_advertorch
from lit_robust.attacks.base import Attack, ThreatModel
from lit_robust.attacks.minimal import keep_if_fooled

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
        alpha_max: largest weight of the step from the clean point, in [0, 1]; default 0.1.
        eta: overshoot factor, >= 1; default 1.05.
        beta: backward step factor, in (0, 1]; default 0.9.
        restart_eps: radius for the random restarts, > 0; default advertorch's 0.3 (Linf) or 1.0 (L2).
        name: metric name; default ``fab_<norm>``.
    """

    threat_model = ThreatModel.UNBOUNDED
    short_name = "fab"

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
        super().__init__(None, name)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {sorted(NORMS)}, got {norm!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {restarts}")
        if not 0 <= alpha_max <= 1:
            raise ValueError(f"alpha_max must be in [0, 1], got {alpha_max}")
        if eta < 1:
            raise ValueError(f"eta must be >= 1, got {eta}")
        if not 0 < beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        if restart_eps is not None and restart_eps <= 0:
            raise ValueError(f"restart_eps must be > 0, got {restart_eps}")
        self.norm = norm
        self.steps = steps
        self.restarts = restarts
        self.alpha_max = alpha_max
        self.eta = eta
        self.beta = beta
        self.restart_eps = restart_eps
        self.short_name = f"fab_{norm}"  # type: ignore[misc]

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        attack = FABAttack(
            model, norm=NORMS[self.norm], n_restarts=self.restarts, n_iter=self.steps,
            eps=self.restart_eps, alpha_max=self.alpha_max, eta=self.eta, beta=self.beta,
        )  # fmt: skip
        with quiet_advertorch():
            x_adv = attack.perturb(x, y)
        return keep_if_fooled(model, x, y, x_adv)
