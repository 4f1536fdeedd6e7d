"""WNLL output activation: Bao Wang, Alex T. Lin, Wei Zhu, Penghang Yin, Andrea L. Bertozzi, Stanley J. Osher,
"Adversarial Defense via Data Dependent Activation Function and Total Variation Minimization", arXiv
1809.08516 (v3: Inverse Problems & Imaging 2020, doi 10.3934/ipi.2020046); official code
``BaoWangMath/DNN-DataDependentActivation``. Spec: ``shared/papers/wnll_tvm.md``. The network and the
template bank are :mod:`lit_robust.models.wnll_network`, the graph solve :mod:`lit_robust.functional.wnll`,
the attack-side helper :class:`lit_robust.attacks.grad_mode.WithGradMode`.

Network ``h = β(φ(x))`` (backbone ``φ``, buffer ``β = ReLU(Linear(d, d))``), two heads on ``h``: the linear
head ``z = W_fc h + b_fc`` and the WNLL interpolation ``U`` against clean training templates. One ``fit``
alternates two stages:

* stage A (``"softmax"``): ``L = CE(z(x'), y)``, ``x' = adversary(softmax net, x, y)`` or ``x' = x``;
* stage B (``"wnll"``): only the buffer trains; ``L = (1/|R|) Σ_{i∈R} CE(o_i, y_i)``,
  ``o = z + (U - z).detach()`` (value: the WNLL scores, gradient: the linear head's).

``forward(x)`` is the WNLL prediction ``log U(t(x))``, ``t`` the optional ``input_transform``: what is
predicted, evaluated and attacked.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import Dataset
from torchmetrics.classification import MulticlassAccuracy

from lit_robust.attacks.base import Attack
from lit_robust.defenses.base import Batch, RobustClassifier
from lit_robust.functional.wnll import MU_RULES, WEIGHTS, wnll_scores, wnll_straight_through
from lit_robust.models.modes import eval_mode
from lit_robust.models.wnll_network import TemplateBank, WNLLNetwork
from lit_robust.validation import check_choice, check_int, check_optional_int, check_optional_real, check_real

GRAD_MODES = ("surrogate", "exact")
VIEWS = ("surrogate", "exact", "softmax")
LOSS_ROWS = ("all", "misclassified")
Stage = Literal["softmax", "wnll"]

__all__ = ["WNLL", "StageSchedule", "TemplateBank", "WNLLClassifier", "WNLLNetwork"]


class StageSchedule:
    """``cycles`` rounds of ``stage_a_epochs`` epochs of stage A then ``stage_b_epochs`` of stage B (0-based
    epochs; later epochs repeat the last stage). With ``stage_b_lr``, stage B of round ``r`` (1-based) runs
    at ``stage_b_lr / r`` and the stage-A rates come back with stage A; the rates to restore are state,
    saved in the checkpoint (:meth:`state_dict`), so a run resumed inside stage B continues stage B at its
    rate and returns to the right stage-A rates. ``None``: the optimizer's rates throughout.
    """

    def __init__(self, stage_a_epochs: int, stage_b_epochs: int, cycles: int, stage_b_lr: float | None):
        self.stage_a_epochs = check_int("stage_a_epochs", stage_a_epochs, 0)
        self.stage_b_epochs = check_int("stage_b_epochs", stage_b_epochs, 0)
        if self.stage_a_epochs + self.stage_b_epochs == 0:
            raise ValueError("stage_a_epochs and stage_b_epochs must not both be 0")
        self.cycles = check_int("cycles", cycles, 1)
        self.stage_b_lr = check_optional_real("stage_b_lr", stage_b_lr, 0, low_open=True)
        self.stage_a_lrs: list[float] | None = None  # set while a stage-B round has replaced them

    @property
    def period(self) -> int:
        return self.stage_a_epochs + self.stage_b_epochs

    def stage_at(self, epoch: int) -> Stage:
        """The stage of epoch ``epoch`` (0-based)."""
        if epoch >= self.cycles * self.period:
            return "wnll" if self.stage_b_epochs else "softmax"
        return "softmax" if epoch % self.period < self.stage_a_epochs else "wnll"

    def round_at(self, epoch: int) -> int:
        """The round (1-based) of epoch ``epoch``; epochs past the schedule belong to the last."""
        return min(epoch // self.period, self.cycles - 1) + 1

    def set_learning_rates(self, epoch: int, optimizer: Optimizer) -> None:
        """Entering epoch ``epoch``: switch ``optimizer``'s rates to stage B's, or back to stage A's."""
        if self.stage_b_lr is None:
            return
        groups = optimizer.param_groups
        if self.stage_at(epoch) == "wnll" and self.stage_a_lrs is None:
            self.stage_a_lrs = [group["lr"] for group in groups]
            for group in groups:
                group["lr"] = self.stage_b_lr / self.round_at(epoch)
        elif self.stage_at(epoch) == "softmax" and self.stage_a_lrs is not None:
            for group, lr in zip(groups, self.stage_a_lrs, strict=True):
                group["lr"] = lr
            self.stage_a_lrs = None

    def state_dict(self) -> dict[str, Any]:
        return {"stage_a_lrs": self.stage_a_lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        lrs = state.get("stage_a_lrs")
        self.stage_a_lrs = None if lrs is None else [float(lr) for lr in lrs]


class WNLLClassifier(nn.Module):
    """The WNLL pipeline with another gradient: ``"surrogate"`` (value: the log-scores; gradient: the linear
    head's, the BPDA the paper's attacks used) or ``"exact"`` (autograd through the weights and the solve,
    kNN sets fixed). Only the queries ``x`` are perturbed; templates are fixed clean images."""

    def __init__(self, defense: WNLL, grad_mode: Literal["surrogate", "exact"] = "surrogate"):
        super().__init__()
        self.defense = defense
        self.grad_mode = check_choice("grad_mode", grad_mode, GRAD_MODES)

    def forward(self, x: Tensor) -> Tensor:
        return self.defense.wnll_logits(x, self.grad_mode)


class WNLL(RobustClassifier):
    """Backbone + buffer + linear head, trained in alternating stages, predicting by WNLL interpolation::

        stage A:  L_A = (1/B) Σ_i CE(z(x_i'), y_i),   x_i' = adversary(softmax net, x_i, y_i)  or  x_i
        stage B:  o = z(h) + (U(h) - z(h)).detach(),  L_B = (1/|R|) Σ_{i∈R} CE(o_i, y_i)
        predict:  forward(x) = log clamp(mean over chunks of U(h(t(x))), 1e-12)

    ``U``: the WNLL scores of the queries against templates (:func:`~lit_robust.functional.wnll.wnll_scores`);
    in stage B, ``stage_b_templates`` drawn afresh every step from the template bank (seeded by
    ``template_seed`` and the global step); at prediction, the bank's ``num_templates`` templates split into
    ``template_chunks`` chunks (validation: the first ``val_template_chunks``), queries in graphs of
    ``query_batch_size`` (transductive). ``R``: all rows, or those the WNLL head misclassifies. Stage B
    freezes backbone and head (eval mode, ``requires_grad=False``: no gradient, decay or momentum step).

    Templates (:class:`~lit_robust.models.wnll_network.TemplateBank`): drawn from the DataModule's
    ``clean_train_set()`` (no augmentation; any other DataModule: ``train_dataloader().dataset``) when a
    Trainer sets the model up. They are not in the checkpoint: ``num_templates`` and ``template_seed``
    are, so the same data re-draws the same templates. Outside a Trainer, :meth:`load_templates` (a
    DataModule or a Dataset) or :meth:`set_templates` (tensors) before predicting.

    Logs ``train/ce`` (``train/adv_ce``) in stage A; ``train/wnll_ce``, ``train/wnll_acc``,
    ``train/wnll_isolated`` (share of queries with no path to a template) in stage B; ``train/stage``
    (0 = A, 1 = B); ``val/acc`` (WNLL), ``val/acc_softmax`` (linear head), ``val/wnll_isolated``; same under
    ``test/``.

    Args:
        network: a :class:`~lit_robust.models.wnll_network.WNLLNetwork`, or a backbone, wrapped as
            ``WNLLNetwork(network, feature_dim, num_classes)`` (one buffer block; the feature width
            inferred unless ``feature_dim`` is given): every ``configs/network`` file composes.
        stage_a_epochs, stage_b_epochs, cycles, stage_b_lr: the schedule (:class:`StageSchedule`); epochs
            are integers >= 0, not both 0; ``cycles`` >= 1; ``stage_b_lr`` finite > 0 (official 0.05) or
            ``None``.
        stage_b_templates: templates per stage-B graph, >= 1 (official 2000; the batch is the queries).
        loss_rows: ``"all"`` or ``"misclassified"``.
        k, k_sigma, weight, mu, ridge, solve_dtype: the graph: ``k`` >= 2 neighbours (15); ``k_sigma`` in
            [2, k], the neighbour setting ``σ`` (8); ``weight`` ``"paper"``/``"code"``; ``mu``
            ``"paper"``/``"code"`` or a finite number >= 0; ``ridge`` >= 0, relative (1e-6);
            ``"float32"`` / ``"float64"`` dense solve.
        num_templates: inference templates, >= 1 (official 50 000; capped at the train set's size).
        template_chunks: chunks per query graph, >= 1; val_template_chunks: in [1, template_chunks] or
            ``None`` (all).
        query_batch_size: queries per graph, >= 1 (official 1000).
        template_seed: an integer >= 0, seeding the template choice and the stage-B draws.
        grad_mode: the gradient of ``forward``, ``"surrogate"`` or ``"exact"`` (:class:`WNLLClassifier`).
        adversary: optional stage-A training attack, on the softmax network (PGD-AT: the paper's robust
            setting, ``PGD(0.031, steps=10, step_size=0.007)`` on CIFAR-10).
        input_transform: see :class:`RobustClassifier`; applied to the queries (prediction, every gradient
            view, training inputs), never to templates. TVM in front: BPDA is built into
            ``TotalVariationMinimization``; attack with EOT (``WithGradMode(..., eot_samples=20)``).
        num_classes, optimizer, lr_scheduler, init_from: see :class:`RobustClassifier` (``init_from``: a
            WNLL checkpoint or a :class:`WNLLNetwork` state dict).
        feature_dim: the backbone's feature width when ``network`` is a backbone, >= 1; ``None``: inferred.
        backbone: deprecated spelling of ``network`` (a backbone); give ``network`` instead.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        stage_a_epochs: int = 1,
        stage_b_epochs: int = 1,
        cycles: int = 1,
        stage_b_templates: int = 2000,
        stage_b_lr: float | None = None,
        loss_rows: Literal["all", "misclassified"] = "all",
        k: int = 15,
        k_sigma: int = 8,
        weight: Literal["paper", "code"] = "paper",
        mu: Literal["paper", "code"] | float = "paper",
        ridge: float = 1e-6,
        solve_dtype: Literal["float32", "float64"] = "float32",
        num_templates: int = 50000,
        template_chunks: int = 10,
        val_template_chunks: int | None = 1,
        query_batch_size: int = 1000,
        template_seed: int = 0,
        grad_mode: Literal["surrogate", "exact"] = "surrogate",
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        init_from: str | None = None,
        adversary: Attack | None = None,
        input_transform: nn.Module | None = None,
        feature_dim: int | None = None,
        backbone: nn.Module | None = None,
    ):
        network = _wnll_network(network, backbone, feature_dim, num_classes)
        super().__init__(
            network,
            num_classes,
            optimizer,
            lr_scheduler,
            init_from,
            adversary,
            input_transform=input_transform,
        )
        self.schedule = StageSchedule(stage_a_epochs, stage_b_epochs, cycles, stage_b_lr)
        self.stage_b_templates = check_int("stage_b_templates", stage_b_templates, 1)
        self.loss_rows = check_choice("loss_rows", loss_rows, LOSS_ROWS)
        k = check_int("k", k, 2)  # the point itself is rank 1
        self.graph = dict(
            k=k,
            k_sigma=check_int("k_sigma", k_sigma, 2, k),  # rank 1 would give sigma = 0
            weight=check_choice("weight", weight, WEIGHTS),
            mu=check_choice("mu", mu, MU_RULES) if isinstance(mu, str) else check_real("mu", mu, 0),
            ridge=check_real("ridge", ridge, 0),
        )
        solve_dtype = check_choice("solve_dtype", solve_dtype, ("float32", "float64"))
        self.solve_dtype = torch.float64 if solve_dtype == "float64" else None
        self.num_templates = check_int("num_templates", num_templates, 1)
        self.template_chunks = check_int("template_chunks", template_chunks, 1)
        self.val_template_chunks = check_optional_int(
            "val_template_chunks", val_template_chunks, 1, self.template_chunks
        )
        self.query_batch_size = check_int("query_batch_size", query_batch_size, 1)
        self.template_seed = check_int("template_seed", template_seed, 0)
        self.grad_mode = check_choice("grad_mode", grad_mode, GRAD_MODES)
        self.stage: Stage = self.schedule.stage_at(0)
        self.val_acc_softmax = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_softmax = MulticlassAccuracy(num_classes, average="micro")
        self.templates: TemplateBank | None = None  # CPU, not in the state dict (re-drawn from the seed)
        self._template_features: list[tuple[Tensor, Tensor]] | None = None  # per chunk, on the device
        self._active_chunks: int | None = None  # None: all chunks
        self.last_isolated: Tensor | None = None

    # ------------------------------------------------------------------------------- schedule
    def set_stage(self, stage: Stage) -> None:
        """Freeze what ``stage`` does not train: stage ``"wnll"`` leaves only the buffer block trainable."""
        self.stage = stage
        for module in (self.network.backbone, self.network.head):
            module.requires_grad_(stage == "softmax")
        self.network.buffer.requires_grad_(True)

    def on_train_epoch_start(self) -> None:
        if self.trainer.optimizers:
            self.schedule.set_learning_rates(self.current_epoch, self.trainer.optimizers[0])
        self.set_stage(self.schedule.stage_at(self.current_epoch))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._template_features = None  # the weights changed

    def on_train_end(self) -> None:
        self.requires_grad_(True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The base's checks and random streams, plus the schedule's state (the stage-A rates to restore)."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["wnll_schedule"] = self.schedule.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.schedule.load_state_dict(checkpoint.get("wnll_schedule", {}))

    # ------------------------------------------------------------------------------ templates
    def set_templates(self, images: Tensor, labels: Tensor) -> None:
        """Use ``images`` (``(N, C, H, W)`` in [0, 1]) with ``labels`` as the template bank."""
        if len(images) < self.template_chunks:
            raise ValueError(
                f"need at least template_chunks={self.template_chunks} templates, got {len(images)} images"
            )
        self.use_templates(TemplateBank.from_tensors(images, labels, self.template_seed))

    def load_templates(self, source: Any) -> None:
        """Draw the template bank (``num_templates``, ``template_seed``) from a ``Dataset``, or from a
        DataModule's ``clean_train_set()`` (any other DataModule: ``train_dataloader().dataset``)."""
        if not isinstance(source, Dataset):
            clean = getattr(source, "clean_train_set", None)
            source = clean() if callable(clean) else source.train_dataloader().dataset
        self.use_templates(TemplateBank(source, self.num_templates, self.template_seed))

    def use_templates(self, bank: TemplateBank) -> None:
        """Predict against ``bank`` from now on."""
        if len(bank) < self.template_chunks:
            raise ValueError(
                f"need at least template_chunks={self.template_chunks} templates, got {len(bank)}"
            )
        self.templates, self._template_features = bank, None

    def _require_templates(self) -> TemplateBank:
        if self.templates is None:
            raise RuntimeError(
                "WNLL has no templates: call load_templates(datamodule or dataset) or "
                "set_templates(images, labels) before predicting outside a Trainer"
            )
        return self.templates

    def refresh_template_features(self) -> None:
        """Template features ``h`` in eval mode, without grad, split into ``template_chunks`` chunks."""
        bank = self._require_templates()
        with torch.inference_mode(False), torch.no_grad(), eval_mode(self.network):
            features = torch.cat(
                [
                    self.network.features(batch.to(self.device))
                    for batch in bank.images.split(self.query_batch_size)
                ]
            )
        chunks = zip(
            features.tensor_split(self.template_chunks),
            bank.labels.to(self.device).tensor_split(self.template_chunks),
            strict=True,
        )
        self._template_features = list(chunks)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self._trainer, "datamodule", None)  # None outside a Trainer
        if datamodule is not None and self.templates is None:
            self.load_templates(datamodule)

    def on_validation_epoch_start(self) -> None:
        self._active_chunks = self.val_template_chunks
        self.refresh_template_features()

    def on_validation_epoch_end(self) -> None:
        self._active_chunks = None

    def on_test_epoch_start(self) -> None:
        self._active_chunks = None
        self.refresh_template_features()

    def on_predict_epoch_start(self) -> None:
        self._active_chunks = None
        self.refresh_template_features()

    # ------------------------------------------------------------------------------ prediction
    def forward(self, x: Tensor) -> Tensor:
        """WNLL log-scores of images ``x`` in [0, 1], gradient ``grad_mode``: predicted and attacked."""
        return self.wnll_logits(x, self.grad_mode)

    def wnll_logits(self, x: Tensor, grad_mode: Literal["surrogate", "exact"] = "surrogate") -> Tensor:
        """``log(clamp(mean over chunks of U, 1e-12))`` of the queries ``t(x)``, shape ``(B, C)``, gradient as
        ``grad_mode`` says; sets ``last_isolated`` (per query, in how many chunks it had no template path)."""
        grad_mode = check_choice("grad_mode", grad_mode, GRAD_MODES)
        if self._template_features is None:
            self.refresh_template_features()
        chunks = self._template_features[: self._active_chunks]
        outputs, isolated = [], []
        for queries in x.split(self.query_batch_size):
            h = self.network.features(self.transform_inputs(queries))
            total, lonely = 0.0, torch.zeros(len(queries), device=x.device)
            for template_h, template_y in chunks:
                with torch.set_grad_enabled(grad_mode == "exact" and torch.is_grad_enabled()):
                    query_h = h if grad_mode == "exact" else h.detach()
                    result = self._scores(template_h, template_y, query_h)
                total, lonely = total + result.scores, lonely + result.isolated
            log_scores = (total / len(chunks)).clamp_min(1e-12).log()
            if grad_mode == "surrogate":
                log_scores = wnll_straight_through(log_scores, self.network.head(h))
            outputs.append(log_scores)
            isolated.append(lonely)
        self.last_isolated = torch.cat(isolated).detach()
        return torch.cat(outputs)

    def _scores(self, template_h: Tensor, template_y: Tensor, query_h: Tensor) -> Any:
        features = torch.cat([template_h, query_h])
        return wnll_scores(features, template_y, self.num_classes, solve_dtype=self.solve_dtype, **self.graph)

    def softmax_view(self) -> nn.Module:
        """The linear-head classifier ``z(t(x))``: stage A's model and the transfer source."""
        if self.input_transform is None:
            return self.network
        return nn.Sequential(self.input_transform, self.network)

    def gradient_view(self, mode: Literal["surrogate", "exact", "softmax"]) -> nn.Module:
        """The model an attack differentiates (:class:`~lit_robust.attacks.grad_mode.WithGradMode`):
        :class:`WNLLClassifier` for ``"surrogate"``/``"exact"``, :meth:`softmax_view` for ``"softmax"``."""
        mode = check_choice("grad mode", mode, VIEWS)
        return self.softmax_view() if mode == "softmax" else WNLLClassifier(self, mode)

    # -------------------------------------------------------------------------------- training
    def compute_loss(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Stage A's (adversarial) cross-entropy of the softmax network, or :meth:`wnll_stage_loss`."""
        if self.stage == "wnll":
            return self.wnll_stage_loss(x, y)
        softmax = self.softmax_view()
        if self.adversary is None:
            ce = F.cross_entropy(softmax(x), y)
            return {"loss": ce, "ce": ce, "stage": x.new_tensor(0.0)}
        adv_ce = F.cross_entropy(softmax(self.adversary(softmax, x, y).detach()), y)
        return {"loss": adv_ce, "adv_ce": adv_ce, "stage": x.new_tensor(0.0)}

    def wnll_stage_loss(
        self, x: Tensor, y: Tensor, templates: tuple[Tensor, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Stage B: straight-through WNLL cross-entropy of the queries ``t(x)`` (class docstring); the
        templates are ``templates`` or this step's draw from the bank."""
        self.network.backbone.eval()
        self.network.head.eval()
        if templates is None:
            templates = self._require_templates().draw(self.stage_b_templates, self.global_step)
        template_x, template_y = (tensor.to(self.device) for tensor in templates)
        with torch.no_grad():
            template_h = self.network.features(template_x)
        h = self.network.features(self.transform_inputs(x))
        with torch.no_grad():
            result = self._scores(template_h, template_y, h.detach())
        z = self.network.head(h)
        out = wnll_straight_through(result.scores, z)
        correct = result.scores.argmax(dim=1) == y
        rows = torch.ones_like(correct) if self.loss_rows == "all" else ~correct
        loss = F.cross_entropy(out[rows], y[rows]) if rows.any() else 0.0 * z.sum()
        return {
            "loss": loss,
            "wnll_ce": loss,
            "wnll_acc": correct.float().mean(),
            "wnll_isolated": result.isolated.float().mean(),
            "stage": x.new_tensor(1.0),
        }

    # ------------------------------------------------------------------------------ evaluation
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self.log_softmax_head(batch, "val", self.val_acc_softmax)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        self.log_softmax_head(batch, "test", self.test_acc_softmax)

    def log_softmax_head(self, batch: Batch, stage: str, accuracy: MulticlassAccuracy) -> None:
        """Log ``<stage>/acc_softmax`` (the linear head's accuracy) and ``<stage>/wnll_isolated`` (the
        share of this batch's queries isolated from the templates in some chunk, from the last forward)."""
        x, y = batch
        softmax = self.softmax_view()
        with eval_mode(softmax):
            accuracy.update(softmax(x), y)
        self.log(f"{stage}/acc_softmax", accuracy, batch_size=len(x))
        self.log(f"{stage}/wnll_isolated", (self.last_isolated > 0).float().mean(), batch_size=len(x))


def _wnll_network(
    network: nn.Module | None, backbone: nn.Module | None, feature_dim: int | None, num_classes: int
) -> WNLLNetwork:
    """``network`` as a :class:`WNLLNetwork`: itself, or the backbone wrapped (``backbone``: old spelling)."""
    feature_dim = check_optional_int("feature_dim", feature_dim, 1)
    if backbone is not None:
        if network is not None:
            raise ValueError("give WNLL either network or backbone (its deprecated spelling), not both")
        warnings.warn(
            "WNLL(backbone=...) is deprecated: pass it as network", DeprecationWarning, stacklevel=3
        )
        network = backbone
    if network is None:
        raise TypeError("WNLL needs a network (a WNLLNetwork, or a backbone to wrap in one)")
    if isinstance(network, WNLLNetwork):
        if feature_dim is not None and feature_dim != network.feature_dim:
            raise ValueError(
                f"feature_dim={feature_dim} disagrees with the WNLLNetwork's {network.feature_dim}"
            )
        return network
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    return WNLLNetwork(network, feature_dim, num_classes)
