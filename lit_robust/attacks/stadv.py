"""Spatially transformed adversarial examples (Xiao, Zhu, Li, He, Liu, Song, "Spatially Transformed
Adversarial Examples", ICLR 2018, arXiv 1801.02612), wrapping advertorch's ``SpatialTransformAttack``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_robust.attacks.advertorch_compat import SpatialTransformAttack, quiet_advertorch
from lit_robust.attacks.base import Attack, Objective, ThreatModel, count_classes
from lit_robust.attacks.float32 import float32_view
from lit_robust.attacks.minimal import keep_if_fooled
from lit_robust.validation import check_int, check_real


class _SpatialTransformAttack(SpatialTransformAttack):
    """advertorch's stAdv, also recording which samples it counts as successful in ``found``."""

    def _update_if_better(self, *args) -> None:
        super()._update_if_better(*args)
        final_step = args[-1]  # per sample: the search step of its success, -1 if none
        self.found = torch.tensor([step != -1 for step in final_step], device=args[0].device)


class StAdv(Attack):
    """A smooth flow field ``g`` (sampling grid in [-1, 1] coordinates, bilinear, zero padding), by L-BFGS-B:

    ``min_g max(Z(x_g)_y - max_{k != y} Z(x_g)_k + kappa, 0) + initial_const * L_flow(g)``,

    ``x_g = grid_sample(x, g)``, ``Z``: logits. advertorch's ``L_flow`` is the L2 norm, over the whole
    image, of the flow's differences between horizontal neighbours plus that between vertical ones (the
    paper sums ``sqrt(du^2 + dv^2)`` pixel by pixel). One L-BFGS-B run optimizes the summed loss of the
    whole batch, so a sample's result depends on the batch it is in. Returns the final iterate.

    Failures: advertorch returns an ALL-ZERO image for samples the final iterate does not fool, and
    that image may well be misclassified itself. So a sample keeps its flowed image only if advertorch
    reports success for it *and* re-classifying the output confirms it fools the model; otherwise it
    is the clean ``x`` (never zeros, never a "distance 0" success).

    Args:
        initial_const: flow-loss weight ``tau`` of the paper (flow in grid units: [-1, 1] spans the
            image), > 0; default 0.05 (Xiao et al., evaluation.md §4).
        steps: L-BFGS-B iterations, >= 1; default 1 000 (evaluation.md §4); tests use ~10.
        kappa: confidence margin in logits, >= 0; default 0.
        name: metric name; default ``stadv``.
    """

    threat_model = ThreatModel.UNBOUNDED
    short_name = "stadv"
    objective = Objective.MINIMAL

    def __init__(
        self, initial_const: float = 0.05, steps: int = 1000, kappa: float = 0.0, name: str | None = None
    ):
        super().__init__(None, name)
        self.initial_const = check_real("initial_const", initial_const, low=0, low_open=True)
        self.steps = check_int("steps", steps, low=1)
        self.kappa = check_real("kappa", kappa, low=0)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"StAdv needs images (N, C, H, W), got x of shape {tuple(x.shape)}")
        view, x32 = float32_view(model, x)  # advertorch's stAdv builds a float32 sampling grid
        attack = _SpatialTransformAttack(
            view, count_classes(model, x), confidence=self.kappa, initial_const=self.initial_const,
            max_iterations=self.steps,
        )  # fmt: skip
        with quiet_advertorch():
            x_adv = attack.perturb(x32, y).to(x.dtype)
        return keep_if_fooled(model, x, y, x_adv, found=attack.found)
