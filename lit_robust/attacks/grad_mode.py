"""``WithGradMode``: run an attack on a chosen gradient view of a model (WNLL's adaptive suite).

Some defenses predict with a pipeline whose gradient is not the obvious one: WNLL (``evaluation.md`` §6.3)
is attacked with the straight-through surrogate, with the exact gradient through its linear solve, and by
transfer from its own softmax head. Such a model exposes ``gradient_view(mode) -> nn.Module``; this wrapper
crafts the examples on that view, while the caller (``RobustnessEvaluation``) judges them on the model
itself. The metric name gets the suffix ``_surrogate``, ``_exact`` or ``_transfer`` (``mode="softmax"``).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lit_robust.attacks.base import Attack
from lit_robust.models.transforms import EOT
from lit_robust.validation import check_choice, check_int

SUFFIXES = {"surrogate": "surrogate", "exact": "exact", "softmax": "transfer"}


class WithGradMode(Attack):
    """``x_adv = attack(model.gradient_view(grad_mode), x, y)``; threat model, budget and objective: the inner
    attack's.

    Args:
        attack: the inner attack (APGD-CE, APGD-T, PGD, BIM, CW-L2, ...).
        grad_mode: ``"surrogate"`` (BPDA through the linear head), ``"exact"`` (autograd through the graph
            solve) or ``"softmax"`` (transfer from the softmax-head network of the same model).
        eot_samples: if > 1, the view is wrapped in :class:`lit_robust.models.transforms.EOT` with that many
            draws (randomized pipelines such as TVM in front; evaluation.md §6.3: 20); 1: no EOT.
        name: metric name; default ``<inner name>_<surrogate|exact|transfer>``, e.g.
            ``apgd_ce_linf_8_255_exact``.
    """

    def __init__(
        self,
        attack: Attack,
        grad_mode: Literal["surrogate", "exact", "softmax"],
        eot_samples: int = 1,
        name: str | None = None,
    ):
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be a lit_robust Attack, got {type(attack).__name__}")
        check_choice("grad_mode", grad_mode, SUFFIXES)
        suffix = SUFFIXES[grad_mode]
        super().__init__(
            attack.eps, name or f"{attack.name}_{suffix}", threat_model=attack.threat_model,
            short_name=f"{attack.short_name}_{suffix}", objective=attack.objective,
        )  # fmt: skip
        self.attack = attack
        self.eot_samples = check_int("eot_samples", eot_samples, low=1)
        self.grad_mode = grad_mode

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        view = getattr(model, "gradient_view", None)
        if not callable(view):
            raise TypeError(
                f"WithGradMode needs a model with gradient_view(mode) (e.g. lit_robust.defenses.wnll.WNLL), "
                f"got {type(model).__name__}"
            )
        target = view(self.grad_mode)
        if self.eot_samples > 1:
            target = EOT(target, samples=self.eot_samples)
        return self.attack(target, x, y)
