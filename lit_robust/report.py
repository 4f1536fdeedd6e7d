"""The robustness report: every ``test/`` number of a run, with the settings that produced it.

Written by ``lit-robust test`` (and ``fit`` with ``test_after_fit``) as ``report.json`` and
``report.md`` next to the TensorBoard logs. Both files are replaced atomically (written to a
temporary file, then renamed), so a crash or a full disk never leaves half a report. Every report
says whether its run completed (``run``) and how far the scored checkpoint was trained
(``checkpoint_progress``); a run that failed or was terminated leaves a report saying so, with no
numbers (:func:`write_incomplete_report`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lit_robust.attacks.base import Attack
from lit_robust.callbacks.subset_evaluation import SubsetEvaluation
from lit_robust.metrics import (
    ACC,
    ATTACK_SECONDS,
    MASKING,
    MINIMAL_STATISTICS,
    ROBUST_ACC,
    SUBSET_ACC,
    WORST_CASE_ACC,
    WORST_CASE_ACC_AT,
    metric,
    per_attack,
)

PACKAGES = ("lit-robust", "torch", "lightning", "torchmetrics", "advertorch", "pyautoattack")


def attack_settings(attack: Attack) -> dict[str, Any]:
    """An attack's class, name, threat model and plain hyperparameters (what reproduces it)."""
    settings: dict[str, Any] = {"name": attack.name, "class": type(attack).__name__}
    settings["short_name"] = attack.short_name
    settings["threat_model"] = attack.threat_model.value
    for key, value in vars(attack).items():
        if key.startswith("_") or key in settings:  # wrappers copy short_name / threat_model per instance
            continue
        if isinstance(value, Attack):
            settings[key] = attack_settings(value)
        elif value is None or isinstance(value, (bool, int, float, str)):
            settings[key] = value
    return settings


def evaluation_settings(callback: SubsetEvaluation) -> dict[str, Any]:
    """A callback's subset size, seed and attacks."""
    attacks = []
    for value in vars(callback).values():
        attacks += [
            item for item in (value if isinstance(value, list) else [value]) if isinstance(item, Attack)
        ]
    return {
        "callback": type(callback).__name__,
        "name": getattr(callback, "name", None),
        "num_samples": callback.num_samples,
        "seed": callback.seed,
        "attacks": [attack_settings(attack) for attack in attacks],
    }


def weights_scored(model: L.LightningModule, checkpoint: str | None) -> str | None:
    """The file whose weights were evaluated: the checkpoint, else the model's ``init_from``."""
    if checkpoint:
        return checkpoint
    init_from = getattr(model, "init_from", None)
    return f"{init_from} (init_from)" if init_from else None


def architecture_digest(network: torch.nn.Module) -> str:
    """A short fingerprint of ``network``'s architecture: the first 12 hex digits of the SHA-256 of its
    printed module tree (layers, their shapes and options such as ``bias=False``, activations, the input
    normalization). Equal digests mean the same architecture; weights and initialization do not count."""
    return hashlib.sha256(repr(network).encode()).hexdigest()[:12]


def training_settings(model: L.LightningModule) -> dict[str, Any]:
    """What the evaluated model was trained with, as far as the model knows: its class, its plain
    hyperparameters (``lam``, ``beta``, ...), the training attack and TRADES' beta. Not among them:
    LightningCLI's bookkeeping (``_class_path``, ...) and an ``init_from`` that names the weights
    scored rather than a network training started from (the report's ``weights`` names it)."""
    adversary = getattr(model, "adversary", None)
    plain = (bool, int, float, str, type(None))
    hidden = {"init_from"} if getattr(model, "init_from_scored", False) else set()
    hyperparameters = {
        k: v
        for k, v in getattr(model, "hparams", {}).items()
        if isinstance(v, plain) and not k.startswith("_") and k not in hidden
    }
    return {
        "defense": type(model).__name__,
        "network": type(getattr(model, "network", model)).__name__,
        "adversary": attack_settings(adversary) if isinstance(adversary, Attack) else None,
        "trades_beta": getattr(model, "trades_beta", None),
        "hyperparameters": hyperparameters,
    }


def eps_curves(evaluations: list[dict[str, Any]], metrics: dict[str, float]) -> dict[str, list[list[float]]]:
    """Robust accuracy against eps for every attack family (short name and threat model, so wrapped
    variants such as ``_surrogate`` and ``_exact`` stay apart) evaluated at two or more budgets."""
    curves: dict[str, set[tuple[float, float]]] = defaultdict(set)
    for evaluation in evaluations:
        for attack in evaluation["attacks"]:
            value = metrics.get(metric("test", ROBUST_ACC, attack["name"]))
            if attack.get("eps") is not None and value is not None:
                family = f"{attack['short_name']}_{attack['threat_model']}"
                curves[family].add((attack["eps"], value))
    return {family: [list(p) for p in sorted(points)] for family, points in curves.items() if len(points) > 1}


