"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, arXiv:2003.01690), wrapping pyautoattack's ``APGDAttack``.

APGD is PGD with momentum and a step size that starts at ``2 * eps`` and halves when the loss
stalls (checkpoints at 22%, then every 3% down to 6% of ``steps``), from a random start.
It keeps, per sample, the first misclassified iterate. Points it does not fool come back
**unchanged**, so success is read off the output.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor, nn

from lit_robust.attacks.autoattack_compat import (
    LOGGER,
    APGDAttack,
    APGDAttack_targeted,
    RestartedAttack,
    pyautoattack_call,
    resolve_seed,
)
from lit_robust.attacks.base import Objective, count_classes
from lit_robust.attacks.float32 import float32_view
from lit_robust.validation import check_int


class _APGD(RestartedAttack):
    """Shared arguments of the APGD attacks.

    Args:
        eps: budget in pixel units (Linf: in [0, 1]; L2, L1: >= 0).
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (AutoAttack itself runs L1 with a decreasing-eps
            schedule and 5 restarts; use :class:`~lit_robust.attacks.autoattack.AutoAttack` for that).
        steps: iterations per restart, >= 1 (AutoAttack: 100).
        restarts: random restarts, >= 1 (AutoAttack standard: 1); each runs on the points still robust.
        seed: seed of the random starts, an integer >= 0 (AutoAttack: 0). ``None`` draws one from
            torch's global generator at each call. The caller's RNG state is left untouched either way.
        verbose: print pyautoattack's per-iteration progress.
        name: metric name; default ``<short_name>_<norm>_<eps>`` (``apgd_ce_linf_8_255``).
    """

    loss: ClassVar[str]
    min_classes: ClassVar[int] = 2

    def _options(self, x: Tensor) -> dict:
        return dict(
            n_iter=self.steps, norm=self._norm, n_restarts=self.restarts, eps=self.eps,
            seed=resolve_seed(self.seed), verbose=self.verbose, device=x.device, logger=LOGGER,
        )  # fmt: skip

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self.min_classes > 2:
            count_classes(model, x, self.min_classes, f"{type(self).__name__} ({self.loss} loss)")
        options = self._options(x)
        view, x32 = float32_view(model, x)  # pyautoattack casts x with .float()
        with pyautoattack_call(x, self.verbose):
            return APGDAttack(view, loss=self.loss, **options).perturb(x32, y).to(x.dtype)


class APGDCE(_APGD):
    """APGD on the cross-entropy loss, untargeted: AutoAttack's first component. Args: see ``_APGD``."""

    short_name = "apgd_ce"
    objective = Objective.CE
    loss = "ce"


class APGDDLR(_APGD):
    """APGD on the Difference of Logits Ratio ``-(z_y - max_{i!=y} z_i) / (z_(1) - z_(3))``, untargeted.

    The DLR loss is invariant to shifts and rescaling of the logits; it needs >= 3 classes.
    Args: see ``_APGD``.
    """

    short_name = "apgd_dlr"
    objective = Objective.DLR
    loss = "dlr"
    min_classes = 3


class APGDT(_APGD):
    """APGD-T: APGD on the targeted DLR loss ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)``.

    Runs once per target ``t``: the ``n_target_classes`` (an integer >= 1; AutoAttack: 9) most likely
    classes other than the top one at the clean input, each on the points still robust; needs >= 4 classes.
    ``n_target_classes`` is capped at ``num_classes - 1`` (all other classes) at call time.
    Other args: see ``_APGD``.
    """

    short_name = "apgd_t"
    objective = Objective.DLR_TARGETED
    loss = "dlr-targeted"
    min_classes = 4

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
        classes = count_classes(model, x, self.min_classes, "APGDT (targeted DLR loss)")
        options = self._options(x)
        view, x32 = float32_view(model, x)  # pyautoattack casts x with .float()
        with pyautoattack_call(x, self.verbose):
            attack = APGDAttack_targeted(
                view, n_target_classes=min(self.n_target_classes, classes - 1), **options
            )
            return attack.perturb(x32, y).to(x.dtype)
