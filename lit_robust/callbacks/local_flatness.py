"""The local flatness of any model: the largest input-gradient norm in the eps-ball, on a seeded subset."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from lit_robust.callbacks.subset_evaluation import SubsetEvaluation
from lit_robust.functional.input_gradient import cross_entropy_gradient_norms
from lit_robust.functional.local_flatness import BALLS, GRADIENT_NORMS, INIT_STD, maximize_gradient_norm
from lit_robust.models.modes import eval_mode, frozen_parameters
from lit_robust.validation import check_choice, check_int, check_real


class LocalFlatness(SubsetEvaluation):
    """Estimate ``LF_eps(x, y) = max_{x' ∈ B_p(x, eps) ∩ [0,1]^D} ||∇_{x'} CE(f(x'), y)||_q`` (Xu et al.,
    ICIP 2020) for ANY ``RobustClassifier``, on a fixed seeded subset of the validation (or test) data.

    ``x̃`` comes from the same inner maximization as ``LocalFlatnessRegularization``
    (:func:`~lit_robust.functional.local_flatness.maximize_gradient_norm`: ``steps`` ascent steps of
    size ``alpha`` from ``x + init_std·N(0, I)``), with the model in eval mode (modes restored, no
    parameter ``.grad``). An ascent is a lower bound of the true maximum. Logs, under ``val/`` (or
    ``test/``):

    * ``lfr_local_flatness``: mean ``||∇ℓ(x̃)||_q``, the estimated local flatness, in units of loss
      per unit of pixel intensity (the defense's ``train/lfr_grad_norm``, measured in eval mode);
    * ``lfr_grad_norm_clean``: mean ``||∇ℓ(x)||_q`` at the clean point.

    With ``p = "inf"``, ``q = 1`` and an exact maximum, ``ℓ(x + δ) <= ℓ(x) + eps·LF_eps(x)`` for every
    ``||δ||_∞ <= eps`` (``papers/local_flatness.md`` (b)), so a flatter model has a smaller worst-case
    loss increase. Attach it to the baselines too, to compare training methods.

    Args:
        eps: radius of the ball, pixel units: in [0, 1] for ``p="inf"``, >= 0 (finite) for ``p="2"``;
            0 measures the gradient norm at the clean point (up to the ``init_std`` start).
        alpha: ascent step size, pixel units, > 0.
        steps: ascent steps, >= 1 (without a step the estimate would be the random start's).
        p: the ball, ``"inf"`` or ``"2"``.
        q: the gradient norm, 1 or 2.
        init_std: std of the Gaussian start around ``x``, pixel units, >= 0 (0: start at ``x``).
            Defaults: the official MNIST values of ``LocalFlatnessRegularization``: Linf 0.3, 40
            steps of 0.01, L1 gradient norm, init_std 0.001.
        num_samples, every_n_epochs, seed, batch_size: see :class:`SubsetEvaluation`.
    """

    def __init__(
        self,
        eps: float = 0.3,
        alpha: float = 0.01,
        steps: int = 40,
        p: Literal["inf", "2"] = "inf",
        q: Literal[1, 2] = 1,
        init_std: float = INIT_STD,
        num_samples: int = 500,
        every_n_epochs: int = 1,
        seed: int = 0,
        batch_size: int = 250,
    ):
        super().__init__(num_samples, every_n_epochs, seed, batch_size)
        self.p = check_choice("p (the ball)", str(p), tuple(BALLS))
        self.q = check_choice("q (the gradient norm)", q, tuple(GRADIENT_NORMS))
        self.eps = check_real("eps", eps, 0, 1 if self.p == "inf" else None)
        self.alpha = check_real("alpha", alpha, 0, low_open=True)
        self.steps = check_int("steps", steps, 1)
        self.init_std = check_real("init_std", init_std, 0)

    def per_sample(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        network = getattr(model, "network", model)
        norm = GRADIENT_NORMS[self.q]
        with torch.inference_mode(False), torch.enable_grad():
            x, y = x.detach().clone(), y.detach().clone()
            x_tilde = maximize_gradient_norm(
                network, x, y, self.eps, self.alpha, self.steps, self.p, self.q, self.init_std
            )
            with eval_mode(network), frozen_parameters(network):
                at_max = cross_entropy_gradient_norms(network, x_tilde.requires_grad_(True), y, norm)
                clean = cross_entropy_gradient_norms(network, x.requires_grad_(True), y, norm)
        return {"local_flatness": at_max.detach(), "grad_norm_clean": clean.detach()}

    def metric_names(self, stage: str) -> set[str]:
        return {f"{stage}/lfr_local_flatness", f"{stage}/lfr_grad_norm_clean"}

    def summarize(self, stage: str, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {
            f"{stage}/lfr_local_flatness": values["local_flatness"].mean(),
            f"{stage}/lfr_grad_norm_clean": values["grad_norm_clean"].mean(),
        }