def build_report(
    trainer: L.Trainer, checkpoint: str | None, seed: int | None = None, command: str = "test"
) -> dict[str, Any]:
    """Everything the report shows, as plain data (``seed``: the run's global seed; ``command``:
    the ``lit-robust`` subcommand that scored it)."""
    metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("test/")}
    evaluations = [evaluation_settings(cb) for cb in trainer.callbacks if isinstance(cb, SubsetEvaluation)]
    minimal = defaultdict(dict)
    for statistic in MINIMAL_STATISTICS:
        for attack, value in per_attack(metrics, "test", statistic).items():
            minimal[attack][statistic] = value
    model = trainer.lightning_module
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {"command": command, "completed": True, "status": "finished"},
        "model": type(model).__name__,
        "network": type(getattr(model, "network", model)).__name__,
        "architecture": architecture_digest(getattr(model, "network", model)),
        "checkpoint": checkpoint,
        "weights": weights_scored(model, checkpoint),
        "training": training_settings(model),
        "checkpoint_progress": getattr(model, "checkpoint_progress", None),
        "clean_acc": metrics.get(metric("test", ACC)),
        "subset_clean_acc": metrics.get(metric("test", SUBSET_ACC)),
        "robust_acc": per_attack(metrics, "test", ROBUST_ACC),
        "attack_seconds": per_attack(metrics, "test", ATTACK_SECONDS),
        **worst_cases(metrics),
        "eps_curves": eps_curves(evaluations, metrics),
        "minimal_perturbation": dict(minimal),
        "masking": per_attack(metrics, "test", MASKING),
        "evaluations": evaluations,
        "seed": seed,
        "versions": {name: _version(name) for name in PACKAGES},
        "hardware": {
            "platform": platform.platform(),
            "device": str(model.device),
            "gpu": torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else None,
            "processes": trainer.world_size,
        },
        "metrics": metrics,
    }


def worst_cases(metrics: Mapping[str, Any], stage: str = "test") -> dict[str, Any]:
    """The worst cases in ``metrics``, as the report keeps them: over the main evaluation's attacks,
    of each named evaluation, and of each budget (``{"linf_0.1": …, "budgets/l2_2": …}``)."""
    return {
        "worst_case_acc": metrics.get(metric(stage, WORST_CASE_ACC)),
        "named_worst_case_acc": per_attack(metrics, stage, WORST_CASE_ACC),
        "worst_case_acc_by_budget": per_attack(metrics, stage, WORST_CASE_ACC_AT),
    }


