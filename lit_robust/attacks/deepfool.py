"""DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016, arXiv 1511.04599) as a minimal-perturbation attack.

No maintained library we depend on has a batched DeepFool (advertorch has none; torchattacks is not
a dependency and returns its last iterate even when it failed), so the math lives in
:mod:`lit_robust.functional.deepfool`, shared with the rho_2 metric and Deep Defense.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lit_robust.attacks.base import Attack, ThreatModel
from lit_robust.attacks.minimal import keep_if_fooled
from lit_robust.functional.deepfool import check_deepfool_args, deepfool


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
        overshoot: eta, dimensionless (paper: 0.02).
        max_iter: iterations per sample (paper: 50).
        num_candidates: candidate classes other than the label: the largest logits at ``x``
            (``None`` = all; lower it for many classes, memory grows with it).
        name: metric name; default the short name.
    """

    threat_model = ThreatModel.UNBOUNDED
    short_name = "deepfool"

    def __init__(
        self,
        norm: Literal["l2", "linf"] = "l2",
        overshoot: float = 0.02,
        max_iter: int = 50,
        num_candidates: int | None = None,
        name: str | None = None,
    ):
        check_deepfool_args(norm, overshoot, max_iter, num_candidates)
        self.short_name = f"deepfool_{norm}"  # type: ignore[misc]  # per instance: one class, two norms
        super().__init__(None, name)
        self.norm = norm
        self.overshoot = overshoot
        self.max_iter = max_iter
        self.num_candidates = num_candidates

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        result = deepfool(
            model, x, norm=self.norm, overshoot=self.overshoot, max_iter=self.max_iter,
            num_candidates=self.num_candidates, source=y, clamp=True,
        )  # fmt: skip
        return keep_if_fooled(model, x, y, result.x_adv)
