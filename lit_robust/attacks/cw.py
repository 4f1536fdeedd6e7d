"""Carlini-Wagner L2 attack (Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks",
IEEE S&P 2017, arXiv 1608.04644), wrapping advertorch's ``CarliniWagnerL2Attack``."""

from __future__ import annotations

from torch import Tensor, nn

from lit_robust.attacks.advertorch_compat import CarliniWagnerL2Attack, quiet_advertorch
from lit_robust.attacks.base import Attack, Objective, ThreatModel, count_classes
from lit_robust.attacks.float32 import float32_view
from lit_robust.attacks.minimal import keep_if_fooled
from lit_robust.validation import check_int, check_real


class CWL2(Attack):
    """Minimal L2 perturbation, by Adam on ``w`` with ``x' = (tanh(w) + 1) / 2`` (so ``x'`` stays in [0, 1]):

    ``min_w ||x' - x||_2^2 + c * max(Z(x')_y - max_{k != y} Z(x')_k + kappa, 0)``

    (``Z``: logits). Across ``binary_search_steps`` the constant ``c`` is bisected per sample (times 10
    while it fails). Keeps the smallest successful iterate. evaluation.md §4 uses torchattacks' ``CW``
    settings, which have no binary search: ``c`` 1, ``kappa`` 0, 50 steps, lr 0.01.

    Failures: advertorch returns the clean image for samples it never fooled. The output is
    re-classified: per sample, the adversarial point if it fools the model, else the clean ``x``
    (never a "distance 0" success). Count a sample as broken only if ``model(x_adv)`` is wrong.

    Args:
        c: weight of the logit-margin term against the squared L2 distance (pixel units), > 0; the
            binary search starts here; default 1.
        kappa: confidence margin in logits, >= 0; default 0.
        steps: Adam iterations per binary-search step, >= 1; default 50.
        lr: Adam learning rate (in tanh space), > 0; default 0.01.
        binary_search_steps: search steps over ``c``, >= 1; default 1 (no search, as torchattacks). At
            >= 10 advertorch's last step reruns at the upper bound of ``c``.
        abort_early: stop a search step once the loss stops decreasing (checked every ``steps / 10``).
        name: metric name; default ``cw_l2``.
    """

    threat_model = ThreatModel.UNBOUNDED
    short_name = "cw_l2"
    objective = Objective.MINIMAL

    def __init__(
        self,
        c: float = 1.0,
        kappa: float = 0.0,
        steps: int = 50,
        lr: float = 0.01,
        binary_search_steps: int = 1,
        abort_early: bool = True,
        name: str | None = None,
    ):
        super().__init__(None, name)
        self.c = check_real("c", c, low=0, low_open=True)
        self.kappa = check_real("kappa", kappa, low=0)
        self.steps = check_int("steps", steps, low=1)
        self.lr = check_real("lr", lr, low=0, low_open=True)
        self.binary_search_steps = check_int("binary_search_steps", binary_search_steps, low=1)
        self.abort_early = abort_early

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        view, x32 = float32_view(model, x)  # advertorch's CW keeps float32 distances
        attack = CarliniWagnerL2Attack(
            view, count_classes(model, x), confidence=self.kappa, learning_rate=self.lr,
            binary_search_steps=self.binary_search_steps, max_iterations=self.steps,
            abort_early=self.abort_early, initial_const=self.c,
        )  # fmt: skip
        with quiet_advertorch():
            x_adv = attack.perturb(x32, y).to(x.dtype)
        return keep_if_fooled(model, x, y, x_adv)
