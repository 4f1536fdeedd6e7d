"""Decoupled direction and norm attack (Rony, Hafemann, Oliveira, Ben Ayed, Sabourin, Granger, "Decoupling
Direction and Norm for Efficient Gradient-Based L2 Adversarial Attacks and Defenses", CVPR 2019, arXiv
1811.09600), wrapping advertorch's ``DDNL2Attack``."""

from __future__ import annotations

from torch import Tensor, nn

from lit_robust.attacks.advertorch_compat import DDNL2Attack, quiet_advertorch
from lit_robust.attacks.base import Attack, Objective, ThreatModel
from lit_robust.attacks.minimal import keep_if_fooled
from lit_robust.validation import check_int, check_real


class DDN(Attack):
    """Minimal L2 perturbation: a direction step and a separate norm update,

    ``delta <- delta + alpha_t * g / ||g||_2``  (``g = grad_delta CE(f(x + delta), y)``),
    ``eps <- eps * (1 - gamma)`` if ``x + delta`` is adversarial else ``eps * (1 + gamma)``,
    ``delta <- clip_{[0,1]}(quantize(x + eps * delta / ||delta||_2)) - x``,

    with ``alpha_t`` cosine-annealed from 1 to 0.01. Keeps the smallest adversarial iterate. A sample
    whose gradient is exactly 0 steps in a random direction (``torch.randn``: seed for repeatability).

    Failures: advertorch returns the clean image for samples it never fooled. The output is
    re-classified: per sample, the adversarial point if it fools the model, else the clean ``x``
    (never a "distance 0" success).

    Args:
        steps: iterations, >= 1; default 100 (Rony et al.; the LFR code used 20, evaluation.md §4).
        gamma: relative change of the norm per iteration, in (0, 1); default 0.05.
        init_norm: initial norm ``eps_0`` in pixel units ([0, 1] images), > 0; default 1.
        quantize: round ``x + delta`` to ``levels`` grey levels each iteration (8-bit images).
        levels: number of grey levels, >= 2; default 256.
        name: metric name; default ``ddn_l2``.
    """

    threat_model = ThreatModel.UNBOUNDED
    short_name = "ddn_l2"
    objective = Objective.MINIMAL

    def __init__(
        self,
        steps: int = 100,
        gamma: float = 0.05,
        init_norm: float = 1.0,
        quantize: bool = True,
        levels: int = 256,
        name: str | None = None,
    ):
        super().__init__(None, name)
        self.steps = check_int("steps", steps, low=1)
        self.gamma = check_real("gamma", gamma, 0, 1, low_open=True, high_open=True)
        self.init_norm = check_real("init_norm", init_norm, low=0, low_open=True)
        self.quantize = quantize
        self.levels = check_int("levels", levels, low=2)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        attack = DDNL2Attack(
            model, nb_iter=self.steps, gamma=self.gamma, init_norm=self.init_norm,
            quantize=self.quantize, levels=self.levels,
        )  # fmt: skip
        with quiet_advertorch():
            x_adv = attack.perturb(x, y)
        return keep_if_fooled(model, x, y, x_adv)
