"""Targeted FAB inside an eps-ball, as AutoAttack runs it, wrapping pyautoattack's ``FABAttack_PT``.

FAB, the Fast Adaptive Boundary attack (Croce & Hein, "Minimally distorted adversarial examples with
a fast adaptive boundary attack", ICML 2020, arXiv:1907.02044), linearizes the decision boundary
between the true class and a target class, steps to the projection of the current point onto it,
biased toward the clean input (``alpha_max`` 0.1, overshoot ``eta`` 1.05, backward step ``beta`` 0.9),
and keeps the smallest adversarial perturbation found. AutoAttack ("Reliable evaluation ... ensemble
of diverse parameter-free attacks", ICML 2020) runs its targeted version (FAB-T) and accepts a
point only when that perturbation lies inside the eps-ball; other points come back **unchanged**.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lit_robust.attacks.autoattack_compat import (
    FABAttack_PT,
    RestartedAttack,
    pyautoattack_call,
    resolve_seed,
)
from lit_robust.attacks.base import Objective, count_classes
from lit_robust.attacks.float32 import float32_view
from lit_robust.validation import check_int


class FABT(RestartedAttack):
    """FAB-T: for each of the ``n_target_classes`` most likely other classes, ``steps`` FAB steps.

    Each target (and restart) runs only on the points still robust. ``n_target_classes`` is capped
    at ``num_classes - 1`` at call time.

    Args:
        eps: budget in pixel units (Linf: in [0, 1]; L2, L1: >= 0); also the radius of the random
            starts of restarts after the first.
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        steps: iterations per target and restart, >= 1 (AutoAttack: 100).
        restarts: >= 1 (AutoAttack's FAB-T: 1).
        n_target_classes: >= 1 (AutoAttack: 9).
        seed: seed of the random restarts, an integer >= 0 (AutoAttack: 0); ``None`` draws one from
            torch's global generator at each call. The caller's RNG state is left untouched either way.
        verbose: print pyautoattack's progress.
        name: metric name; default ``fab_t_<norm>_<eps>``.
    """

    short_name = "fab_t"
    objective = Objective.MINIMAL

    def __init__(
        self,
        eps: float,
        norm: Literal["linf", "l2", "l1"] = "linf",
        steps: int = 100,
        restarts: int = 1,
        n_target_classes: int = 9,
        seed: int | None = 0,
        verbose: bool = False,
        name: str | None = None,
    ):
        super().__init__(eps, norm, steps, restarts, seed, verbose, name)
        self.n_target_classes = check_int("n_target_classes", n_target_classes, low=1)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        classes = count_classes(model, x, 2, "FABT")
        seed = resolve_seed(self.seed)
        view, x32 = float32_view(model, x)  # pyautoattack casts x with .float()
        with pyautoattack_call(x, self.verbose):
            attack = FABAttack_PT(
                view, norm=self._norm, n_restarts=self.restarts, n_iter=self.steps, eps=self.eps,
                verbose=self.verbose, seed=seed, targeted=True, device=x.device,
                n_target_classes=min(self.n_target_classes, classes - 1),
            )  # fmt: skip
            return attack.perturb(x32, y).to(x.dtype)
