"""Perturbation sizes found by minimal-norm attacks (DeepFool, CW, DDN, EAD, FAB, ADef), and the
DeepFool rho_2 of Deep Defense (Yan et al., NeurIPS 2018) over every point of the subset."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from lit_robust.attacks.base import Attack, attacking
from lit_robust.callbacks.robustness_evaluation import predict_labels
from lit_robust.callbacks.subset_evaluation import SubsetEvaluation, check_distinct_names
from lit_robust.functional.deepfool import deepfool_rho
from lit_robust.metrics import MINIMAL_STATISTICS, metric
from lit_robust.validation import check_int, check_optional_int, check_real

STATISTICS = MINIMAL_STATISTICS
STANDARD_DEEPFOOL_STEPS = 50  # DeepFool's usual iteration count: the plain ``deepfool_rho2`` name


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


def paper_rho2(
    model: nn.Module,
    x: Tensor,
    max_iter: int = STANDARD_DEEPFOOL_STEPS,
    overshoot: float = 0.02,
    num_candidates: int | None = None,
    space: str = "pixel",
) -> Tensor:
    """Deep Defense's ``rho_i = ||delta_i||_2 / ||x_i||_2`` for *every* sample (evaluation.md section 5).

    ``delta`` is untargeted L2 DeepFool from the **predicted** label, overshoot 0.02, no clamp to
    [0, 1], ``max_iter`` iterations; a point DeepFool has not fooled by then keeps its last
    ``delta`` (as the official code). ``space="normalized"`` measures after the model's leading
    ``Normalize`` (the paper's preprocessed space). The model runs in eval mode, frozen, modes restored.
    """
    with attacking(model, x, x.new_zeros(len(x), dtype=torch.long)) as (x, _):
        rho, _ = deepfool_rho(
            model, x, space=space, overshoot=overshoot, max_iter=max_iter, num_candidates=num_candidates
        )
    return rho.detach()


def rho2_metric_name(stage: str, max_iter: int, normalized: bool = False) -> str:
    """``<stage>/deepfool_rho2`` (50 iterations), ``<stage>/deepfool_rho2_u<max_iter>`` otherwise,
    with ``_normalized`` for the normalized space (``test/deepfool_rho2_u5_normalized``)."""
    steps = "" if max_iter == STANDARD_DEEPFOOL_STEPS else f"_u{max_iter}"
    return f"{stage}/deepfool_rho2{steps}{'_normalized' if normalized else ''}"


class MinimalPerturbation(SubsetEvaluation):
    """How far minimal-norm attacks must move each correctly classified point of a seeded subset.

    Logs per attack, under ``val/`` or ``test/``:

    * ``median_l2/<attack>``, ``median_linf/<attack>`` — the (lower) median norm, failures counted
      as ``+inf`` (so the median is ``inf`` when more than half fail);
    * ``mean_l2/<attack>`` — the mean L2 norm over successes (NaN when the attack never succeeds);
    * ``success_rate/<attack>`` — always read the medians next to it;
    * ``rho2/<attack>`` — ``mean ||delta||_2 / ||x||_2`` over successes, the metric of Deep Defense
      (Yan et al., NeurIPS 2018). Their protocol attacks *all* test points from the predicted label;
      here only clean-correct points are attacked, from the true label (the two coincide there).
      NaN when the attack never succeeds.

    Every per-attack metric is over the clean-correct points of the subset: when there is none
    (a model wrong everywhere) there is nothing to attack and all five are NaN, never 0 or ``inf``.

    With ``rho2_steps`` it also logs the paper's own protocol, ``deepfool_rho2`` (and
    ``deepfool_rho2_u<steps>`` for other iteration counts): the mean of ``||delta|| / ||x||`` over
    **every** point of the subset, untargeted unclipped L2 DeepFool from the predicted label
    (:func:`paper_rho2`), with ``_normalized`` variants measured after the model's ``Normalize``.

    Minimal-norm numbers never replace robust accuracy under strong bounded attacks: DeepFool in
    particular is weak (evaluation.md §5).

    Args:
        attacks: minimal-perturbation attacks (names must be distinct); may be empty with ``rho2_steps``.
        num_samples, every_n_epochs, seed, batch_size: see :class:`SubsetEvaluation`.
        rho2_steps: distinct DeepFool iteration counts (each >= 1) for the paper's rho_2, e.g.
            ``[50, 5]`` (DeepFool's standard and the official Deep Defense ``--max-iter``); ``None``
            for none.
        rho2_normalized: also measure rho_2 in the normalized space (twice the DeepFool work).
        rho2_overshoot: DeepFool's overshoot for rho_2 (0.02), >= 0 (0: stop at the linearized boundary).
        rho2_num_candidates: candidate classes other than the prediction, >= 1 (``None``: all, as the
            paper).
    """

    def __init__(
        self,
        attacks: list[Attack] | None = None,
        num_samples: int = 1000,
        every_n_epochs: int = 1,
        seed: int = 0,
        batch_size: int = 250,
        rho2_steps: list[int] | None = None,
        rho2_normalized: bool = False,
        rho2_overshoot: float = 0.02,
        rho2_num_candidates: int | None = None,
    ):
        super().__init__(num_samples, every_n_epochs, seed, batch_size)
        attacks = list(attacks or [])
        rho2_steps = [check_int("rho2_steps", steps, 1) for steps in rho2_steps or []]
        if not (attacks or rho2_steps):
            raise ValueError("attacks must be a non-empty list, or give rho2_steps (nothing to measure)")
        check_distinct_names(attacks)
        if len(set(rho2_steps)) != len(rho2_steps):
            raise ValueError(f"rho2_steps must be distinct, got {rho2_steps}")
        self.attacks = attacks
        self.rho2_steps = rho2_steps
        self.rho2_normalized = bool(rho2_normalized)
        self.rho2_overshoot = check_real("rho2_overshoot", rho2_overshoot, 0)
        self.rho2_num_candidates = check_optional_int("rho2_num_candidates", rho2_num_candidates, 1)

    def rho2_variants(self) -> list[tuple[int, bool]]:
        """``(max_iter, normalized)`` of each rho_2 this callback computes."""
        spaces = (False, True) if self.rho2_normalized else (False,)
        return [(steps, normalized) for steps in self.rho2_steps for normalized in spaces]

    def metric_names(self, stage: str) -> set[str]:
        names = {metric(stage, statistic, a.name) for statistic in STATISTICS for a in self.attacks}
        return names | {rho2_metric_name(stage, *variant) for variant in self.rho2_variants()}

    def attacks_per_sample(self) -> int:
        return len(self.attacks) + len(self.rho2_variants())

    def per_sample(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        values = {}
        for attack in self.attacks:
            self.show_attack(attack)
            for key, value in perturbation_sizes(model, x, y, attack).items():
                values[f"{attack.name}/{key}"] = value
        for steps, normalized in self.rho2_variants():
            space = "normalized" if normalized else "pixel"
            self.show_attack(f"deepfool_rho2 ({steps} steps, {space} space)")
            rho = paper_rho2(model, x, steps, self.rho2_overshoot, self.rho2_num_candidates, space)
            values[rho2_metric_name("rho2", steps, normalized)] = rho
        return values

    def summarize(self, stage: str, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        metrics = {}
        for attack in self.attacks:  # over no attacked point, median, mean and nanmean are all NaN
            l2, linf = values[f"{attack.name}/l2"], values[f"{attack.name}/linf"]
            successes = l2[l2.isfinite()]
            metrics[metric(stage, "median_l2", attack.name)] = l2.median()
            metrics[metric(stage, "median_linf", attack.name)] = linf.median()
            metrics[metric(stage, "mean_l2", attack.name)] = successes.mean()
            metrics[metric(stage, "success_rate", attack.name)] = values[f"{attack.name}/success"].mean()
            metrics[metric(stage, "rho2", attack.name)] = values[f"{attack.name}/rho2"].nanmean()
        for variant in self.rho2_variants():
            metrics[rho2_metric_name(stage, *variant)] = values[rho2_metric_name("rho2", *variant)].mean()
        return metrics
