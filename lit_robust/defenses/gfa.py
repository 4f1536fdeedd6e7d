"""GFA: Ci Lin, Tet Yeap, Iluju Kiringa, Biwei Zhang, "DeepDefense: Layer-Wise Gradient-Feature Alignment
for Building Robust Neural Networks", arXiv 2511.13749 (2025; submitted to ICLR 2026, withdrawn).

Not to be confused with Yan et al. 2018, "Deep Defense" (a different method). The paper body is not
available to us and there is no official code: the loss below is the reconstruction of
``shared/papers/gfa.md`` from the abstract and the public reviews. Every choice marked *unknown*
there is an option here, with our default; none of them is claimed to be the paper's.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_robust.attacks.base import Attack
from lit_robust.defenses.base import RobustClassifier
from lit_robust.functional.alignment import (
    PENALTIES,
    TASK_LOSSES,
    alignment_penalty,
    build_taps,
    guarded_mean,
    measure_alignment,
    per_sample_task_loss,
    recorded_alignment,
)
from lit_robust.models.taps import DEFAULT_TAP_TYPES
from lit_robust.validation import check_choice, check_real


class GFA(RobustClassifier):
    """Layer-wise gradient-feature alignment (gfa.md): the loss gradient w.r.t. each tapped layer input is
    pushed into line with that input, so tangential perturbations barely change the loss::

        L = (1/B) sum_b l(F(x_b), y_b) + lam * sum_t w_t (1/B) sum_b phi(c_t(x_b)) / sum_t w_t,
        c_t = <g_t, h_t> / max(||g_t|| ||h_t||, eps_cos),   g_t = d l(F(x_b), y_b) / d h_t

    Taps ``t``: ``h_in = x - input_center`` (gradient ``d l / d x``) and, for ``DEEP``, the input of
    every tapped module in forward order (one tap per call: ``name``, ``name#1``, ...), except a
    module whose input *is* ``x`` or its leading ``Normalize`` output (``h_in`` stands for it). The
    gradients come from one ``autograd.grad`` of the summed per-sample loss with ``create_graph=True``
    (double backprop; nothing detached): about 2-3 times a plain step, whatever the number of taps.
    Never ``torch.compile`` this step (compiled graphs cannot double-backward); fp32 or bf16.

    Args:
        network: the classifier (starts with ``Normalize``; inputs in [0, 1]). Activations after a
            tapped input must not work in place (a clear ``ValueError`` says so).
        taps: ``"deep"`` (default: input + every ``tap_types`` module), ``"first"`` (the network input
            only, the paper's FIRST variant) or a list of qualified module names (input + those).
            The paper's DEEP layer set is *unknown*.
        tap_types: module classes (dotted paths in YAML) tapped by ``"deep"``; default Conv2d and Linear
            (*inferred*).
        lam: weight of the alignment term, dimensionless, finite and >= 0 (*unknown*; ours 1.0, sweep
            0.01-10).
        penalty: ``phi``: ``"abs"`` ``1 - |c|`` (ours, default, sign-agnostic: in bias-free ReLU
            networks correctly classified samples have ``c <= 0``), ``"sq"`` ``1 - c^2`` (ours, smooth
            at 0), ``"pos"`` ``1 - c`` (aligned) or ``"neg"`` ``1 + c`` (opposed). ``pos`` and ``neg``
            are the two signed candidates: the authors' sister paper (arXiv 2511.11902) compares
            aligned (SAME) with opposed (DIFF) alignment and finds the direction critical, so the paper
            most likely uses a signed cosine (source: issue 14 / gfa.md §(i)); its sign is *unknown*.
        task_loss: ``"ce"`` (ours, default), ``"mse"``: ``sum_k (softmax(z)_k - 1[k = y])^2`` (the
            reviews' "MSE" on probabilities) or ``"mse_logits"``: ``sum_k (z_k - 1[k = y])^2`` on the
            raw logits, as the authors' public code trains (source: issue 14 / gfa.md §(i)); both summed
            over classes, mean over the batch. Which one the paper used is *unknown*. The task term is
            logged under the option's name (``train/mse_logits``).
        layer_weights: optional ``{tap name: w_t}``, each finite and >= 0 (``"input"`` for ``h_in``);
            taps not listed weigh 1. The sum is normalized by ``sum_t w_t`` so ``lam`` does not grow
            with depth. Default uniform (the paper's weighting is *unknown*).
        input_center: ``c_in`` in pixel units, in [0, 1]: ``h_in = x - c_in``. 0.5 reproduces the
            paper's [-1, 1] inputs exactly (cosine is scale-free); 0 aligns with the raw pixels.
        eps_cos: floor of ``||g|| ||h||`` in the cosine, > 0 (ours, 1e-12): a zero gradient gives
            ``c = 0`` (with no floor it would give 0 / 0 = NaN).
        min_grad_norm: the tiny-gradient guard, >= 0 (ours; 0, the default, is off: today's loss bit
            for bit). At each tap, a sample whose tapped-gradient norm ``||g_t||`` is below it adds no
            penalty there: the tap's batch mean is over the remaining samples, and is 0 (gradient 0, no
            NaN; its weight stays in ``sum_t w_t``) when none remain. Why: ``|d c / d g| =
            sqrt(1 - c^2) / ||g||`` (gfa.md §(i)), so the penalty's gradient grows like ``1 / ||g||``
            while cross-entropy drives ``||g||`` to 0 on confidently classified samples; those samples,
            whose direction is numerically meaningless, then dominate the update (consistent with the
            collapses measured at ``lam >= 1``). Set it well below typical norms (``1e-6``): it is meant
            to remove only the degenerate samples. With it on, the fraction of samples dropped is
            logged as ``train/gfa_dropped`` (mean over taps) and ``train/gfa_dropped/<tap>``.
        adversary, trades_beta: see :class:`RobustClassifier`: GFA on top of adversarial training (the
            alignment is then measured at the adversarial inputs, from the same forward as the task
            loss) or of TRADES (at the clean inputs). The comparison the GFA paper makes is with AT.
        num_classes, optimizer, lr_scheduler, init_from, input_transform: see :class:`RobustClassifier`.

    Logs ``train/loss``, ``train/ce`` (or ``train/mse``, ``train/mse_logits``; ``adv_`` first with an
    adversary), ``train/gfa_reg`` (``lam R_GFA``, as it enters the loss), ``train/gfa_penalty``
    (``R_GFA``), ``train/gfa_abs_cos`` (mean ``|c_t|`` over taps and batch), ``train/acc`` and the
    per-tap mean ``|c_t|`` as ``train/gfa_abs_cos/<tap>`` (gfa.md's name for what issue 4 calls
    ``train/gfa_cos/<layer>``); with ``min_grad_norm > 0`` also ``train/gfa_dropped`` and
    ``train/gfa_dropped/<tap>``. The same measurement for any model at validation:
    ``lit_robust.callbacks.gradient_feature_alignment.GradientFeatureAlignment``.
    """

    FIRST = "first"
    DEEP = "deep"

    def __init__(
        self,
        network: nn.Module,
        taps: str | list[str] = "deep",
        tap_types: Sequence[str] = DEFAULT_TAP_TYPES,
        lam: float = 1.0,
        penalty: str = "abs",
        task_loss: str = "ce",
        layer_weights: dict[str, float] | None = None,
        input_center: float = 0.5,
        eps_cos: float = 1e-12,
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        init_from: str | None = None,
        adversary: Attack | None = None,
        trades_beta: float | None = None,
        input_transform: nn.Module | None = None,
        min_grad_norm: float = 0.0,
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
        lam = check_real("lam", lam, 0)
        penalty = check_choice("penalty", penalty, PENALTIES)
        task_loss = check_choice("task_loss", task_loss, TASK_LOSSES)
        weights = {
            name: check_real(f"layer_weights[{name!r}]", weight, 0)
            for name, weight in dict(layer_weights or {}).items()
        }
        input_center = check_real("input_center", input_center, 0, 1)
        eps_cos = check_real("eps_cos", eps_cos, 0, low_open=True)
        min_grad_norm = check_real("min_grad_norm", min_grad_norm, 0)
        self.layer_taps = build_taps(network, taps, tap_types)  # selection only: hooks live per step
        self.lam = lam
        self.penalty = penalty
        self.task_loss_name = task_loss  # the task term's metric name: "ce", "mse" or "mse_logits"
        self.layer_weights = weights
        self.input_center = input_center
        self.eps_cos = eps_cos
        self.min_grad_norm = min_grad_norm

    def tap_weights(self, names: Sequence[str]) -> list[float]:
        """``w_t`` of each tap; an unknown key in ``layer_weights`` or an all-zero weighting is an error."""
        unknown = set(self.layer_weights) - set(names)
        if unknown:
            raise ValueError(
                f"layer_weights names taps {sorted(unknown)} that do not exist; taps: {list(names)}"
            )
        weights = [float(self.layer_weights.get(name, 1.0)) for name in names]
        if sum(weights) <= 0:
            raise ValueError(f"layer_weights give every tap weight 0: {self.layer_weights}")
        return weights

    def alignment(self, x: Tensor, y: Tensor, create_graph: bool = True) -> tuple[Tensor, Tensor, dict]:
        """``(per-sample task loss, logits, {tap: c_t})`` of one recording forward on a copy of ``x``."""
        x = x.detach().clone().requires_grad_(True)
        return measure_alignment(
            self.network,
            self.layer_taps,
            x,
            y,
            self.task_loss_name,
            self.input_center,
            self.eps_cos,
            create_graph,
        )

    # ----------------------------------------------------------------- the shared training step
    def task_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return per_sample_task_loss(logits, y, self.task_loss_name).mean()

    def regularizer_inputs(self, x: Tensor) -> Tensor:
        """A copy of ``x`` that requires grad: the input tap's gradient is taken with respect to it."""
        return x.detach().clone().requires_grad_(True)

    def training_forward(self, x: Tensor) -> Tensor:
        """The network's forward with every tapped layer input recorded (:meth:`regularizer` reads them)."""
        inputs = self.transform_inputs(x)  # the input tap stays x: its gradient flows back through t
        with self.layer_taps.recording(inputs) as record:
            logits = self.network(inputs)
        self._record = record
        return logits

    def regularizer(self, x: Tensor, y: Tensor, logits: Tensor) -> dict[str, Tensor]:
        record, self._record = self._record, None
        per_sample = per_sample_task_loss(logits, y, self.task_loss_name)
        cosines, grad_norms = recorded_alignment(
            record, x, per_sample, self.input_center, self.eps_cos, create_graph=True
        )
        names = list(cosines)
        weights = self.tap_weights(names)
        guarded = {
            name: guarded_mean(
                alignment_penalty(cosines[name], self.penalty), grad_norms[name], self.min_grad_norm
            )
            for name in names
        }
        penalties = [guarded[name][0] for name in names]
        penalty = sum(w * p for w, p in zip(weights, penalties, strict=True)) / sum(weights)
        if self.min_grad_norm > 0:  # the guard's diagnostics, only when it is on
            dropped = {f"gfa_dropped/{name}": guarded[name][1] for name in names}
            self.log_diagnostics(gfa_dropped=torch.stack(list(dropped.values())).mean(), **dropped)
        abs_cos = {name: c.detach().abs().mean() for name, c in cosines.items()}
        if (
            self.lam > 0
            and self.training
            and self.global_step == 0
            and not any(v > 0 for v in abs_cos.values())
        ):
            warnings.warn(
                "GFA: every tap's loss gradient is zero at the first step (a zero-initialized last layer?), "
                "so the alignment penalty steers the first updates and training can collapse to chance "
                "accuracy; start the last layer at random (SmallCNN(zero_init_head=False))",
                stacklevel=2,
            )
        self.log_diagnostics(
            gfa_penalty=penalty,
            gfa_abs_cos=torch.stack(list(abs_cos.values())).mean(),
            acc=(logits.detach().argmax(dim=1) == y).float().mean(),
            **{f"gfa_abs_cos/{name}": value for name, value in abs_cos.items()},
        )
        return {"gfa_reg": self.lam * penalty}
