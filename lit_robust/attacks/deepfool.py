"""DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016, arXiv 1511.04599) as a minimal-perturbation attack.

No maintained library we depend on has a batched DeepFool (advertorch has none; torchattacks is not
a dependency and returns its last iterate even when it failed), so the math lives in
:mod:`lit_robust.functional.deepfool`, shared with the rho_2 metric and Deep Defense.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lit_robust.attacks.base import Attack, Objective, ThreatModel
from lit_robust.attacks.minimal import keep_if_fooled
from lit_robust.functional.deepfool import NORMS, deepfool
from lit_robust.validation import check_choice, check_int, check_optional_int, check_real


class DeepFool(Attack):
    """Iterated steps to the nearest linearized decision boundary, ``x_adv = x + (1 + overshoot) r_tot``.

    ``r = |f'_l| / ||w'_l||_2^2 w'_l`` (L2) or ``|f'_l| / ||w'_l||_1 sign(w'_l)`` (Linf), with
    ``l = argmin_k |f'_k| / ||w'_k||_q`` over the candidate classes, ``f'_k = f_k - f_y`` and
    ``w'_k = grad_x f'_k`` (details in :func:`lit_robust.functional.deepfool.deepfool`).

    It moves away from the label ``y``: correctly classified points start from their prediction,
    as DeepFool does, and misclassified points are already adversarial and are returned as they are.
    Iterates are clipped to ``[0, 1]``. A point is returned perturbed only if the model misclassifies
    the returned point (checked by classifying it again); otherwise the clean input is returned, so a
    failure is never mistaken for a zero-size success (``papers/evaluation.md``, known traps).

    Args:
        norm: ``"l2"`` (short name ``deepfool_l2``) or ``"linf"`` (``deepfool_linf``).
        overshoot: eta, dimensionless, >= 0 and finite (paper: 0.02; 0: none).
        max_iter: iterations per sample, >= 1 (paper: 50).
        num_candidates: candidate classes other than the label, >= 1: the largest logits at ``x``
            (``None`` = all; lower it for many classes, memory grows with it).
        name: metric name; default the short name.
    """

    threat_model = ThreatModel.UNBOUNDED
    objective = Objective.MINIMAL

    def __init__(
        self,
        norm: Literal["l2", "linf"] = "l2",
        overshoot: float = 0.02,
        max_iter: int = 50,
        num_candidates: int | None = None,
        name: str | None = None,
    ):
        self.norm = check_choice("norm", norm, NORMS)
        self.overshoot = check_real("overshoot", overshoot, low=0)
        self.max_iter = check_int("max_iter", max_iter, low=1)
        self.num_candidates = check_optional_int("num_candidates", num_candidates, low=1)
        super().__init__(None, name, short_name=f"deepfool_{self.norm}")

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        result = deepfool(
            model, x, norm=self.norm, overshoot=self.overshoot, max_iter=self.max_iter,
            num_candidates=self.num_candidates, source=y, clamp=True,
        )  # fmt: skip
        return keep_if_fooled(model, x, y, result.x_adv)
