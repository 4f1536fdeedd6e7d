"""FlowPGD: the evaluation attack of the official flow-gradient code (Xia and Li, "Improving Resistance
to Adversarial Deformations by Regularizing Gradients", Neurocomputing 2021, arXiv 2008.12997;
``papers/flow_gradient.md`` (b)). No maintained library has it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_robust.attacks.base import Attack, Objective, ThreatModel, eps_tag
from lit_robust.functional.flow import PADDINGS, UNITS, Padding, Units, warp
from lit_robust.validation import check_choice, check_int, check_optional_real

UNIT_TAGS = {"normalized": "n", "pixels": "px"}


class FlowPGDResult(NamedTuple):
    x_adv: Tensor  # clamp(warp(x, flow), 0, 1)
    flow: Tensor  # (B, H, W, 2), (column, row), in the attack's units; every component in [-eps, eps]


def flow_pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int = 100,
    step_size: float | None = None,
    units: Units = "normalized",
    padding_mode: Padding = "zeros",
) -> FlowPGDResult:
    """``f <- clip_[-eps, eps](f + step_size * sign(grad_f CE(model(warp(x, f)), y)))`` from ``f = 0``.

    Returns the warped images and the last flow. See :class:`FlowPGD` for the arguments.
    """
    step_size = eps / steps if step_size is None else step_size
    flow = x.new_zeros(x.shape[0], *x.shape[2:], 2)
    for _ in range(steps):
        flow.requires_grad_(True)
        loss = F.cross_entropy(model(warp(x, flow, units, padding_mode)), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, flow)
        flow = (flow.detach() + step_size * grad.sign()).clamp(-eps, eps)
    with torch.no_grad():
        return FlowPGDResult(warp(x, flow, units, padding_mode).clamp(0.0, 1.0), flow)


class FlowPGD(Attack):
    """Sign ascent of the cross-entropy of the warped image w.r.t. a flow field, Linf box on each component.

    ``f^{k+1} = clip_[-eps, eps](f^k + alpha sign(grad_f CE(F(warp(x, f^k)), y)))``, ``f^0 = 0``,
    output ``clamp(warp(x, f^K), 0, 1)``; no random start. The official code's evaluation attack:
    ``eps = 0.01`` normalized (about 0.155 px on 32 px), ``K = 100``, ``alpha = eps / K``, zeros
    padding. With ``alpha = eps / K`` a component reaches ``eps`` only if all its signs agree.

    Args:
        eps: the largest displacement of each flow component, in ``units``, >= 0 and finite.
        steps: K, >= 1.
        step_size: alpha in ``units``, > 0 and finite; default ``eps / steps``.
        units: ``"normalized"`` (default; ``grid_sample`` coordinates with ``align_corners=True``:
            ``2 / (size - 1)`` per pixel, per axis) or ``"pixels"``.
        padding_mode: ``"zeros"`` (official) or ``"border"``.
        name: metric name; default ``flow_pgd_<eps>n`` (normalized) or ``flow_pgd_<eps>px``.

    :func:`flow_pgd` returns the flow field too.
    """

    threat_model = ThreatModel.FLOW
    short_name = "flow_pgd"
    objective = Objective.CE

    def __init__(
        self,
        eps: float,
        steps: int = 100,
        step_size: float | None = None,
        units: Units = "normalized",
        padding_mode: Padding = "zeros",
        name: str | None = None,
    ):
        self.units = check_choice("units", units, UNITS)
        super().__init__(eps, name)
        self.steps = check_int("steps", steps, low=1)
        self.step_size = check_optional_real("step_size", step_size, low=0, low_open=True)
        self.padding_mode = check_choice("padding_mode", padding_mode, PADDINGS)

    @property
    def name(self) -> str:
        """``flow_pgd_0.01n`` (normalized units) or ``flow_pgd_0.155px`` (pixels): the unit is in the name."""
        return self._name or f"{self.short_name}_{eps_tag(self.eps)}{UNIT_TAGS[self.units]}"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return flow_pgd(
            model, x, y, self.eps, self.steps, self.step_size, self.units, self.padding_mode
        ).x_adv
