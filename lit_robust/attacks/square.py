"""Square Attack (Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020, arXiv:1912.00049), wrapping pyautoattack's
``SquareAttack`` with AutoAttack's settings (Croce & Hein, ICML 2020).

Score-based random search: each query changes one random square window of the perturbation (side
``sqrt(p * pixels)``, ``p`` shrinking from ``p_init`` on a fixed schedule in queries) and keeps it if
the margin ``z_y - max_{i!=y} z_i`` drops. It needs no gradient, which makes it AutoAttack's check
for gradient masking. Points it does not fool come back **unchanged**.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lit_robust.attacks.autoattack_compat import (
    SquareAttack,
    check_norm,
    check_seed,
    pyautoattack_call,
    resolve_seed,
)
from lit_robust.attacks.base import Attack, Objective, ThreatModel
from lit_robust.validation import check_int, check_real


def check_l2_tiling(height: int, width: int) -> None:
    """pyautoattack's L2 / L1 initialization tiles the image with ``h // 5``-pixel squares from an offset
    of ``(h - 5 * (h // 5)) // 2`` and fails when the last tile sticks out (12, 14, 18, 19, 24 pixels...)."""
    side = height // 5
    offset = (height - 5 * side) // 2
    if side == 0 or side > 1 and any(offset + size // side * side > size for size in (height, width)):
        raise ValueError(
            f"Square with norm 'l2' or 'l1' cannot tile its initial perturbation on {height}x{width} "
            "images (pyautoattack's initialization; 10, 16, 28, 32, 64 or 224 pixels work)"
        )


class Square(Attack):
    """Square Attack, untargeted, margin loss, one restart, as in AutoAttack.

    Args:
        eps: budget in pixel units (Linf: in [0, 1]; L2, L1: >= 0).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        n_queries: queries per point, >= 1 (AutoAttack: 5000). The ``p`` schedule is in absolute
            queries, as AutoAttack runs it (``resc_schedule=False``).
        p_init: initial fraction of pixels changed per query, in (0, 1] (AutoAttack: 0.8).
        seed: seed of the random search, an integer >= 0 (AutoAttack: 0); ``None`` draws one from
            torch's global generator at each call. The caller's RNG state is left untouched either way.
        verbose: print pyautoattack's progress.
        name: metric name; default ``square_<norm>_<eps>``.
    """

    short_name = "square"
    objective = Objective.MARGIN

    def __init__(
        self,
        eps: float,
        norm: Literal["linf", "l2", "l1"] = "linf",
        n_queries: int = 5000,
        p_init: float = 0.8,
        seed: int | None = 0,
        verbose: bool = False,
        name: str | None = None,
    ):
        self._norm, threat_model = check_norm(norm)
        super().__init__(eps, name, threat_model=threat_model)
        self.norm = norm
        self.n_queries = check_int("n_queries", n_queries, low=1)
        self.p_init = check_real("p_init", p_init, 0, 1, low_open=True)
        self.seed = check_seed(seed)
        self.verbose = verbose

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self.threat_model is not ThreatModel.LINF:
            check_l2_tiling(x.shape[-2], x.shape[-1])
        seed = resolve_seed(self.seed)
        with pyautoattack_call(x, self.verbose):
            attack = SquareAttack(
                model, norm=self._norm, n_queries=self.n_queries, eps=self.eps, p_init=self.p_init,
                n_restarts=1, seed=seed, verbose=self.verbose, resc_schedule=False, device=x.device,
            )  # fmt: skip
            return attack.perturb(x, y)
