"""Flow gradient regularization: Pengfei Xia, Bin Li, "Improving Resistance to Adversarial
Deformations by Regularizing Gradients", Neurocomputing 455:38-46 (2021), arXiv 2008.12997.
Official code: ``xpf/Flow-Gradient-Regularization``. Spec: ``papers/flow_gradient.md``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_robust.attacks.base import Attack
from lit_robust.defenses.base import RobustClassifier
from lit_robust.functional.flow_gradient import (
    CONVENTIONS,
    Convention,
    flow_gradient,
    flow_gradient_penalty,
    random_deformation,
)
from lit_robust.functional.input_gradient import input_gradient
from lit_robust.validation import check_choice, check_real


class FlowGradientRegularization(RobustClassifier):
    """``L = (1/B) sum_b CE(f(x~_b), y_b) + lam * R``, ``R = (1/B) sum_b ||grad_f l_b(f)|_{f=0}||_2^2``.

    ``grad_f l_b`` is the gradient of the per-sample loss of the warped image ``x~_b(p + f(p))`` w.r.t.
    the flow field ``f`` at zero flow, in pixel units. It is computed in closed form, the input
    gradient times the image's forward differences summed over channels
    (:func:`~lit_robust.functional.flow_gradient.flow_gradient`, clamped border: 0 in the last
    column / row), from the same train-mode forward as the CE, with one double backward. ``x~`` is the
    random start ``clamp(warp_zeros(x, n), 0, 1)``, ``n ~ N(0, rs_sigma_px^2)`` (official; on only
    when ``lam > 0``), or the ``adversary``'s output when one is given.

    Args:
        network: the classifier (starts with ``Normalize``; inputs in [0, 1]).
        lam: weight of ``R``, finite and >= 0, in the active ``convention``. Default 4.4 (pixel
            convention), the official README's 300 on 32 x 32 images at batch 128; the paper's
            per-dataset values are **unknown**. Conversion for ``H = W``:
            ``lam_pix = lam_off ((W - 1) / 2)^2 / B^2`` (CIFAR, B = 128: 100 / 200 / 300 -> 1.47 / 2.93 /
            4.40). ``lam = 0`` is standard training.
        convention: ``"pixel"`` (ours, default): ``R`` is the per-sample squared norm in pixel units,
            independent of batch size and resolution; ``"official"``: the official code's scale, the
            squared gradient of the batch-*mean* loss w.r.t. the normalized flow, averaged over the
            batch, ``R_off = (1/B^2) (1/B) sum_b ||G_norm,b||^2`` (``B`` the actual batch size).
        rs_sigma_px: std of the random-start flow in pixels, >= 0 (official 0.01 normalized, about 0.155 px
            on 32 px); default 0.155. 0 turns the random start off.
        adversary: optional FGR + adversarial deformation training (the paper's best variant; its
            recipe is **unknown**): ``x~ = adversary(model, x, y)`` (e.g. ``FlowPGD`` with K = 7)
            replaces the random start, and both CE and ``R`` are taken at ``x~``. Default None. Any
            attack works (``PGD``: FGR on top of PGD-AT); see :class:`RobustClassifier`.
        trades_beta: TRADES' objective (with a KL ``adversary``); the random start and ``R`` are then
            at the clean inputs, where TRADES' cross-entropy is.
        num_classes, optimizer, lr_scheduler, init_from, input_transform: see :class:`RobustClassifier`.

    Logs ``train/ce`` (``train/adv_ce`` with an adversary), ``train/flow_grad_reg`` (``lam R``, as it
    enters the loss), ``train/flow_grad_penalty`` (``R`` in the active convention) and both
    conventions' values, ``train/flow_grad_sq_pix`` and ``train/flow_grad_sq_official``.
    """

    def __init__(
        self,
        network: nn.Module,
        lam: float = 4.4,
        convention: Convention = "pixel",
        rs_sigma_px: float = 0.155,
        adversary: Attack | None = None,
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        init_from: str | None = None,
        trades_beta: float | None = None,
        input_transform: nn.Module | None = None,
    ):
        super().__init__(
            network,
            num_classes,
            optimizer,
            lr_scheduler,
            init_from,
            adversary,
            trades_beta,
            input_transform=input_transform,
        )
        self.lam = check_real("lam", lam, 0)
        self.convention = check_choice("convention", convention, CONVENTIONS)
        self.rs_sigma_px = check_real("rs_sigma_px", rs_sigma_px, 0)

    def regularizer_inputs(self, x: Tensor) -> Tensor:
        """``x~``: the random start on clean inputs (none on the adversary's), a leaf for the gradient."""
        if self.lam == 0:
            return x
        clean = self.adversary is None or self.trades_beta is not None
        return (random_deformation(x, self.rs_sigma_px) if clean else x.detach()).requires_grad_(True)

    def regularizer(self, x: Tensor, y: Tensor, logits: Tensor) -> dict[str, Tensor]:
        if self.lam == 0:
            return {}
        per_sample = F.cross_entropy(logits, y, reduction="none")
        grad = flow_gradient(input_gradient(per_sample, x, create_graph=True), x.detach())
        sq_pix = flow_gradient_penalty(grad, "pixel")
        sq_off = flow_gradient_penalty(grad, "official")
        penalty = sq_pix if self.convention == "pixel" else sq_off
        self.log_diagnostics(flow_grad_penalty=penalty, flow_grad_sq_pix=sq_pix, flow_grad_sq_official=sq_off)
        return {"flow_grad_reg": self.lam * penalty}
