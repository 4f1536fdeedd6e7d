"""Input-gradient regularization (double backpropagation): Drucker and LeCun, "Improving
Generalization Performance Using Double Backpropagation", IEEE Trans. Neural Networks 3(6), 1992;
Ross and Doshi-Velez, "Improving the Adversarial Robustness and Interpretability of Deep Neural
Networks by Regularizing Their Input Gradients", AAAI 2018 (arXiv 1711.09404). The baseline of
``papers/flow_gradient.md`` (Xia and Li) and of GFA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_robust.attacks.base import Attack
from lit_robust.defenses.base import RobustClassifier
from lit_robust.functional.flow_gradient import random_deformation
from lit_robust.functional.input_gradient import NORMS, Norm, gradient_norm, input_gradient
from lit_robust.validation import check_choice, check_real


class InputGradientRegularization(RobustClassifier):
    """``L = (1/B) sum_b CE(f(x_b), y_b) + lam * (1/B) sum_b ||grad_x l_b||_p^q``, ``l_b = CE(f(x_b), y_b)``.

    The per-sample input gradients come from one backward of the *summed* per-sample losses
    (``create_graph=True``), so ``lam`` does not depend on the batch size (``flow_gradient.md`` (d) 6).
    Logs ``train/ce`` and ``train/input_grad_reg`` (the weighted term ``lam * R``, as it enters the loss)
    and ``train/input_grad_penalty`` (``R``). With an ``adversary``, ``R`` is taken at the adversarial
    inputs (double backpropagation on top of adversarial training); with ``trades_beta``, at the clean
    ones, where TRADES' cross-entropy is.

    Args:
        network: the classifier (starts with ``Normalize``; inputs in [0, 1]).
        lam: weight of the penalty, finite and >= 0; its unit is 1 / (gradient norm in 1/pixel-intensity
            units)^q.
            The paper's values are **unknown**; our default 1.0, the spec's sweep {0.1, 1, 10, 100}.
            ``lam = 0`` is standard training (no double backward).
        norm: ``"l2sq"`` (default, ``||g||_2^2``), ``"l2"`` (``||g||_2``) or ``"l1"`` (``||g||_1``).
            The paper's choice is **unknown** (squared L2 assumed, as double backpropagation).
        rs_sigma_px: random-start deformation before the loss, the std of a Gaussian flow in pixels, >= 0
            (as :class:`~lit_robust.defenses.flow_gradient.FlowGradientRegularization`, for a
            controlled comparison). Default 0 (off); whether the paper used it is **unknown**.
        adversary, trades_beta: see :class:`RobustClassifier` (double backpropagation on top of
            adversarial training or TRADES).
        num_classes, optimizer, lr_scheduler, init_from, input_transform: see :class:`RobustClassifier`.
    """

    def __init__(
        self,
        network: nn.Module,
        lam: float = 1.0,
        norm: Norm = "l2sq",
        rs_sigma_px: float = 0.0,
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        init_from: str | None = None,
        adversary: Attack | None = None,
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
        self.norm = check_choice("norm", norm, NORMS)
        self.rs_sigma_px = check_real("rs_sigma_px", rs_sigma_px, 0)

    def regularizer_inputs(self, x: Tensor) -> Tensor:
        if self.lam == 0:
            return x
        return random_deformation(x, self.rs_sigma_px).detach().requires_grad_(True)

    def regularizer(self, x: Tensor, y: Tensor, logits: Tensor) -> dict[str, Tensor]:
        if self.lam == 0:
            return {"input_grad_reg": logits.new_zeros(())}
        grad = input_gradient(F.cross_entropy(logits, y, reduction="none"), x, create_graph=True)
        penalty = gradient_norm(grad, self.norm).mean()
        self.log_diagnostics(input_grad_penalty=penalty)
        return {"input_grad_reg": self.lam * penalty}
