"""WNLL output activation: Bao Wang, Alex T. Lin, Wei Zhu, Penghang Yin, Andrea L. Bertozzi, Stanley J. Osher,
"Adversarial Defense via Data Dependent Activation Function and Total Variation Minimization", arXiv
1809.08516 (v3: Inverse Problems & Imaging 2020, doi 10.3934/ipi.2020046); official code
``BaoWangMath/DNN-DataDependentActivation``. The spec is ``shared/papers/wnll_tvm.md``; the graph solve is
:mod:`lit_robust.functional.wnll`; the attack-side helper is
:class:`lit_robust.attacks.grad_mode.WithGradMode`.

Network: ``h = β(φ(x))``, ``φ`` the backbone's features, ``β = ReLU(Linear(d, d))`` the buffer block, and
two heads on ``h``: the linear (softmax) head ``z = W_fc h + b_fc`` and the WNLL interpolation against
clean training templates. Training alternates two stages in one ``fit``:

* stage A (``"softmax"``): ``L = CE(z(x'), y)``, ``x' = adversary(softmax net, x, y)`` or ``x' = x``;
* stage B (``"wnll"``): backbone and head frozen (eval mode, no gradient), buffer trainable;
  ``L = (1/|R|) Σ_{i∈R} CE(o_i, y_i)``, ``o = z + (U_scores - z).detach()`` (value: the WNLL scores,
  gradient: the linear head's), the queries being the training batch and the templates a fresh draw of
  ``stage_b_templates`` template images per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lit_robust.attacks.base import Attack
from lit_robust.data.base import TransformedSubset
from lit_robust.defenses.base import RobustClassifier
from lit_robust.functional.wnll import MU_RULES, WEIGHTS, wnll_scores, wnll_straight_through
from lit_robust.models.modes import eval_mode
from lit_robust.validation import check_choice, check_int, check_optional_int, check_optional_real, check_real

GRAD_MODES = ("surrogate", "exact")
VIEWS = ("surrogate", "exact", "softmax")
LOSS_ROWS = ("all", "misclassified")
Stage = Literal["softmax", "wnll"]


class WNLLNetwork(nn.Module):
    """``backbone -> buffer -> linear head``: the softmax-stage classifier, and the features WNLL uses.

    Backbone interface: any ``nn.Module``; its features are ``backbone.forward_features(x)`` when it has
    that method (``ResNet20``, ``ResNet56``, ``SmallCNN``, ``PreActResNet18``, ``VGG``, ``WideResNet`` of
    :mod:`lit_robust.models`; their own last ``fc`` layer is then unused), else ``backbone(x)``; either way a
    ``(B, feature_dim)`` tensor. The backbone starts with its ``Normalize`` (inputs in [0, 1]).

    Args:
        backbone: the feature extractor ``φ``.
        feature_dim: ``d``, the size of ``φ(x)``, >= 1 (64 for the CIFAR ResNets, 200 for SmallCNN).
        num_classes: logits of the linear head, >= 2.
        buffer_layers: number of ``ReLU(Linear(d, d))`` layers in ``β``, >= 1 (spec: 1; the
            natural-training code used 2).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, buffer_layers: int = 1):
        super().__init__()
        feature_dim = check_int("feature_dim", feature_dim, 1)
        num_classes = check_int("num_classes", num_classes, 2)
        buffer_layers = check_int("buffer_layers", buffer_layers, 1)
        self.backbone = backbone
        self.buffer = nn.Sequential(
            *[
                layer
                for _ in range(buffer_layers)
                for layer in (nn.Linear(feature_dim, feature_dim), nn.ReLU())
            ]
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """``h = β(φ(x))``, shape ``(B, feature_dim)``."""
        extract = getattr(self.backbone, "forward_features", None)
        phi = extract(x) if callable(extract) else self.backbone(x)
        return self.buffer(phi.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        """Linear-head logits ``z = W_fc h + b_fc``: the softmax-stage model and the transfer source."""
        return self.head(self.features(x))


class WNLLClassifier(nn.Module):
    """The full WNLL pipeline as an attackable classifier: ``log(clamp(U_scores, 1e-12))`` as logits.

    ``grad_mode="surrogate"``: value the log-scores, gradient the linear head's logits (BPDA, the gradient
    the paper's attacks used); ``"exact"``: autograd through the weights and ``torch.linalg.solve`` (kNN
    sets fixed). Only the inputs ``x`` (the queries) are perturbed; templates are fixed clean images.
    """

    def __init__(self, defense: WNLL, grad_mode: Literal["surrogate", "exact"] = "surrogate"):
        super().__init__()
        self.defense = defense
        self.grad_mode = check_choice("grad_mode", grad_mode, GRAD_MODES)

    def forward(self, x: Tensor) -> Tensor:
        return self.defense.wnll_logits(x, self.grad_mode)


class WNLL(RobustClassifier):
    """Backbone + buffer block + linear head, trained in alternating stages, predicting by WNLL interpolation.

    Stage A (softmax, backbone + buffer + head)::

        L_A = (1/B) Σ_i CE(z(x_i'), y_i),   x_i' = adversary(network, x_i, y_i)  (PGD-AT)  or  x_i

    Stage B (buffer only; backbone and head in eval mode without gradient)::

        o = z(h_U) + (U_scores - z(h_U)).detach(),   L_B = (1/|R|) Σ_{i∈R} CE(o_i, y_i)

    ``U_scores`` are the WNLL scores of the batch (queries) given ``stage_b_templates`` images drawn afresh
    every step from the template bank below (seeded by ``template_seed`` and the global step; a query may
    coincide with a template, which the official disjoint 80/20 pools avoided); ``R`` = all rows, or the
    rows the WNLL head misclassifies (``loss_rows="misclassified"``). Schedule: ``cycles`` rounds of
    ``stage_a_epochs`` then ``stage_b_epochs`` epochs, switched at epoch starts; later epochs repeat the
    last stage. A stage's frozen parameters get ``requires_grad=False``, so the optimizer (one, over every
    parameter) leaves them unchanged (no gradient, no weight decay, no momentum step). Stage B uses the
    optimizer's current learning rate, or ``stage_b_lr / round`` when ``stage_b_lr`` is set (official 0.05;
    the stage-A rates come back with stage A; a scheduler milestone inside stage B still scales the rate).

    Prediction (``forward``, validation, test, predict, attacks): the classifier of :class:`WNLLClassifier`
    with ``grad_mode``. Queries are split into graphs of ``query_batch_size`` (transductive: queries of one
    graph influence each other); the ``num_templates`` templates are split into ``template_chunks`` chunks
    (validation uses the first ``val_template_chunks``); scores are averaged over chunks. Template features
    are recomputed in eval mode at every evaluation epoch start (and lazily after training steps).

    Templates: ``num_templates`` training images chosen by a permutation seeded with ``template_seed``, clean
    (if the train set is a :class:`TransformedSubset` and the validation set a ``TransformedSubset`` of the
    same dataset, the validation transform is used, so no augmentation; otherwise the train set's items are
    read under a torch RNG seeded with ``template_seed``). The images are **not** stored in checkpoints:
    ``template_seed`` and ``num_templates`` are, and the images are re-drawn from the datamodule's train set
    when training or evaluation starts (same data, same seed: the same templates). Outside a Trainer call
    :meth:`load_templates` (a datamodule) or :meth:`set_templates` (tensors) before predicting.

    Logs ``train/loss`` with ``train/ce`` (or ``train/adv_ce`` with an adversary) in stage A;
    ``train/wnll_ce``, ``train/wnll_acc``, ``train/wnll_isolated`` (fraction of queries with no graph path
    to a template) in stage B; ``train/stage`` (0 = A, 1 = B); ``val/acc`` (WNLL head), ``val/acc_softmax``
    (linear head) and ``val/wnll_isolated``, the same under ``test/``.

    Args:
        backbone, feature_dim, buffer_layers: see :class:`WNLLNetwork`.
        adversary: optional stage-A training attack on the softmax network (PGD-AT: the paper's robust
            setting, ``PGD(0.031, steps=10, step_size=0.007)`` on CIFAR-10), used as
            :class:`~lit_robust.defenses.adversarial_training.AdversarialTraining` uses its attack.
        stage_a_epochs, stage_b_epochs: epochs per round of each stage (integers >= 0, not both 0).
        cycles: rounds of (A then B), >= 1 (spec default 1; the natural-training code used 2).
        stage_b_templates: templates per stage-B graph, >= 1 (official 2000); the batch is the queries
            (official 4000: set the datamodule's batch size).
        stage_b_lr: learning rate of stage B in round ``r`` is ``stage_b_lr / r``, finite, > 0 (official
            0.05); ``None``: keep the optimizer's.
        loss_rows: ``"all"`` (default) or ``"misclassified"``.
        k, k_sigma, weight, mu, ridge: the graph (:func:`~lit_robust.functional.wnll.wnll_scores`): ``k``
            neighbours, an integer >= 2 (15); ``k_sigma``, the rank of the neighbour that sets ``σ``, in
            [2, k] (8); ``weight`` ``"paper"`` or ``"code"``; ``mu`` ``"paper"``, ``"code"`` or a finite
            number >= 0; ``ridge`` (relative, dimensionless), finite, >= 0 (1e-6; 0 solves exactly).
        solve_dtype: ``"float32"`` or ``"float64"`` for the dense solve.
        num_templates: inference templates, >= 1 (official 50 000; capped at the train set's size).
        template_chunks: chunks of templates per query graph at test, >= 1 (official 10 chunks of 5000).
        val_template_chunks: chunks used in validation, in [1, template_chunks] (``None``: all).
        query_batch_size: queries per graph, >= 1 (official 1000).
        template_seed: an integer >= 0; seeds the template choice and the stage-B draws.
        grad_mode: ``"surrogate"`` or ``"exact"``, the gradient of ``forward`` (see :class:`WNLLClassifier`).
        input_transform: optional module applied to the *queries* at prediction (``forward``, every gradient
            view, ``acc_softmax``), never to templates nor in training: e.g.
            :class:`lit_robust.models.transforms.TotalVariationMinimization` (TVM in front; attack it with
            BPDA, built into TVM, and EOT: ``WithGradMode(..., eot_samples=20)``). It holds no weights, so it
            can be added to a trained checkpoint at test time (``--model.init_args.input_transform``).
        num_classes, optimizer, lr_scheduler, init_from: see :class:`RobustClassifier` (``init_from`` loads
            backbone, buffer and head: a WNLL checkpoint or a state dict of :class:`WNLLNetwork`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        buffer_layers: int = 1,
        adversary: Attack | None = None,
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
        input_transform: nn.Module | None = None,
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        init_from: str | None = None,
    ):
        network = WNLLNetwork(backbone, feature_dim, num_classes, buffer_layers)
        super().__init__(network, num_classes, optimizer, lr_scheduler, init_from)
        if adversary is not None and not isinstance(adversary, Attack):
            raise TypeError(f"adversary must be a lit_robust Attack or None, got {type(adversary).__name__}")
        stage_a_epochs = check_int("stage_a_epochs", stage_a_epochs, 0)
        stage_b_epochs = check_int("stage_b_epochs", stage_b_epochs, 0)
        if stage_a_epochs + stage_b_epochs == 0:
            raise ValueError("stage_a_epochs and stage_b_epochs must not both be 0")
        cycles = check_int("cycles", cycles, 1)
        stage_b_templates = check_int("stage_b_templates", stage_b_templates, 1)
        stage_b_lr = check_optional_real("stage_b_lr", stage_b_lr, 0, low_open=True)
        loss_rows = check_choice("loss_rows", loss_rows, LOSS_ROWS)
        k = check_int("k", k, 2)  # the point itself is rank 1
        k_sigma = check_int("k_sigma", k_sigma, 2, k)  # rank 1 would give sigma = 0
        weight = check_choice("weight", weight, WEIGHTS)
        mu = check_choice("mu", mu, MU_RULES) if isinstance(mu, str) else check_real("mu", mu, 0)
        ridge = check_real("ridge", ridge, 0)
        solve_dtype = check_choice("solve_dtype", solve_dtype, ("float32", "float64"))
        num_templates = check_int("num_templates", num_templates, 1)
        template_chunks = check_int("template_chunks", template_chunks, 1)
        chunks = template_chunks
        val_template_chunks = check_optional_int("val_template_chunks", val_template_chunks, 1, chunks)
        query_batch_size = check_int("query_batch_size", query_batch_size, 1)
        template_seed = check_int("template_seed", template_seed, 0)
        grad_mode = check_choice("grad_mode", grad_mode, GRAD_MODES)
        self.adversary = adversary
        self.stage_a_epochs, self.stage_b_epochs, self.cycles = stage_a_epochs, stage_b_epochs, cycles
        self.stage_b_templates = stage_b_templates
        self.stage_b_lr = stage_b_lr
        self._stage_a_lrs: list[float] | None = None  # the lrs to restore after a stage-B round
        self.loss_rows = loss_rows
        self.graph = dict(k=k, k_sigma=k_sigma, weight=weight, mu=mu, ridge=ridge)
        self.solve_dtype = torch.float64 if solve_dtype == "float64" else None
        self.num_templates = num_templates
        self.template_chunks = template_chunks
        self.val_template_chunks = val_template_chunks
        self.query_batch_size = query_batch_size
        self.template_seed = template_seed
        self.grad_mode = grad_mode
        if input_transform is not None and not isinstance(input_transform, nn.Module):
            raise TypeError(
                f"input_transform must be an nn.Module or None, got {type(input_transform).__name__}"
            )
        self.input_transform = input_transform
        self.stage: Stage = self.stage_at(0)
        self.val_acc_softmax = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_softmax = MulticlassAccuracy(num_classes, average="micro")
        self._template_images: Tensor | None = None  # CPU, not in the state dict (re-drawn from the seed)
        self._template_labels: Tensor | None = None
        self._template_features: list[tuple[Tensor, Tensor]] | None = None  # per chunk, on the device
        self._active_chunks: int | None = None  # None: all chunks
        self.last_isolated: Tensor | None = None

    # ------------------------------------------------------------------------------- schedule
    def stage_at(self, epoch: int) -> Stage:
        """The stage of epoch ``epoch`` (0-based): each round of ``a + b`` epochs starts with ``a`` of A."""
        period = self.stage_a_epochs + self.stage_b_epochs
        if epoch >= self.cycles * period:
            return "wnll" if self.stage_b_epochs else "softmax"
        return "softmax" if epoch % period < self.stage_a_epochs else "wnll"

    def set_stage(self, stage: Stage) -> None:
        """Freeze what ``stage`` does not train: stage ``"wnll"`` leaves only the buffer block trainable."""
        self.stage = stage
        trainable = stage == "softmax"
        for module in (self.network.backbone, self.network.head):
            for parameter in module.parameters():
                parameter.requires_grad_(trainable)
        for parameter in self.network.buffer.parameters():
            parameter.requires_grad_(True)

    def on_train_epoch_start(self) -> None:
        stage = self.stage_at(self.current_epoch)
        if self.stage_b_lr is not None and self.trainer.optimizers:
            groups = self.trainer.optimizers[0].param_groups
            if stage == "wnll" and self._stage_a_lrs is None:
                self._stage_a_lrs = [group["lr"] for group in groups]
                period = self.stage_a_epochs + self.stage_b_epochs
                round_number = min(self.current_epoch // period, self.cycles - 1) + 1
                for group in groups:
                    group["lr"] = self.stage_b_lr / round_number
            elif stage == "softmax" and self._stage_a_lrs is not None:
                for group, lr in zip(groups, self._stage_a_lrs, strict=True):
                    group["lr"] = lr
                self._stage_a_lrs = None
        self.set_stage(stage)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._template_features = None  # the weights changed

    def on_train_end(self) -> None:
        for parameter in self.parameters():
            parameter.requires_grad_(True)

    # ------------------------------------------------------------------------------ templates
    def set_templates(self, images: Tensor, labels: Tensor) -> None:
        """Use ``images`` (``(N, C, H, W)`` in [0, 1]) with ``labels`` as the template bank."""
        if len(images) != len(labels) or len(images) < self.template_chunks:
            raise ValueError(
                f"need as many labels as images and at least template_chunks={self.template_chunks} "
                f"templates, got {len(images)} images and {len(labels)} labels"
            )
        self._template_images, self._template_labels = images.detach().cpu(), labels.detach().cpu().long()
        self._template_features = None

    def load_templates(self, datamodule: Any) -> None:
        """Draw ``num_templates`` templates from ``datamodule.train_set`` (seeded, clean; class docstring)."""
        if getattr(datamodule, "train_set", None) is None:
            datamodule.setup("fit")
        dataset = datamodule.train_set
        val_set = getattr(datamodule, "val_set", None)
        if (
            isinstance(dataset, TransformedSubset)
            and isinstance(val_set, TransformedSubset)
            and val_set.dataset is dataset.dataset
        ):
            dataset = TransformedSubset(dataset.dataset, dataset.indices, val_set.transform)
        generator = torch.Generator().manual_seed(self.template_seed)
        chosen = torch.randperm(len(dataset), generator=generator)[: self.num_templates].tolist()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.template_seed)
            items = [dataset[i] for i in chosen]
        images = torch.stack([torch.as_tensor(image) for image, _ in items])
        self.set_templates(images, torch.as_tensor([int(label) for _, label in items]))

    def _ensure_templates(self) -> None:
        if self._template_images is not None:
            return
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if datamodule is None:
            raise RuntimeError(
                "WNLL has no templates: call load_templates(datamodule) or set_templates(images, labels) "
                "before predicting outside a Trainer"
            )
        self.load_templates(datamodule)

    def refresh_template_features(self) -> None:
        """Template features ``h`` in eval mode, without grad, split into ``template_chunks`` chunks."""
        self._ensure_templates()
        with torch.inference_mode(False), torch.no_grad(), eval_mode(self.network):
            features = torch.cat(
                [
                    self.network.features(batch.to(self.device))
                    for batch in self._template_images.split(self.query_batch_size)
                ]
            )
        labels = self._template_labels.to(self.device)
        self._template_features = list(
            zip(
                features.tensor_split(self.template_chunks),
                labels.tensor_split(self.template_chunks),
                strict=True,
            )
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self._trainer, "datamodule", None)  # None outside a Trainer
        if datamodule is not None and self._template_images is None:
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
    def wnll_logits(self, x: Tensor, grad_mode: Literal["surrogate", "exact"] = "surrogate") -> Tensor:
        """``log(clamp(mean over chunks of U_scores, 1e-12))`` of the queries ``x``, shape ``(B, C)``;
        gradient as ``grad_mode`` says (:class:`WNLLClassifier`). Sets ``last_isolated`` (per query: in how
        many chunks it was isolated)."""
        if grad_mode not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}")
        if self._template_features is None:
            self.refresh_template_features()
        chunks = self._template_features[: self._active_chunks]
        outputs, isolated = [], []
        for queries in x.split(self.query_batch_size):
            if self.input_transform is not None:
                queries = self.input_transform(queries)
            h = self.network.features(queries)
            total, lonely = 0.0, torch.zeros(len(queries), device=x.device)
            for template_h, template_y in chunks:
                with torch.set_grad_enabled(grad_mode == "exact" and torch.is_grad_enabled()):
                    query_h = h if grad_mode == "exact" else h.detach()
                    result = wnll_scores(
                        torch.cat([template_h, query_h]), template_y, self.num_classes,
                        solve_dtype=self.solve_dtype, **self.graph,
                    )  # fmt: skip
                total = total + result.scores
                lonely = lonely + result.isolated
            log_scores = (total / len(chunks)).clamp_min(1e-12).log()
            if grad_mode == "surrogate":
                log_scores = wnll_straight_through(log_scores, self.network.head(h))
            outputs.append(log_scores)
            isolated.append(lonely)
        self.last_isolated = torch.cat(isolated).detach()
        return torch.cat(outputs)

    def forward(self, x: Tensor) -> Tensor:
        """WNLL log-scores of images ``x`` in [0, 1] with gradient ``self.grad_mode`` (the full pipeline)."""
        return self.wnll_logits(x, self.grad_mode)

    def gradient_view(self, mode: Literal["surrogate", "exact", "softmax"]) -> nn.Module:
        """The model an attack differentiates: :class:`WNLLClassifier` for ``"surrogate"``/``"exact"``, the
        softmax network (linear head; the transfer source) for ``"softmax"``."""
        if mode == "softmax":
            return (
                self.network
                if self.input_transform is None
                else nn.Sequential(self.input_transform, self.network)
            )
        if mode not in VIEWS:
            raise ValueError(f"grad mode must be one of {VIEWS}, got {mode!r}")
        return WNLLClassifier(self, mode)

    # -------------------------------------------------------------------------------- training
    def compute_loss(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        if self.stage == "wnll":
            return self.wnll_stage_loss(x, y)
        stage = x.new_tensor(0.0)
        if self.adversary is None:
            ce = F.cross_entropy(self.network(x), y)
            return {"loss": ce, "ce": ce, "stage": stage}
        x_adv = self.adversary(self.network, x, y)  # as AdversarialTraining, on the softmax network
        adv_ce = F.cross_entropy(self.network(x_adv), y)
        return {"loss": adv_ce, "adv_ce": adv_ce, "stage": stage}

    def draw_stage_b_templates(self) -> tuple[Tensor, Tensor]:
        """``stage_b_templates`` template images and labels, seeded by ``template_seed`` + global step."""
        self._ensure_templates()
        generator = torch.Generator().manual_seed(self.template_seed + 1 + self.global_step)
        count = min(self.stage_b_templates, len(self._template_images))
        chosen = torch.randperm(len(self._template_images), generator=generator)[:count]
        return self._template_images[chosen].to(self.device), self._template_labels[chosen].to(self.device)

    def wnll_stage_loss(
        self, x: Tensor, y: Tensor, templates: tuple[Tensor, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Stage B: straight-through WNLL cross-entropy on the queries ``x`` (class docstring)."""
        self.network.backbone.eval()
        self.network.head.eval()
        template_x, template_y = templates if templates is not None else self.draw_stage_b_templates()
        with torch.no_grad():
            template_h = self.network.features(template_x)
        h = self.network.features(x)
        with torch.no_grad():
            result = wnll_scores(
                torch.cat([template_h, h.detach()]), template_y, self.num_classes,
                solve_dtype=self.solve_dtype, **self.graph,
            )  # fmt: skip
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
    def _evaluation_step(self, batch, stage, accuracy, loss) -> None:
        super()._evaluation_step(batch, stage, accuracy, loss)
        x, y = batch
        softmax_acc = self.val_acc_softmax if stage == "val" else self.test_acc_softmax
        softmax = self.gradient_view("softmax")
        with eval_mode(softmax):
            softmax_acc.update(softmax(x), y)
        self.log(f"{stage}/acc_softmax", softmax_acc, batch_size=len(x))
        self.log(f"{stage}/wnll_isolated", (self.last_isolated > 0).float().mean(), batch_size=len(x))

    def optimizer_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter; each stage freezes its part with ``requires_grad`` (class docstring)."""
        return self.parameters()
