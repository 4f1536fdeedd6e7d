"""FGS accuracy at fractions of a reference budget, the comparison protocol of Deep Defense (Yan, Guo,
Zhang, NeurIPS 2018): ``eps_ref`` is the Linf budget at which the *Deep Defense* model's FGS accuracy
is 50%, and every model of a comparison is reported at 0.2, 0.5 and 1.0 x ``eps_ref``
(``papers/deep_defense.md`` (f); medium confidence: from a third-party replication)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lit_robust.attacks.fgsm import FGSM
from lit_robust.callbacks.robustness_evaluation import robust_flags
from lit_robust.callbacks.subset_evaluation import SubsetEvaluation, first_dataset
from lit_robust.metrics import ROBUST_ACC, metric
from lit_robust.validation import check_int, check_optional_real, check_real

Loaders = DataLoader | Sequence[DataLoader] | None


def fraction_tag(fraction: float) -> str:
    """``0.2`` -> ``"0.2"``, ``1`` -> ``"1.0"`` (the names of ``papers/deep_defense.md``)."""
    text = f"{fraction:g}"
    return text if "." in text or "e" in text else f"{fraction:.1f}"


def first_crossing(eps: Sequence[float], accuracy: Sequence[float], target: float) -> int | None:
    """Index of the first ``eps`` (ascending) whose accuracy is ``<= target``; None if there is none."""
    return next((i for i, value in enumerate(accuracy) if value <= target), None)


class FGSEpsRef(SubsetEvaluation):
    """FGS (one-step FGSM, no random start, :class:`~lit_robust.attacks.FGSM`) accuracy of a seeded subset
    at ``fraction x eps_ref`` for each fraction, and the budget at which this model's FGS accuracy is 50%.

    Logs, under ``val/`` or ``test/``:

    * ``fgs_eps_ref`` — the ``eps_ref`` used (pixel units);
    * ``robust_acc/fgs_<fraction>_eps_ref`` — FGS accuracy at ``fraction x eps_ref`` (clean mistakes
      count as not robust), e.g. ``test/robust_acc/fgs_0.5_eps_ref``;
    * ``fgs_eps_50`` — where this model's own FGS accuracy crosses ``target_acc`` (only when it is
      searched, i.e. ``eps_ref`` is not given): 0 when the clean accuracy already does, ``inf`` when
      no budget up to ``eps_max`` does (see below).

    Protocol: fine-tune the Deep Defense model with ``eps_ref: null``: each validation searches its
    ``eps_ref`` on the validation subset, and ``test`` after ``fit`` reuses the last value found at
    validation (a stand-alone ``test`` with no given ``eps_ref`` searches on the test subset instead,
    and warns). Then test every other model of the comparison with ``eps_ref`` set to that value.

    The search is a bracketing search on the whole subset's accuracy (the paper's bisection,
    ``num_probes`` budgets per pass): the first of the probes whose accuracy is ``<= target_acc``
    becomes the upper end of the bracket, the probe before it the lower end, until the bracket is
    narrower than ``tolerance``; the result is its midpoint. Accuracy need not be monotone in eps;
    the first crossing is found. If no budget up to ``eps_max`` brings accuracy to the target,
    ``fgs_eps_50`` is ``inf``; if the clean accuracy is already at most ``target_acc`` (a model wrong
    everywhere), it is 0. In both cases, when it was to be ``eps_ref``, the fraction metrics and
    ``fgs_eps_ref`` are skipped, and a later ``test`` searches again on the test subset.

    Args:
        eps_ref: the reference budget in pixel units, (0, 1]; ``None`` = search it (see above).
        fractions: multiples of ``eps_ref`` at which accuracy is reported (the paper: 0.2, 0.5, 1.0);
            each ``fraction x eps_ref`` must stay in (0, 1].
        target_acc: the accuracy that defines ``eps_ref`` (0.5), in (0, 1).
        eps_max: upper end of the search, pixel units, (0, 1].
        tolerance: stop the search when the bracket is narrower (pixel units), in (0, eps_max).
        num_probes: budgets probed per pass over the subset, >= 1.
        num_samples, every_n_epochs, seed, batch_size: see :class:`SubsetEvaluation`.
    """

    def __init__(
        self,
        eps_ref: float | None = None,
        fractions: Sequence[float] = (0.2, 0.5, 1.0),
        target_acc: float = 0.5,
        eps_max: float = 1.0,
        tolerance: float = 1e-3,
        num_probes: int = 7,
        num_samples: int = 1000,
        every_n_epochs: int = 1,
        seed: int = 0,
        batch_size: int = 250,
    ):
        super().__init__(num_samples, every_n_epochs, seed, batch_size)
        eps_ref = check_optional_real("eps_ref", eps_ref, 0, 1, low_open=True)
        fractions = [check_real("fractions", f, 0, low_open=True) for f in fractions]
        if not fractions or len(set(fractions)) != len(fractions):
            raise ValueError(f"fractions must be distinct positive numbers, got {fractions}")
        if eps_ref is not None and max(fractions) * eps_ref > 1:
            raise ValueError(f"fractions {fractions} x eps_ref {eps_ref} leave the Linf range (0, 1]")
        self.eps_ref = eps_ref
        self.fractions = fractions
        self.target_acc = check_real("target_acc", target_acc, 0, 1, low_open=True, high_open=True)
        self.eps_max = check_real("eps_max", eps_max, 0, 1, low_open=True)
        # a tolerance of eps_max or more would end the search before its first probe
        self.tolerance = check_real("tolerance", tolerance, 0, self.eps_max, low_open=True, high_open=True)
        self.num_probes = check_int("num_probes", num_probes, 1)
        self.found_eps_ref: float | None = None  # the last eps_ref searched at validation
        self._attacks: list[FGSM] = []

    def names(self) -> list[str]:
        return [f"fgs_{fraction_tag(f)}_eps_ref" for f in self.fractions]

    def metric_names(self, stage: str) -> set[str]:
        names = {metric(stage, ROBUST_ACC, name) for name in self.names()} | {f"{stage}/fgs_eps_ref"}
        return names | ({f"{stage}/fgs_eps_50"} if self.eps_ref is None else set())

    def attacks_per_sample(self) -> int:
        return len(self._attacks)

    def per_sample(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        flags = robust_flags(model, x, y, self._attacks, trainer=self.trainer, on_attack=self.show_attack)
        return {"clean": flags["clean"]} | {attack.name: flags[attack.name] for attack in self._attacks}

    def summarize(self, stage: str, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {metric(stage, ROBUST_ACC, name): values[name].mean() for name in self.names()}

    def accuracies(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        stage: str,
        dataloaders: Loaders,
        eps: list[float],
    ) -> tuple[float, list[float]]:
        """Clean accuracy of the subset, and its FGS accuracy at each budget of ``eps`` (one pass)."""
        self._attacks = [FGSM(e, name=f"probe_{i}") for i, e in enumerate(eps)]
        values = self.gather(trainer, pl_module, stage, dataloaders)
        return float(values["clean"].mean()), [float(values[attack.name].mean()) for attack in self._attacks]

    def search(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, dataloaders: Loaders
    ) -> float:
        """The budget at which the subset's FGS accuracy first reaches ``target_acc``: 0 if the clean
        accuracy already does, ``inf`` if no budget up to ``eps_max`` does."""
        low, high = 0.0, self.eps_max
        while high - low > self.tolerance:
            probes = [low + (high - low) * (k + 1) / (self.num_probes + 1) for k in range(self.num_probes)]
            probes.append(high)  # known to cross after the first pass (same budget, same accuracy)
            clean, accuracy = self.accuracies(trainer, pl_module, stage, dataloaders, probes)
            if clean <= self.target_acc:
                return 0.0  # no attack needed (e.g. a model wrong everywhere): not a bracket's midpoint
            index = first_crossing(probes, accuracy, self.target_acc)
            if index is None:
                return math.inf
            bracket = (probes[index - 1] if index else low), probes[index]
            if bracket == (low, high):
                break  # rounding: a bracket this narrow cannot shrink further
            low, high = bracket
        return (low + high) / 2

    def evaluate(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        stage: str,
        dataloaders: Loaders,
    ) -> dict[str, Tensor]:
        if first_dataset(dataloaders) is None:
            return {}
        metrics: dict[str, Tensor | float] = {}
        eps_ref = self.eps_ref
        if eps_ref is None and stage == "test" and self.found_eps_ref is not None:
            eps_ref = self.found_eps_ref
        elif eps_ref is None:
            if stage == "test":
                warnings.warn(
                    "FGSEpsRef: no eps_ref given or found at validation; searching it on the test subset",
                    stacklevel=2,
                )
            found = self.search(trainer, pl_module, stage, dataloaders)
            metrics[f"{stage}/fgs_eps_50"] = found
            usable = math.isfinite(found) and found > 0
            if stage != "test":
                self.found_eps_ref = found if usable else None  # never a stale value from an earlier epoch
            eps_ref = found if usable else None
        if eps_ref is not None:
            eps = [min(f * eps_ref, 1.0) for f in self.fractions]
            self._attacks = [FGSM(e, name=name) for e, name in zip(eps, self.names(), strict=True)]
            values = self.gather(trainer, pl_module, stage, dataloaders)
            metrics.update(self.summarize(stage, values))
            metrics[f"{stage}/fgs_eps_ref"] = eps_ref
        logged = {name: torch.as_tensor(value, dtype=torch.float32) for name, value in metrics.items()}
        self.log_metrics(trainer, pl_module, stage, logged)
        return logged
