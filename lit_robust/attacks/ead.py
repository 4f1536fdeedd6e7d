"""Elastic-net attack (Chen, Sharma, Zhang, Yi, Hsieh, "EAD: Elastic-Net Attacks to Deep Neural Networks
via Adversarial Examples", AAAI 2018, arXiv 1709.04114), wrapping advertorch's ``ElasticNetL1Attack``."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lit_robust.attacks.advertorch_compat import ElasticNetL1Attack, quiet_advertorch
from lit_robust.attacks.base import Attack, Objective, ThreatModel, count_classes
from lit_robust.attacks.float32 import float32_view
from lit_robust.attacks.minimal import keep_if_fooled
from lit_robust.validation import check_choice, check_int, check_real

DECISION_RULES = ("EN", "L1")


class EAD(Attack):
    """Minimal elastic-net perturbation, by FISTA (gradient step on the smooth part, then the
    ``beta``-shrinkage of ``x' - x`` and a clip to [0, 1]):

    ``min_{x' in [0,1]} c * max(Z(x')_y - max_{k != y} Z(x')_k + kappa, 0) + ||x' - x||_2^2
    + beta * ||x' - x||_1``

    (``Z``: logits), with ``c`` bisected per sample over ``binary_search_steps`` (times 10 while it fails)
    and the learning rate decayed as ``lr * sqrt(1 - t / steps)``. Among successful iterates it keeps the
    one of least elastic-net distance ``||d||_2^2 + beta ||d||_1`` (``decision_rule="EN"``) or least
    L1 distance (``"L1"``). Defaults: torchattacks' ``EADEN``, as evaluation.md §4 asks.

    Failures: advertorch returns the clean image for samples it never fooled. The output is
    re-classified: per sample, the adversarial point if it fools the model, else the clean ``x``
    (never a "distance 0" success).

    Args:
        decision_rule: ``"EN"`` (short name ``ead_en``) or ``"L1"`` (``ead_l1``).
        beta: L1 weight (also the shrinkage threshold, pixel units), >= 0 (0: no L1 term, a FISTA
            version of CW-L2); default 1e-3.
        c: initial weight ``c_0`` of the logit-margin term against the distances, > 0; default 1e-3.
        kappa: confidence margin in logits, >= 0; default 0.
        lr: initial learning rate (pixel units per unit gradient), > 0; default 0.01.
        binary_search_steps: search steps over ``c``, >= 1; default 9.
        steps: iterations per search step, >= 1; default 100.
        abort_early: stop a search step once the loss stops decreasing (checked every ``steps / 10``);
            default True (torchattacks; advertorch's own default is False).
        name: metric name; default ``ead_en`` or ``ead_l1``.
    """

    threat_model = ThreatModel.UNBOUNDED
    objective = Objective.MINIMAL

    def __init__(
        self,
        decision_rule: Literal["EN", "L1"] = "EN",
        beta: float = 1e-3,
        c: float = 1e-3,
        kappa: float = 0.0,
        lr: float = 0.01,
        binary_search_steps: int = 9,
        steps: int = 100,
        abort_early: bool = True,
        name: str | None = None,
    ):
        self.decision_rule = check_choice("decision_rule", decision_rule, DECISION_RULES)
        super().__init__(None, name, short_name=f"ead_{self.decision_rule.lower()}")
        self.beta = check_real("beta", beta, low=0)
        self.c = check_real("c", c, low=0, low_open=True)
        self.kappa = check_real("kappa", kappa, low=0)
        self.lr = check_real("lr", lr, low=0, low_open=True)
        self.binary_search_steps = check_int("binary_search_steps", binary_search_steps, low=1)
        self.steps = check_int("steps", steps, low=1)
        self.abort_early = abort_early

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        view, x32 = float32_view(model, x)  # advertorch's EAD keeps float32 distances
        attack = ElasticNetL1Attack(
            view, count_classes(model, x), confidence=self.kappa, learning_rate=self.lr,
            binary_search_steps=self.binary_search_steps, max_iterations=self.steps,
            abort_early=self.abort_early, initial_const=self.c, beta=self.beta,
            decision_rule=self.decision_rule,
        )  # fmt: skip
        with quiet_advertorch():
            x_adv = attack.perturb(x32, y).to(x.dtype)
        return keep_if_fooled(model, x, y, x_adv)
