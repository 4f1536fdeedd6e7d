"""Perturbation sizes found by minimal-norm attacks (DeepFool, CW, DDN, EAD, FAB, ADef)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from lit_robust.attacks.base import Attack
from lit_robust.callbacks.robustness_evaluation import predict_labels
from lit_robust.callbacks.subset_evaluation import SubsetEvaluation

STATISTICS = ("median_l2", "median_linf", "mean_l2", "success_rate", "rho2")


def perturbation_sizes(model: nn.Module, x: Tensor, y: Tensor, attack: Attack) -> dict[str, Tensor]:
    """Per clean-correct sample: ``l2``, ``linf`` of ``delta = attack(x) - x`` (``+inf`` where the
    attack failed), ``success`` (1/0, by re-classifying, never by reading a distance of 0), and
    ``rho2 = ||delta||_2 / ||x||_2`` (NaN where it failed, so means run over successes).
    """
    correct = predict_labels(model, x) == y
    x, y = x[correct], y[correct]
    if not len(x):
        return {key: x.new_zeros(0) for key in ("l2", "linf", "success", "rho2")}
    delta = (attack(model, x, y) - x).flatten(1)
    fooled = predict_labels(model, x + delta.view_as(x)) != y
    inf = torch.full_like(delta[:, 0], float("inf"))
    l2 = torch.where(fooled, delta.norm(dim=1), inf)
    return {
        "l2": l2,
        "linf": torch.where(fooled, delta.abs().amax(dim=1), inf),
        "success": fooled.float(),
        "rho2": torch.where(fooled, l2 / x.flatten(1).norm(dim=1), torch.full_like(l2, float("nan"))),
    }


class MinimalPerturbation(SubsetEvaluation):
    """How far minimal-norm attacks must move each correctly classified point of a seeded subset.

    Logs per attack, under ``val/`` or ``test/``:

    * ``median_l2/<attack>``, ``median_linf/<attack>`` — the (lower) median norm, failures counted
      as ``+inf`` (so the median is ``inf`` when more than half fail);
    * ``mean_l2/<attack>`` — the mean L2 norm over successes;
    * ``success_rate/<attack>`` — always read the medians next to it;
    * ``rho2/<attack>`` — ``mean ||delta||_2 / ||x||_2`` over successes, the metric of Deep Defense
      (Yan et al., NeurIPS 2018). Their protocol attacks *all* test points from the predicted label;
      here only clean-correct points are attacked, from the true label (the two coincide there).

    Minimal-norm numbers never replace robust accuracy under strong bounded attacks: DeepFool in
    particular is weak (evaluation.md §5).

    Args:
        attacks: minimal-perturbation attacks (names must be distinct).
        num_samples, every_n_epochs, seed, batch_size: see :class:`SubsetEvaluation`.
    """

    def __init__(
        self,
        attacks: list[Attack],
        num_samples: int = 1000,
        every_n_epochs: int = 1,
        seed: int = 0,
        batch_size: int = 250,
    ):
        super().__init__(num_samples, every_n_epochs, seed, batch_size)
        names = [attack.name for attack in attacks]
        if not attacks or len(set(names)) != len(names):
            raise ValueError(f"attacks must be a non-empty list with distinct names, got {names}")
        self.attacks = list(attacks)

    def metric_names(self, stage: str) -> set[str]:
        return {f"{stage}/{statistic}/{a.name}" for statistic in STATISTICS for a in self.attacks}

    def per_sample(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        values = {}
        for attack in self.attacks:
            for key, value in perturbation_sizes(model, x, y, attack).items():
                values[f"{attack.name}/{key}"] = value
        return values

    def summarize(self, stage: str, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        metrics = {}
        for attack in self.attacks:
            l2, linf = values[f"{attack.name}/l2"], values[f"{attack.name}/linf"]
            successes = l2[l2.isfinite()]
            metrics[f"{stage}/median_l2/{attack.name}"] = l2.median()
            metrics[f"{stage}/median_linf/{attack.name}"] = linf.median()
            metrics[f"{stage}/mean_l2/{attack.name}"] = successes.mean()
            metrics[f"{stage}/success_rate/{attack.name}"] = values[f"{attack.name}/success"].mean()
            metrics[f"{stage}/rho2/{attack.name}"] = values[f"{attack.name}/rho2"].nanmean()
        return metrics