def worst_case_rows(worst: Mapping[str, Any]) -> list[tuple[str, float | None]]:
    """Labelled rows of :func:`worst_cases`: the main worst case first, each of its budgets when its
    attacks span several, then the same for every named evaluation (the report's and the CLI's)."""
    named = worst.get("named_worst_case_acc") or {}
    by_budget = worst.get("worst_case_acc_by_budget") or {}

    def budgets_of(prefix: str) -> dict[str, float]:
        return {
            b.removeprefix(prefix): v
            for b, v in by_budget.items()
            if b.startswith(prefix) and "/" not in b.removeprefix(prefix)
        }

    def mixed(budgets: Mapping[str, float]) -> str:
        return f" ({len(budgets)} budgets mixed; each below)" if budgets else ""

    main = budgets_of("")
    scope = "the main evaluation's attacks" if named else "all attacks"
    rows = [(f"worst case over {scope}{mixed(main)}", worst.get("worst_case_acc"))]
    rows += [(f"worst case at `{budget}`", value) for budget, value in main.items()]
    for name, value in named.items():
        budgets = budgets_of(f"{name}/")
        rows.append((f"worst case over the attacks of evaluation `{name}`{mixed(budgets)}", value))
        rows += [(f"worst case of evaluation `{name}` at `{budget}`", v) for budget, v in budgets.items()]
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a short Markdown page."""
    percent = lambda value: "n/a" if value is None else f"{100 * value:.2f}%"  # noqa: E731
    lines = [
        f"# Robustness report: {report['model']} ({report['network']})",
        "",
        f"Run: `{report['run']['command']}` {report['run']['status']}.  ",
        f"Weights: `{report.get('weights', report['checkpoint'])}`"
        f"{progress_text(report['checkpoint_progress'])}  ",
        f"Trained as: {training_text(report.get('training'))}  ",
        f"Created: {report['created']}; device {report['hardware']['device']}, "
        f"{report['hardware']['processes']} process(es); seed {report['seed']}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| clean accuracy (test split) | {percent(report['clean_acc'])} |",
        f"| clean accuracy (attacked subset) | {percent(report['subset_clean_acc'])} |",
    ]
    lines += [
        f"| robust accuracy, `{name}` | {percent(value)} |" for name, value in report["robust_acc"].items()
    ]
    (label, value), *others = worst_case_rows(report)
    lines.append(f"| **{label}** | **{percent(value)}** |")
    lines += [f"| {label} | {percent(value)} |" for label, value in others]
    if report["eps_curves"]:
        lines += ["", "## Robust accuracy against eps", ""]
        for family, points in report["eps_curves"].items():
            lines.append(f"- `{family}`: " + ", ".join(f"{eps:g} → {percent(acc)}" for eps, acc in points))
    if report["minimal_perturbation"]:
        lines += ["", "## Minimal perturbations (clean-correct points; failures count as +inf)", ""]
        lines += [
            "| attack | median L2 | median Linf | mean L2 (successes) | success rate | rho_2 |",
            "|---|---|---|---|---|---|",
        ]
        for attack, stats in report["minimal_perturbation"].items():
            cells = [f"{stats.get(k, float('nan')):.4g}" for k in ("median_l2", "median_linf", "mean_l2")]
            cells += [percent(stats.get("success_rate")), f"{stats.get('rho2', float('nan')):.4g}"]
            lines.append(f"| `{attack}` | " + " | ".join(cells) + " |")
    if report["masking"]:
        lines += [
            "",
            "## Gradient-masking checks (flag 1 = check failed)",
            "",
            "| check | value | flag |",
            "|---|---|---|",
        ]
        for name, value in report["masking"].items():
            if not name.endswith("_flag") and name != "flags" and not name.startswith("robust_acc/"):
                flag = report["masking"].get(f"{name}_flag")
                lines.append(f"| {name} | {value:.4g} | {'n/a' if flag is None else int(flag)} |")
        lines.append(f"\nFlags raised: {int(report['masking'].get('flags', 0))}")
    if report.get("attack_seconds"):  # reports before attack timing have none
        lines += ["", "## What each attack cost (wall-clock, summed over processes)", ""]
        lines += ["| attack | minutes |", "|---|---|"]
        lines += [f"| `{name}` | {seconds / 60:.1f} |" for name, seconds in report["attack_seconds"].items()]
    lines += ["", "## Settings", ""]
    for evaluation in report["evaluations"]:
        named = f" `{evaluation['name']}`" if evaluation.get("name") else ""
        size = f"{evaluation['num_samples']} samples, seed {evaluation['seed']}"
        lines.append(f"- {evaluation['callback']}{named}: {size}")
        lines += [f"  - `{json.dumps(attack, sort_keys=True)}`" for attack in evaluation["attacks"]]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)


def training_text(training: dict[str, Any] | None) -> str:
    """``AdversarialTraining, adversary pgd_linf_0.3, lam=1.0``: the training settings in one line."""
    if not training:
        return "unknown"
    parts = [training["defense"]]
    if training.get("adversary"):
        parts.append(f"adversary `{training['adversary']['name']}`")
    if training.get("trades_beta") is not None:
        parts.append(f"TRADES beta {training['trades_beta']:g}")
    parts += [f"{k}={v}" for k, v in training.get("hyperparameters", {}).items() if v is not None]
    return ", ".join(parts)


def progress_text(progress: dict[str, Any] | None) -> str:
    """`` (written after epoch 3 of 10: training had not finished)``, or nothing when unknown."""
    if not progress:
        return ""
    done, planned = progress.get("epochs_completed"), progress.get("max_epochs")
    if planned is None or planned < 0:
        return f" (written after epoch {done})"
    state = "training finished" if done >= planned else "training had not finished"
    seconds = progress.get("train_seconds")
    cost = f"; {seconds / 60:.1f} min of training steps" if seconds else ""
    return f" (written after epoch {done} of {planned}: {state}{cost})"


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` all at once: write a temporary file beside it, then rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_report(report: dict[str, Any], directory: str | Path) -> tuple[Path, Path]:
    """Write ``report`` as ``report.json`` and ``report.md`` into ``directory``; returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = directory / "report.json", directory / "report.md"
    write_atomic(json_path, json.dumps(report, indent=2, sort_keys=True, allow_nan=True) + "\n")
    write_atomic(markdown_path, render_markdown(report) if report["run"]["completed"] else incomplete(report))
    return json_path, markdown_path


def write_report(
    trainer: L.Trainer,
    checkpoint: str | None,
    directory: str | Path,
    seed: int | None = None,
    command: str = "test",
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` of a finished evaluation into ``directory``."""
    return save_report(build_report(trainer, checkpoint, seed, command), directory)


def write_incomplete_report(
    directory: str | Path, command: str, status: str, checkpoint: str | None = None
) -> tuple[Path, Path]:
    """The report of a run that did not complete: what happened, and no numbers."""
    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {"command": command, "completed": False, "status": status},
        "checkpoint": checkpoint,
        "versions": {name: _version(name) for name in PACKAGES},
    }
    return save_report(report, directory)


def incomplete(report: dict[str, Any]) -> str:
    """The Markdown page of an incomplete run."""
    return (
        "# Robustness report: incomplete run\n\n"
        f"`lit-robust {report['run']['command']}` did not complete: {report['run']['status']}.\n\n"
        "There are no results: nothing in this folder measures the model.\n"
    )


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
