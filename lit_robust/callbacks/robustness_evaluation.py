"""Robust accuracy at epoch end: attack a fixed, seeded subset of the evaluation data."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import Tensor, nn

from lit_robust.attacks.base import Attack
from lit_robust.callbacks.subset_evaluation import SubsetEvaluation, check_distinct_names, stop_if_terminated
from lit_robust.finite import check_finite_outputs
from lit_robust.metrics import (
    ATTACK_SECONDS,
    ROBUST_ACC,
    SUBSET_ACC,
    WORST_CASE_ACC,
    WORST_CASE_ACC_AT,
    budget_name,
    metric,
)
from lit_robust.models.modes import eval_mode


def predict_labels(model: nn.Module, x: Tensor) -> Tensor:
    """Predicted classes with the model in eval mode (modes restored afterwards), without grad.

    Raises:
        NonFiniteError: the model's logits are NaN or infinite (``argmax`` would say class 0).
    """
    with torch.no_grad(), eval_mode(model):
        return check_finite_outputs(model(x), "robustness evaluation").argmax(dim=1)


def robust_flags(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attacks: Sequence[Attack],
    individual: bool = True,
    trainer: L.Trainer | None = None,
    on_attack: Callable[[Attack], None] | None = None,
) -> dict[str, Tensor]:
    """Per-sample booleans: ``"clean"`` (correctly classified), ``"worst_case"`` (robust to every
    attack at once: the per-sample worst case) and, if ``individual``, per attack name, robust to it.

    A clean mistake is never robust, so attacks run only on clean-correct points. ``individual``:
    each attack runs on all of them, and its entry averages to its own robust accuracy. Otherwise
    each attack runs only on the points every earlier attack failed on (AutoAttack's ensemble):
    the same worst case for less work, but no per-attack numbers. With a ``trainer``, a SIGTERM it
    received stops the evaluation before the next attack; ``on_attack(attack)`` is called as each
    attack starts (the progress line shows its name).
    """
    clean = predict_labels(model, x) == y
    flags = {"clean": clean}
    worst = clean.clone()
    idx = clean.nonzero().flatten()
    for attack in attacks:
        stop_if_terminated(trainer)
        if on_attack is not None:
            on_attack(attack)
        if not individual:
            idx = worst.nonzero().flatten()
        robust = torch.zeros_like(clean)
        if len(idx):
            x_adv = attack(model, x[idx], y[idx])
            robust[idx] = predict_labels(model, x_adv) == y[idx]
        if individual:
            flags[attack.name] = robust
        worst &= robust
    flags["worst_case"] = worst
    return flags


class AttackClock:
    """Wall-clock seconds of each attack of one batch: pass :meth:`start` as ``robust_flags``'s
    ``on_attack`` (it calls ``then(attack)`` too) and call :meth:`stop` after the last attack. On a
    GPU it synchronizes ``device`` at each boundary, so an attack's queued kernels count as its own."""

    def __init__(self, device: torch.device, then: Callable[[Attack], None] | None = None):
        self.seconds: dict[str, float] = {}
        self.device, self.then = device, then
        self._running: str | None = None
        self._since = 0.0

    def start(self, attack: Attack) -> None:
        self.stop()
        self._running, self._since = attack.name, time.perf_counter()
        if self.then is not None:
            self.then(attack)

    def stop(self) -> None:
        if self._running is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - self._since
        self.seconds[self._running] = self.seconds.get(self._running, 0.0) + elapsed
        self._running = None


BUDGET_PREFIX = "budget:"  # the flag key of a per-budget worst case: ``budget:linf_0.1``
SECONDS_PREFIX = "seconds:"  # the per-sample share of an attack's seconds: ``seconds:pgd_linf_0.3``


def budget_of(attack: Attack) -> str | None:
    """``linf_0.3``: the threat model and eps an attack is bounded by (``None`` for a minimal one)."""
    return None if attack.eps is None else budget_name(attack.threat_model.value, attack.eps)


def attacks_by_budget(attacks: Sequence[Attack]) -> dict[str, list[str]]:
    """The attack names of each budget, when the attacks span two or more budgets (else ``{}``: the
    worst case is already the worst case of one budget)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for attack in attacks:
        if (budget := budget_of(attack)) is not None:
            groups[budget].append(attack.name)
    return dict(groups) if len(groups) > 1 else {}


def metric_name(stage: str, flag_key: str, name: str | None = None) -> str:
    """``val/subset_acc``, ``val/worst_case_acc``, ``val/worst_case_acc_at/<budget>`` or
    ``val/robust_acc/<attack name>``; with a callback ``name``, ``val/subset_acc/<name>``,
    ``val/worst_case_acc/<name>`` and ``val/worst_case_acc_at/<name>/<budget>``."""
    special = {"clean": SUBSET_ACC, "worst_case": WORST_CASE_ACC}
    if flag_key in special:
        return metric(stage, special[flag_key], name)
    if flag_key.startswith(SECONDS_PREFIX):
        return metric(stage, ATTACK_SECONDS, flag_key.removeprefix(SECONDS_PREFIX))
    if flag_key.startswith(BUDGET_PREFIX):
        budget = flag_key.removeprefix(BUDGET_PREFIX)
        return metric(stage, WORST_CASE_ACC_AT, budget if name is None else f"{name}/{budget}")
    return metric(stage, ROBUST_ACC, flag_key)


class RobustnessEvaluation(SubsetEvaluation):
    """Attack a fixed, seeded subset of the validation (or test) data at epoch end; log accuracies.

    Logs, under ``val/`` in ``fit`` and ``validate`` and under ``test/`` in ``test``:

    * ``robust_acc/<attack name>`` — fraction of the subset classified correctly after the attack
      (clean mistakes count as not robust), when ``individual``;
    * ``worst_case_acc`` — fraction that survives *every* attack (per-sample worst case);
    * ``worst_case_acc_at/<budget>`` — the same over the attacks of one budget (``linf_0.1``: threat
      model and eps), when the attacks span two or more budgets and ``individual``: the worst case
      over everything then mixes budgets (an eps sweep's largest eps decides it), so each budget's
      own worst case is logged beside it;
    * ``subset_acc`` — clean accuracy on the same subset;
    * ``attack_seconds/<attack name>`` — wall-clock seconds the attack ran, summed over batches and
      processes (what it costs; the report lists them);
    * ``robust_acc_vs_eps/<attack>`` — a figure (TensorBoard logger only) of robust accuracy
      against eps, for every attack given at two or more budgets (an eps sweep: list the attack
      once per eps).

    Attacks run in eval mode with each module's mode restored, so BatchNorm statistics, dropout
    and the training RNG stream are untouched (the attacks draw from their own seeded stream).
    Under DDP each process attacks its own shard of the subset and the results are gathered, so
    no sample is counted twice.

    Args:
        attacks: the attacks; their names must be distinct. With none, ``worst_case_acc`` is the
            subset's clean accuracy.
        num_samples, every_n_epochs, seed, batch_size: see :class:`SubsetEvaluation`.
        individual: run every attack on every clean-correct point and log its own accuracy; with
            ``False`` each attack only sees the points still robust (cheaper, worst case only).
        name: tells a second evaluation apart (say, other budgets on a smaller subset): its subset
            and worst-case accuracies are logged as ``subset_acc/<name>`` and ``worst_case_acc/<name>``
            (per-attack names are the attacks' own, so they must differ between evaluations).
            ``None``: the run's main evaluation, ``subset_acc`` and ``worst_case_acc``.
    """

    def __init__(
        self,
        attacks: list[Attack] | None = None,
        num_samples: int = 1000,
        every_n_epochs: int = 1,
        seed: int = 0,
        batch_size: int = 250,
        individual: bool = True,
        name: str | None = None,
    ):
        super().__init__(num_samples, every_n_epochs, seed, batch_size)
        self.attacks = list(attacks or [])
        check_distinct_names(self.attacks)
        self.individual = individual
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError(f"name must be a non-empty string without '/' (or None), got {name!r}")
        self.name = name

    def budgets(self) -> dict[str, list[str]]:
        """The attack names of each budget with its own worst case (see :func:`attacks_by_budget`);
        ``{}`` unless ``individual`` (the ensemble has no per-attack flags to combine)."""
        return attacks_by_budget(self.attacks) if self.individual else {}

    def flag_keys(self) -> list[str]:
        """The per-sample flags :meth:`per_sample` returns, in logging order."""
        per_attack = [attack.name for attack in self.attacks] if self.individual else []
        return ["clean", *per_attack, "worst_case", *(BUDGET_PREFIX + budget for budget in self.budgets())]

    def metric_names(self, stage: str) -> set[str]:
        return {metric_name(stage, key, self.name) for key in self.flag_keys()}

    def title(self) -> str:
        return super().title() + (f" {self.name!r}" if self.name else "")

    def attacks_per_sample(self) -> int:
        return len(self.attacks)

    def per_sample(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The flags of :meth:`flag_keys`, and each attack's seconds shared equally by the batch's
        samples (``seconds:<attack name>``), so the gathered values sum to its seconds."""
        clock = AttackClock(x.device, self.show_attack)
        flags = robust_flags(model, x, y, self.attacks, self.individual, self.trainer, clock.start)
        clock.stop()
        for budget, names in self.budgets().items():
            flags[BUDGET_PREFIX + budget] = torch.stack([flags[name] for name in names]).all(dim=0)
        for name, seconds in clock.seconds.items():
            flags[SECONDS_PREFIX + name] = torch.full((len(y),), seconds / len(y), device=y.device)
        return flags

    def summarize(self, stage: str, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        accuracies = {metric_name(stage, key, self.name): values[key].mean() for key in self.flag_keys()}
        seconds = {
            metric_name(stage, key): values[key].sum() for key in values if key.startswith(SECONDS_PREFIX)
        }
        return {**accuracies, **seconds}

    def log_extras(self, trainer: L.Trainer, stage: str, metrics: Mapping[str, Tensor]) -> None:
        if not isinstance(trainer.logger, TensorBoardLogger):
            return
        accuracies = {attack.name: metrics.get(metric_name(stage, attack.name)) for attack in self.attacks}
        for title, figure in eps_curves(self.attacks, accuracies).items():
            trainer.logger.experiment.add_figure(
                f"{stage}/robust_acc_vs_eps/{title}", figure, trainer.global_step
            )


def eps_curves(attacks: Sequence[Attack], accuracies: Mapping[str, Tensor | None]) -> dict[str, Figure]:
    """One figure of robust accuracy against eps per attack family given at two or more budgets."""
    families: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for attack in attacks:
        if attack.eps is not None and accuracies.get(attack.name) is not None:
            family = f"{attack.short_name}_{attack.threat_model.value}"
            families[family].append((attack.eps, float(accuracies[attack.name])))
    figures = {}
    for family, points in families.items():
        if len(points) < 2:
            continue
        eps, accuracy = zip(*sorted(points), strict=True)
        figure = Figure(figsize=(4, 3))  # no pyplot: the user's backend is left alone
        axes = figure.subplots()
        axes.plot(eps, accuracy, marker="o")
        axes.set(xlabel="eps (pixel units)", ylabel="robust accuracy", ylim=(0, 1), title=family)
        figure.tight_layout()
        figures[family] = figure
    return figures
