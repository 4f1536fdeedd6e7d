"""AutoAttack (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, arXiv:2003.01690), run by pyautoattack's own
``AutoAttack.run_standard_evaluation``.

The per-sample worst case over an ensemble: each component runs only on the points still robust,
and a point counts as robust only if it survives all of them. Versions (pyautoattack's settings):

* ``"standard"``, the headline: APGD-CE (100 steps, 1 restart) -> APGD-T (9 targets) -> FAB-T
  (9 targets) -> Square (5000 queries, Andriushchenko et al., ECCV 2020). L1: APGD with a
  decreasing-eps schedule and 5 restarts, APGD-T with 5 targets.
* ``"plus"``: APGD-CE, APGD-DLR (5 restarts), FAB (5 restarts), Square, APGD-T, FAB-T.
* ``"rand"``: APGD-CE, APGD-DLR, averaging gradients over 20 draws (EOT), for randomized defenses.
* ``"custom"``: the components listed in ``attacks``, with pyautoattack's constructor settings.

Its sanity checks (randomized or probability outputs, a dynamic forward, zero gradients, Square
stronger than the white-box attacks) are re-emitted as
:class:`~lit_robust.attacks.base.GradientMaskingWarning`; report them with the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from lit_robust.attacks.autoattack_compat import (
    PyAutoAttack,
    check_norm,
    check_seed,
    pyautoattack_call,
    resolve_seed,
    set_apgd_steps,
)
from lit_robust.attacks.base import Attack, Objective, ThreatModel, attacking, count_classes, project
from lit_robust.attacks.float32 import float32_view
from lit_robust.attacks.square import check_l2_tiling
from lit_robust.validation import check_choice, check_int, check_optional_int

VERSION_COMPONENTS = {
    "standard": ["apgd_ce", "apgd_t", "fab_t", "square"],
    "plus": ["apgd_ce", "apgd_dlr", "fab", "square", "apgd_t", "fab_t"],
    "rand": ["apgd_ce", "apgd_dlr"],
}
COMPONENTS = ("apgd_ce", "apgd_dlr", "apgd_t", "fab", "fab_t", "square")


class AutoAttack(Attack):
    """AutoAttack; ``attack(model, x, y)`` returns its adversarial examples (clean inputs where it fails).

    Args:
        eps: budget in pixel units (Linf: in [0, 1]; L2, L1: >= 0).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        version: ``"standard"``, ``"plus"``, ``"rand"`` or ``"custom"``.
        seed: seed of every component, an integer >= 0 (AutoAttack: 0); ``None`` draws one from
            torch's global generator at each call. The caller's RNG state is left untouched either way.
        attacks: with ``version="custom"`` only, the components in order, from ``"apgd_ce"``,
            ``"apgd_dlr"``, ``"apgd_t"``, ``"fab"``, ``"fab_t"``, ``"square"``.
        apgd_steps, fab_steps, n_queries: override the version's budgets (APGD / APGD-T steps, FAB
            steps, Square queries; integers >= 1) for cheap runs. The name then says ``custom``: never
            a headline.
        batch_size: points per batch inside pyautoattack, >= 1 (its default 250).
        verbose: log pyautoattack's progress to stderr.
        name: metric name; default ``autoattack_<norm>_<eps>`` (``autoattack_linf_8_255``), with
            the version and ``custom`` inserted when they differ from the standard setting.

    Components need ``num_classes - 1`` target classes at most; more are capped at call time.
    """

    objective = Objective.ENSEMBLE

    def __init__(
        self,
        eps: float,
        norm: Literal["linf", "l2", "l1"] = "linf",
        version: Literal["standard", "plus", "rand", "custom"] = "standard",
        seed: int | None = 0,
        attacks: Sequence[str] | None = None,
        apgd_steps: int | None = None,
        fab_steps: int | None = None,
        n_queries: int | None = None,
        batch_size: int = 250,
        verbose: bool = False,
        name: str | None = None,
    ):
        self._norm, threat_model = check_norm(norm)
        check_choice("version", version, (*VERSION_COMPONENTS, "custom"))
        budgets = {"apgd_steps": apgd_steps, "fab_steps": fab_steps, "n_queries": n_queries}
        custom = version == "custom" or any(value is not None for value in budgets.values())
        tags = [version] if version not in ("standard", "custom") else []
        short_name = "_".join(["autoattack", *tags, *(["custom"] if custom else [])])
        super().__init__(eps, name, threat_model=threat_model, short_name=short_name)
        if (version == "custom") != (attacks is not None):
            raise ValueError(f"attacks must be given with version='custom' and only then, got {attacks!r}")
        if attacks is not None and (not attacks or set(attacks) - set(COMPONENTS)):
            raise ValueError(f"attacks must be a non-empty list from {list(COMPONENTS)}, got {attacks!r}")
        for key, value in budgets.items():
            check_optional_int(key, value, low=1)
        self.norm = norm
        self.version = version
        self.seed = check_seed(seed)
        self.attacks = list(attacks) if attacks is not None else None
        self.apgd_steps, self.fab_steps, self.n_queries = apgd_steps, fab_steps, n_queries
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.verbose = verbose

    @property
    def components(self) -> list[str]:
        """The components run, in order; the keys of :meth:`run_individual`."""
        return list(self.attacks) if self.attacks is not None else list(VERSION_COMPONENTS[self.version])

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        seed = resolve_seed(self.seed)
        view, x32 = float32_view(model, x)  # pyautoattack casts x with .float()
        with pyautoattack_call(x, self.verbose):
            adversary = self._adversary(view, x32, seed)
            return adversary.run_standard_evaluation(x32, y, batch_size=self.batch_size)[0].to(x.dtype)

    def run_individual(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Each component run alone on every point (``run_standard_evaluation_individual``).

        Same bookkeeping as ``attack(model, x, y)``; keys from :attr:`components` (``"apgd_ce"``, ...).
        Reports list these next to the worst case; never average them.
        """
        with attacking(model, x, y) as (x, y):
            if self.eps == 0:
                return {component: x.clone() for component in self.components}
            seed = resolve_seed(self.seed)
            view, x32 = float32_view(model, x)  # pyautoattack casts x with .float()
            with pyautoattack_call(x, self.verbose):
                adversary = self._adversary(view, x32, seed)
                results = adversary.run_standard_evaluation_individual(x32, y, batch_size=self.batch_size)
            return {
                component.replace("-", "_"): project(
                    x_adv.detach().to(x.dtype), x, self.eps, self.threat_model
                )
                for component, (x_adv, _) in results.items()
            }

    def _adversary(self, model: nn.Module, x: Tensor, seed: int) -> PyAutoAttack:
        """pyautoattack's AutoAttack on ``model`` itself (its forward function), on x's device."""
        attacks = [c.replace("_", "-") for c in self.attacks] if self.attacks is not None else None
        adversary = PyAutoAttack(
            model, attacks=attacks, device=x.device, eps=self.eps, norm=self._norm, seed=seed,
            version=self.version,
        )  # fmt: skip
        adversary.verbose = self.verbose
        run = adversary.attacks_to_run
        needed = 4 if "apgd-t" in run else 3 if "apgd-dlr" in run else 2
        classes = count_classes(model, x, needed, f"AutoAttack ({', '.join(run)})")
        if "square" in run and self.threat_model is not ThreatModel.LINF:
            check_l2_tiling(x.shape[-2], x.shape[-1])
        for targeted in (adversary.apgd_targeted, adversary.fab):
            targeted.n_target_classes = min(targeted.n_target_classes, classes - 1)
        if self.apgd_steps is not None:
            set_apgd_steps(adversary.apgd, self.apgd_steps)
            set_apgd_steps(adversary.apgd_targeted, self.apgd_steps)
        if self.fab_steps is not None:
            adversary.fab.n_iter = self.fab_steps
        if self.n_queries is not None:
            adversary.square.n_queries = self.n_queries
        return adversary
