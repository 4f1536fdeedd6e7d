"""ADef: DeepFool on vector fields (Alaifari, Alberti, Gauksson, "ADef: an Iterative Algorithm to Construct
Adversarial Deformations", ICLR 2019, arXiv 1804.07729). No maintained library has it for current
PyTorch; we follow the authors' PyTorch code (``papers/flow_gradient.md`` (b)).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from lit_robust.attacks.base import Attack, Objective, ThreatModel, eps_tag
from lit_robust.attacks.minimal import keep_if_fooled
from lit_robust.functional.deepfool import TINY, candidate_gradients, top_candidates
from lit_robust.functional.flow import gaussian_smooth, image_gradient, t_norm, warp
from lit_robust.validation import check_choice, check_int, check_optional_int, check_optional_real, check_real

Smoothing = Literal["reflect", "zeros"]
SMOOTHING_PADDINGS = ("reflect", "zeros")
BOUNDARY_TOL = 1e-6  # the official code's "on a decision boundary" tolerance on logit gaps


class ADefResult(NamedTuple):
    x_adv: Tensor  # warp(x, flow) with border padding
    flow: Tensor  # (B, H, W, 2) in pixels, (column, row)
    fooled: Tensor  # bool per sample: argmax model(x_adv) != source
    steps: Tensor  # iterations each sample took


def check_adef_args(
    max_norm: float | None,
    max_iter: int,
    num_candidates: int | None,
    sigma: float,
    overshoot: float,
    smoothing_padding: str,
) -> None:
    """Clear errors for bad hyperparameters, before any work starts (ranges: :class:`ADef`)."""
    check_optional_real("max_norm", max_norm, low=0)
    check_int("max_iter", max_iter, low=1)
    check_optional_int("num_candidates", num_candidates, low=1)
    check_real("sigma", sigma, low=0)
    if check_real("overshoot", overshoot) < 1:
        raise ValueError(
            f"overshoot must be >= 1 (a factor, not DeepFool's eta; 1 = none), got {overshoot!r}"
        )
    check_choice("smoothing_padding", smoothing_padding, SMOOTHING_PADDINGS)


def adef(
    model: nn.Module,
    x: Tensor,
    source: Tensor | None = None,
    num_candidates: int | None = 9,
    max_iter: int = 50,
    sigma: float = 1.0,
    overshoot: float = 1.0,
    max_norm: float | None = None,
    smoothing_padding: Smoothing = "reflect",
) -> ADefResult:
    """Find small deformations ``tau`` (pixels) with ``argmax model(x o (id + tau)) != source``.

    See :class:`ADef` for the update and the arguments. ``source`` defaults to the predicted labels;
    samples already misclassified are not moved. The model should be in eval mode.
    """
    check_adef_args(max_norm, max_iter, num_candidates, sigma, overshoot, smoothing_padding)
    with torch.no_grad():
        logits = model(x)
    prediction = logits.argmax(dim=1)
    source = prediction if source is None else source.to(prediction.device)
    candidates = top_candidates(logits, source, num_candidates)
    limit = math.inf if max_norm is None else max_norm
    searching = prediction == source
    flow = x.new_zeros(x.shape[0], *x.shape[2:], 2)
    steps = torch.zeros_like(source)
    for _ in range(max_iter):
        index = searching.nonzero().squeeze(1)
        if index.numel() == 0:
            break
        deformed = warp(x[index], flow[index], padding_mode="border")
        gaps, grads = candidate_gradients(model, deformed, source[index], candidates[index])
        d_col, d_row = (d[:, None] for d in image_gradient(deformed))
        alpha = torch.stack([(grads * d_col).sum(2), (grads * d_row).sum(2)], dim=-1)  # (b, k, H, W, 2)
        smooth = gaussian_smooth(alpha, sigma, smoothing_padding)
        scale = gaps / smooth.square().flatten(2).sum(2).clamp_min(TINY)  # f_k / ||S alpha_k||^2
        twice = gaussian_smooth(smooth, sigma, smoothing_padding)
        fields = flow[index, None] - scale[..., None, None, None] * twice  # one candidate field per class
        sizes = t_norm(fields).nan_to_num(math.inf)
        size, best = sizes.where(sizes < limit, math.inf).min(dim=1)
        moved = (size < limit) & ((size - t_norm(flow[index])).abs() > 1e-10)  # else: stuck or over budget
        flow[index[moved]] = fields[moved, best[moved]]
        steps[index] += 1
        with torch.no_grad():
            logits = model(warp(x[index], flow[index], padding_mode="border"))
        searching[index] = (logits.argmax(dim=1) == source[index]) & moved
    with torch.no_grad():
        if overshoot > 1:
            flow = _overshoot(model, x, flow, source, overshoot, limit)
        x_adv = warp(x, flow, padding_mode="border")
        fooled = model(x_adv).argmax(dim=1) != source
    return ADefResult(x_adv, flow, fooled, steps)


def _overshoot(
    model: nn.Module, x: Tensor, flow: Tensor, source: Tensor, overshoot: float, limit: float
) -> Tensor:
    """The official code's overshoot: fields that did not fool the model, or that end on a decision
    boundary, are multiplied by ``overshoot``, but never beyond the budget."""
    logits = model(warp(x, flow, padding_mode="border"))
    near_top = logits > logits.amax(dim=1, keepdim=True) - BOUNDARY_TOL
    retry = (logits.argmax(dim=1) == source) | (near_top.sum(dim=1) > 1)
    factor = (limit / t_norm(flow)).clamp(1.0, overshoot)
    return torch.where(retry[:, None, None, None], flow * factor[:, None, None, None], flow)


class ADef(Attack):
    """Iterative linearized deformations: DeepFool where the perturbation is a smooth vector field.

    For the current field ``tau`` (pixels; start 0), the deformed image ``x^j = x o (id + tau)``
    (bilinear, border padding: always the *original* image warped by the accumulated field), each
    candidate ``k`` with gap ``f_k = F_k(x^j) - F_y(x^j)`` gets::

        alpha_k = sum_c grad_x(F_k - F_y)_c(x^j) * grad x^j_c      (spatial gradient: central differences)
        tau_k   = tau - f_k * S(S alpha_k) / ||S alpha_k||_2^2         (S: Gaussian filter of width sigma)

    and the candidate field of smallest T-norm ``||tau||_T = max_p ||tau(p)||_2`` (pixels) is kept,
    until the label changes, no candidate fits the budget, or ``max_iter``.

    Failures return the clean input (checked by classifying the output again). Misclassified points
    are already adversarial and are returned as they are.

    Args:
        max_norm: budget on ``||tau||_T`` in pixels, >= 0 and finite (0 returns the clean input, as
            every eps); candidates reaching it are refused (official).
            ``None`` (default): unbounded, threat model ``unbounded``, name ``adef``. A number: threat
            model ``flow`` with ``eps = max_norm``, name ``adef_<max_norm>px``. The budgets of the
            ADef and flow-gradient papers are unknown; report the T-norms of the unbounded attack.
        max_iter: iterations, >= 1 (official code: 50).
        num_candidates: candidate classes other than the label, >= 1, by logit at ``x`` (default 9, the
            top-10 of foolbox and of AutoAttack's targeted attacks; ``None`` = all).
        sigma: width of the Gaussian smoothing in pixels, >= 0 and finite (default 1.0, foolbox;
            0 = none).
        overshoot: a finite factor >= 1, as the official code defines it (not DeepFool's ``1 + eta``): at
            the end, fields that did not fool the model or end on a decision boundary are
            multiplied by it, without exceeding ``max_norm``. Default 1 = no overshoot
            (``papers/evaluation.md`` section 4, official default); the authors' demo used 1.2.
        smoothing_padding: ``"reflect"`` (default; scipy / foolbox, keeps constant fields) or
            ``"zeros"`` (the official code's zero-padded convolution, self-adjoint).
    """

    short_name = "adef"
    objective = Objective.MINIMAL

    def __init__(
        self,
        max_norm: float | None = None,
        max_iter: int = 50,
        num_candidates: int | None = 9,
        sigma: float = 1.0,
        overshoot: float = 1.0,
        smoothing_padding: Smoothing = "reflect",
        name: str | None = None,
    ):
        check_adef_args(max_norm, max_iter, num_candidates, sigma, overshoot, smoothing_padding)
        threat_model = ThreatModel.UNBOUNDED if max_norm is None else ThreatModel.FLOW
        super().__init__(max_norm, name, threat_model=threat_model)
        self.max_norm = max_norm
        self.max_iter = max_iter
        self.num_candidates = num_candidates
        self.sigma = sigma
        self.overshoot = overshoot
        self.smoothing_padding = smoothing_padding

    @property
    def name(self) -> str:
        """``adef`` (unbounded) or ``adef_0.5px`` (``max_norm = 0.5``)."""
        if self._name or self.max_norm is None:
            return super().name
        return f"{self.short_name}_{eps_tag(self.max_norm)}px"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        result = adef(
            model, x, source=y, num_candidates=self.num_candidates, max_iter=self.max_iter,
            sigma=self.sigma, overshoot=self.overshoot, max_norm=self.max_norm,
            smoothing_padding=self.smoothing_padding,
        )  # fmt: skip
        return keep_if_fooled(model, x, y, result.x_adv.clamp(0.0, 1.0))
