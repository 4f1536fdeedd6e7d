"""The leaderboard: compare any set of runs from their ``report.json`` files.

``lit-robust compare RUN_OR_REPORT...`` reads every report (a run folder is searched recursively),
and writes into ``--out`` (default ``leaderboard/``):

* ``leaderboard.md`` — one row per completed run: clean accuracy, the headline AutoAttack accuracy,
  the worst case over the main evaluation's attacks at the headline's budget, the most favourable
  number of the paper's own protocol (attacks named ``*_paper``) and its *masking gap* to AutoAttack
  at the same threat model and eps, the gradient-masking flags, DeepFool's median L2, the cost of a
  training step and DeepFool's rho_2 relative to the standard run on the same network, and the
  training time. Runs that did not complete are listed apart, with no numbers;
* ``leaderboard.json`` — the same rows as data, with the headline and the reports read;
* ``robust_vs_eps_<threat model>.png`` — per run, the lowest accuracy over its attacks at each eps;
* ``clean_vs_autoattack.png`` — clean against headline accuracy, marker area by step cost.

Accuracies are fractions in [0, 1] exactly as each report states them: robust accuracies are of the
attacked subset (clean mistakes count as not robust), clean accuracy of the whole test split.
A ``row.json`` beside a report (written by the benchmark) may name the run (``name``) and give its
training time (``train_seconds``, which overrides the report's).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lit_robust.metrics import budget_name
from lit_robust.report import write_atomic

REPORT = "report.json"
ROW = "row.json"
DEFAULT_HEADLINE = "autoattack_linf_0.3"
STANDARD_TRAINING = "StandardTraining"
COLUMNS = (
    "run",
    "defense",
    "clean",
    "headline AutoAttack",
    "worst case",
    "paper protocol (attack: acc)",
    "masking gap",
    "masking flags",
    "DeepFool median L2",
    "DeepFool rho_2 × ref",
    "step cost ×",
    "train time (min)",
)


@dataclass
class Run:
    """One run: its display ``name``, the ``path`` of its report.json, the ``report`` and the
    benchmark's ``row`` (``{}`` when there is no row.json)."""

    name: str
    path: Path
    report: dict[str, Any]
    row: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        """Whether the run's command completed (an incomplete report has no numbers)."""
        return bool(self.report.get("run", {}).get("completed", True))


# --------------------------------------------------------------------------------------------- loading


def find_reports(paths: Sequence[str | Path]) -> list[Path]:
    """The report.json files of ``paths``, sorted and without duplicates.

    Each path is a report file or a directory searched recursively for ``report.json``.

    Raises:
        FileNotFoundError: a path does not exist, or a directory holds no report.json.
    """
    if not paths:
        raise FileNotFoundError("no run folder or report.json given")
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        if path.is_dir():
            reports = [p for p in path.rglob(REPORT) if p.is_file()]
            if not reports:
                raise FileNotFoundError(f"{path}: no {REPORT} in this directory or below it")
            found.update(reports)
        else:
            found.add(path)
    return sorted(found, key=lambda p: p.as_posix())


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every run of ``paths`` (see :func:`find_reports`), named by its row.json's ``name``, else by its
    folder's path relative to the common parent of all runs (its folder name when there is one run).

    Raises:
        FileNotFoundError: as :func:`find_reports`.
        ValueError: a report or row.json is not a JSON object.
    """
    reports = find_reports(paths)
    folders = [report.resolve().parent for report in reports]
    parent = Path(os.path.commonpath(folders))
    runs = []
    for report, folder in zip(reports, folders, strict=True):
        row_path = report.parent / ROW
        row = _read_json(row_path) if row_path.is_file() else {}
        relative = folder.relative_to(parent).as_posix()
        name = row.get("name") or (folder.name if relative == "." else relative)
        runs.append(Run(name=str(name), path=report, report=_read_json(report), row=row))
    return runs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------------ rows


def leaderboard_rows(
    runs: Sequence[Run],
    headline: str = DEFAULT_HEADLINE,
    reference: str | None = None,
    metrics: Sequence[str] = (),
    references: Mapping[str, str | None] | None = None,
) -> list[dict[str, Any]]:
    """One row per completed run, sorted by headline accuracy (highest first, unknown last), then name.

    Keys: ``name``, ``model``, ``network``, ``clean_acc``, ``headline_acc`` (``robust_acc[headline]``),
    ``worst_case_acc`` (fractions in [0, 1] or None); ``masking_flags`` (count of failed checks or None)
    and ``masking_failed`` (their names); ``paper_attack`` and ``paper_acc`` (the ``*_paper`` attack
    with the highest accuracy, preferring those AutoAttack also ran at); ``masking_gap`` (``paper_acc``
    minus AutoAttack's accuracy at the paper attack's threat model and eps, None where AutoAttack was not
    run; a difference of fractions); ``train_seconds`` (wall-clock seconds of training steps);
    ``reference`` (the name of the run's reference run, see :func:`reference_runs`, or None);
    ``step_cost`` (seconds per optimizer step divided by the reference run's); ``median_l2`` and
    ``rho2`` (DeepFool's minimal perturbation, pixel units, and relative to the input norm);
    ``rho2_ratio`` (``rho2`` over the reference run's: the "times larger perturbation" papers claim);
    ``selected`` and ``note`` (from ``row.json``: a sweep's validation-selected point, what differs);
    ``metrics``: ``{key: value or None}`` of each of the ``metrics`` asked for, read from the report's
    logged metrics (``test/grad_l1_over_l2/input``), one more column each.

    Raises:
        ValueError: ``reference`` or a value of ``references`` names no completed run.
    """
    completed = [run for run in runs if run.completed]
    bases = reference_runs(completed, reference, references)
    rows = []
    for run in completed:
        base = bases[run.name]
        row = _row(run, headline, _step_seconds(base) if base is not None else None)
        base_rho2 = (
            _number(_deepfool(base.report.get("minimal_perturbation") or {}).get("rho2")) if base else None
        )
        # Deep Defense's and GFA's claims are ratios of minimal perturbations to a standard model's
        row["rho2_ratio"] = row["rho2"] / base_rho2 if row["rho2"] is not None and base_rho2 else None
        row["reference"] = base.name if base is not None else None
        row["metrics"] = {key: _number((run.report.get("metrics") or {}).get(key)) for key in metrics}
        rows.append(row)
    return sorted(rows, key=lambda r: (r["headline_acc"] is None, -(r["headline_acc"] or 0.0), r["name"]))


def reference_runs(
    runs: Sequence[Run], reference: str | None = None, references: Mapping[str, str | None] | None = None
) -> dict[str, Run | None]:
    """``{run name: its reference run or None}`` over the completed ``runs``: the run named
    ``references[name]`` where the mapping has the run (None there: no reference), else the one named
    ``reference`` where given, else the first StandardTraining run (by name) *on the same network* (the
    same architecture digest where both reports record one, else the same network class).

    Raises:
        ValueError: ``reference`` or a value of ``references`` names no completed run.
    """
    completed = [run for run in runs if run.completed]
    by_name = {run.name: run for run in completed}
    references = references or {}
    for name in [reference, *references.values()]:  # None: no reference
        if name is not None and name not in by_name:
            names = ", ".join(sorted(by_name)) or "none"
            raise ValueError(f"reference run {name!r} is not among the completed runs ({names})")
    standard = sorted(
        (run for run in completed if run.report.get("model") == STANDARD_TRAINING), key=lambda r: r.name
    )
    bases: dict[str, Run | None] = {}
    for run in completed:
        named = references.get(run.name, reference)
        if named is not None:
            bases[run.name] = by_name[named]
        elif run.name in references:
            bases[run.name] = None
        else:
            bases[run.name] = next((base for base in standard if same_network(run.report, base.report)), None)
    return bases


def same_network(report: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Whether two reports scored the same network: equal ``architecture`` digests where both record one
    (reports before it was added do not), else equal network class names."""
    if report.get("architecture") and other.get("architecture"):
        return report["architecture"] == other["architecture"]
    return report.get("network") == other.get("network")


def incomplete_runs(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """``{name, command, status}`` of every run that did not complete, by name."""
    entries = [
        {
            "name": run.name,
            "command": run.report["run"].get("command"),
            "status": run.report["run"].get("status"),
        }
        for run in runs
        if not run.completed
    ]
    return sorted(entries, key=lambda entry: entry["name"])


def _row(run: Run, headline: str, base_cost: float | None) -> dict[str, Any]:
    report = run.report
    robust = {name: _number(value) for name, value in (report.get("robust_acc") or {}).items()}
    paper_attack, paper_acc = _paper_attack(report, robust)
    masking_flags, masking_failed = _masking(report.get("masking"))
    step_seconds = _step_seconds(run)
    deepfool = _deepfool(report.get("minimal_perturbation") or {})
    headline_attack = _headline_attack(report, robust, headline)
    return {
        "name": run.name,
        "model": report.get("model"),
        "network": report.get("network"),
        "clean_acc": _number(report.get("clean_acc")),
        "headline_acc": robust.get(headline_attack.get("name", headline)),
        "worst_case_acc": _worst_case(report, headline_attack),
        "masking_flags": masking_flags,
        "masking_failed": masking_failed,
        "paper_attack": paper_attack,
        "paper_acc": paper_acc,
        "masking_gap": _masking_gap(report, robust, paper_attack, paper_acc),
        "train_seconds": _train_seconds(run),
        "step_cost": step_seconds / base_cost if step_seconds is not None and base_cost else None,
        "median_l2": _number(deepfool.get("median_l2")),
        "rho2": _number(deepfool.get("rho2")),
        "selected": run.row.get("selected"),  # a weight sweep's point, chosen on validation (row.json)
        "note": run.row.get("note") or "",
    }


def _number(value: Any) -> float | None:
    """``value`` as a float; None when absent, not a number or NaN (infinity stays: a median L2 can be)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def is_paper_attack(name: str) -> bool:
    """Whether an attack runs a paper's own protocol: named ``*_paper`` (or ``*_paper_<budget>``)."""
    return name.endswith("_paper") or "_paper_" in name


def _paper_attack(report: dict[str, Any], robust: dict[str, float | None]) -> tuple[str | None, float | None]:
    """The paper attack with the highest accuracy among those AutoAttack was also run at (same threat
    model and eps), else among all; ties: the first name. (None, None) without paper attacks."""
    scored = sorted((name, acc) for name, acc in robust.items() if is_paper_attack(name) and acc is not None)
    comparable = [item for item in scored if _autoattack_acc(report, robust, item[0]) is not None]
    candidates = comparable or scored
    return max(candidates, key=lambda item: item[1]) if candidates else (None, None)


def _headline_attack(
    report: dict[str, Any], robust: dict[str, float | None], headline: str
) -> dict[str, Any]:
    """The settings of the run's headline attack (``{}`` when unknown): the attack named ``headline``,
    else (a randomized pipeline scored by AutoAttack's ``"rand"`` version) the AutoAttack with the lowest
    accuracy at the headline's budget, read from its name's ``<threat model>_<eps>`` ending."""
    attacks = _attacks(report)
    named = next((a for a in attacks if a.get("name") == headline), None)
    if named is not None:
        return named
    budget = "_".join(headline.rsplit("_", 2)[-2:])
    same_budget = [
        a for a in attacks
        if a.get("class") == "AutoAttack" and a.get("eps") is not None
        and budget_name(a["threat_model"], a["eps"]) == budget and robust.get(a["name"]) is not None
    ]  # fmt: skip
    return min(same_budget, key=lambda a: robust[a["name"]]) if same_budget else {}


def _worst_case(report: dict[str, Any], headline: dict[str, Any]) -> float | None:
    """The main evaluation's worst case at the ``headline`` attack's budget when its attacks span
    several (a flow-PGD ``_paper`` attack beside AutoAttack at Linf 0.3), else over all of its attacks."""
    by_budget = report.get("worst_case_acc_by_budget") or {}
    if headline.get("eps") is not None:
        budget = budget_name(headline["threat_model"], headline["eps"])
        if budget in by_budget:
            return _number(by_budget[budget])
    return _number(report.get("worst_case_acc"))


def _attacks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The settings of every attack of every evaluation of the report (duplicates included)."""
    return [attack for evaluation in report.get("evaluations") or [] for attack in evaluation["attacks"]]


def _masking_gap(
    report: dict[str, Any], robust: dict[str, float | None], paper_attack: str | None, paper_acc: float | None
) -> float | None:
    """``paper_acc`` minus AutoAttack's accuracy at the paper attack's threat model and eps; None when
    either is unknown (a paper attack in a threat model AutoAttack was not run in has no gap)."""
    if paper_attack is None or paper_acc is None:
        return None
    autoattack = _autoattack_acc(report, robust, paper_attack)
    return None if autoattack is None else paper_acc - autoattack


def _autoattack_acc(
    report: dict[str, Any], robust: dict[str, float | None], attack_name: str
) -> float | None:
    """The lowest accuracy of the AutoAttack runs at ``attack_name``'s threat model and eps, or None."""
    attacks = _attacks(report)
    target = next((a for a in attacks if a.get("name") == attack_name), None)
    if target is None:
        return None
    matching = [
        robust.get(a["name"])
        for a in attacks
        if a.get("class") == "AutoAttack"
        and a.get("threat_model") == target.get("threat_model")
        and _same_eps(a.get("eps"), target.get("eps"))
    ]
    matching = [acc for acc in matching if acc is not None]
    return min(matching) if matching else None


def _same_eps(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _masking(masking: dict[str, Any] | None) -> tuple[int | None, list[str]]:
    """The count of raised gradient-masking flags (None without checks) and the failed checks' names."""
    if not masking:
        return None, []
    failed = sorted(
        key.removesuffix("_flag")
        for key, value in masking.items()
        if key.endswith("_flag") and not key.startswith("robust_acc/") and _number(value) == 1.0
    )
    count = _number(masking.get("flags"))
    return (len(failed) if count is None else int(count)), failed


def _deepfool(minimal: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """DeepFool's minimal-perturbation statistics (``deepfool_l2`` first), or ``{}``."""
    names = sorted(
        (name for name in minimal if name.startswith("deepfool")), key=lambda n: (n != "deepfool_l2", n)
    )
    return minimal[names[0]] if names else {}


def _train_seconds(run: Run) -> float | None:
    """Wall-clock seconds of training steps: row.json's, else the report's checkpoint progress's."""
    if _number(run.row.get("train_seconds")) is not None:
        return _number(run.row["train_seconds"])
    return _number((run.report.get("checkpoint_progress") or {}).get("train_seconds"))


def _step_seconds(run: Run) -> float | None:
    """Seconds per optimizer step (training time over ``global_step``), or None when unknown."""
    seconds = _train_seconds(run)
    steps = _number((run.report.get("checkpoint_progress") or {}).get("global_step"))
    return seconds / steps if seconds is not None and steps else None


# -------------------------------------------------------------------------------------------- markdown


SELECTION_NOTE = (
    "A weight sweep's point is *selected on val*: the best APGD-CE + APGD-T worst case on the "
    "validation split, never on test."
)


def render_markdown(
    rows: Sequence[dict[str, Any]],
    headline: str = DEFAULT_HEADLINE,
    incomplete: Sequence[dict[str, Any]] = (),
    metrics: Sequence[str] = (),
) -> str:
    """The leaderboard as a Markdown page: a header, the table of ``rows`` (see :func:`leaderboard_rows`)
    and the ``incomplete`` runs (see :func:`incomplete_runs`); ``metrics``: the extra columns, one per
    logged metric key. Where the rows have more than one reference run, a last column names each row's."""
    bases = sorted({row["reference"] for row in rows}, key=str)
    per_row = len(bases) > 1
    if per_row:
        base = "its reference run's, the StandardTraining run on the same network (column `reference`)"
    else:
        base = f"`{_cell(bases[0])}`'s" if bases and bases[0] else "the reference run's (none here)"
    columns = [*COLUMNS, *(f"`{_cell(key)}`" for key in metrics), *(["reference"] if per_row else [])]
    lines = [
        "# Leaderboard",
        "",
        f"Headline: AutoAttack robust accuracy `{_cell(headline)}`.",
        "Robust accuracies are fractions of the attacked subset as each report states (clean mistakes",
        "count as not robust); clean accuracy is of the whole test split. Masking gap: the paper",
        "protocol's accuracy minus AutoAttack's at the same threat model and eps, in percentage points.",
        "Worst case: per sample, over the main evaluation's attacks at the headline's budget. A run",
        "without the headline attack (a randomized pipeline) shows its AutoAttack at the same budget",
        "(AutoAttack's `rand` version).",
        f"Step cost and DeepFool rho_2 × ref: over {base}.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += [
        "| " + " | ".join(_cells(row) + ([_format(row["reference"], "")] if per_row else [])) + " |"
        for row in rows
    ]
    if not rows:
        lines.append("| " + " | ".join(["(no completed runs)"] + [""] * (len(columns) - 1)) + " |")
    notes = "; ".join(f"`{_cell(row['name'])}`: {_cell(row['note'])}" for row in rows if row.get("note"))
    if notes:
        lines += ["", f"Notes: {notes}."]
    if any(row.get("selected") is not None for row in rows):
        lines += ["", SELECTION_NOTE]
    if incomplete:
        lines += ["", "## Incomplete runs (no results)", ""]
        lines += [
            f"- `{_cell(entry['name'])}`: `lit-robust {entry.get('command')}` did not complete: "
            f"{entry.get('status')}"
            for entry in incomplete
        ]
    return "\n".join(lines) + "\n"


def _cells(row: dict[str, Any]) -> list[str]:
    paper = (
        "n/a"
        if row["paper_attack"] is None
        else f"`{_cell(row['paper_attack'])}`: {_percent(row['paper_acc'])}"
    )
    flags = "n/a" if row["masking_flags"] is None else str(row["masking_flags"])
    if row["masking_failed"]:
        flags += " (" + ", ".join(_cell(name) for name in row["masking_failed"]) + ")"
    gap = "n/a" if row["masking_gap"] is None else f"{100 * row['masking_gap']:+.1f} pp"
    minutes = None if row["train_seconds"] is None else row["train_seconds"] / 60
    chosen = " (selected on val)" if row.get("selected") else ""
    return [
        _cell(row["name"]) + chosen,
        f"{_cell(row['model'])} ({_cell(row['network'])})",
        _percent(row["clean_acc"]),
        _percent(row["headline_acc"]),
        _percent(row["worst_case_acc"]),
        paper,
        gap,
        flags,
        _format(row["median_l2"], ".3g"),
        _format(row["rho2_ratio"], ".2f"),
        _format(row["step_cost"], ".2f"),
        _format(minutes, ".1f"),
        *(_format(value, ".4g") for value in (row.get("metrics") or {}).values()),
    ]


def _percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal (``0.971`` → ``97.1%``), ``n/a`` when unknown."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _format(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------------------------- figures
COLORS = 10  # matplotlib's default colour cycle
LINE_STYLES = ("-", "--", ":", "-.")
ANNOTATED_POINTS = 8  # a scatter of more points numbers them, its legend names them


def eps_points(report: dict[str, Any]) -> dict[str, dict[float, float]]:
    """``{threat model: {eps: lowest accuracy over the run's attacks at that threat model and eps}}``.

    Accuracies come from ``robust_acc`` (AutoAttack's included), else from the gradient-masking
    checks' ``masking["robust_acc/<attack>"]``; attacks without an eps (minimal ones) are left out.
    """
    robust = report.get("robust_acc") or {}
    masking = report.get("masking") or {}
    points: dict[str, dict[float, float]] = defaultdict(dict)
    for attack in _attacks(report):
        eps, threat = _number(attack.get("eps")), attack.get("threat_model")
        name = attack.get("name")
        acc = _number(robust.get(name, masking.get(f"robust_acc/{name}")))
        if eps is None or threat is None or acc is None:
            continue
        key = round(eps, 9)
        points[threat][key] = min(acc, points[threat].get(key, math.inf))
    return dict(points)


def plot_robust_vs_eps(runs: Sequence[Run], out_dir: str | Path) -> dict[str, Path]:
    """One PNG per threat model at which some run has two or more eps, ``robust_vs_eps_<threat>.png``:
    per run, the lowest accuracy over its attacks at each eps; returns ``{file stem: path}``."""

    curves: dict[str, dict[str, dict[float, float]]] = defaultdict(dict)
    for run in runs:
        if run.completed:
            for threat, points in eps_points(run.report).items():
                curves[threat][run.name] = points
    written = {}
    for threat in sorted(curves):
        if max(len(points) for points in curves[threat].values()) < 2:
            continue
        runs_here = sorted(curves[threat].items())
        figure = Figure(figsize=_legend_figsize(len(runs_here)), layout="constrained")
        axes = figure.add_subplot()
        for index, (name, points) in enumerate(runs_here):
            eps = sorted(points)
            style = LINE_STYLES[(index // COLORS) % len(LINE_STYLES)]  # colours repeat: the style differs
            axes.plot(eps, [100 * points[e] for e in eps], marker="o", linestyle=style, label=name)
        axes.set(xlabel=f"eps ({threat})", ylabel="robust accuracy (%)", ylim=(-2, 102))
        axes.set_title(f"{threat}: lowest accuracy over attacks at each eps")
        _legend_beside(axes)
        stem = f"robust_vs_eps_{threat}"
        written[stem] = _save(figure, Path(out_dir) / f"{stem}.png")
    return written


def plot_clean_vs_autoattack(
    rows: Sequence[dict[str, Any]], out_dir: str | Path, headline: str
) -> Path | None:
    """``clean_vs_autoattack.png``: clean (x) against headline accuracy (y) of every row that has both,
    marker area proportional to the step cost (fixed when unknown), each point named; None without points."""

    points = [row for row in rows if row["clean_acc"] is not None and row["headline_acc"] is not None]
    if not points:
        return None
    numbered = len(points) > ANNOTATED_POINTS  # too many names to write beside the points: number them
    figure = Figure(figsize=_legend_figsize(len(points)) if numbered else (6, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for number, row in enumerate(points, 1):
        x, y = 100 * row["clean_acc"], 100 * row["headline_acc"]
        size = 60.0 if row["step_cost"] is None else max(10.0, 60.0 * row["step_cost"])
        label = f"{number}: {row['name']}" if numbered else row["name"]
        axes.scatter([x], [y], s=size, alpha=0.7, label=label)
        text = str(number) if numbered else row["name"]
        axes.annotate(
            text, (x, y), textcoords="offset points", xytext=(5, 5), fontsize="small", annotation_clip=True
        )
    axes.set(xlabel="clean accuracy (%)", ylabel=f"{headline} accuracy (%)", xlim=(-2, 102), ylim=(-2, 102))
    axes.set_title("clean against AutoAttack accuracy (marker area: step cost)")
    if numbered:
        _legend_beside(axes)
    return _save(figure, Path(out_dir) / "clean_vs_autoattack.png")


def _legend_figsize(entries: int) -> tuple[float, float]:
    """Inches for a 6 x 4 plot with a legend of ``entries`` lines beside it (about 0.2 inch a line)."""
    return (10.0, max(4.0, 0.2 * entries + 1.0))


def _legend_beside(axes: Any) -> None:
    """The legend to the right of the plot, outside it, so no curve or point is hidden."""
    legend = axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    for handle in legend.legend_handles:  # a scatter's markers at one size: the area is the plot's
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([40.0])


def _save(figure: Any, path: Path) -> Path:
    """Save ``figure`` as PNG at ``path`` atomically (temporary file beside it, then rename)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        figure.savefig(temporary, format="png", dpi=100)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------------- output


def write_leaderboard(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    headline: str = DEFAULT_HEADLINE,
    reference: str | None = None,
    metrics: Sequence[str] = (),
    references: Mapping[str, str | None] | None = None,
) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``leaderboard.json`` and the figures of the runs of ``paths`` into
    ``out_dir``; returns ``{file stem: path}``. Report paths in the JSON are relative to ``out_dir``;
    ``metrics``: extra columns (logged metric keys); ``reference``, ``references``: the runs each row is
    measured against (see :func:`reference_runs`).

    Raises:
        FileNotFoundError: as :func:`find_reports`.
        ValueError: an unreadable report, or a reference that names no completed run.
    """
    out_dir = Path(out_dir)
    runs = load_runs(paths)
    rows = leaderboard_rows(runs, headline, reference, metrics, references)
    incomplete = incomplete_runs(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"leaderboard": out_dir / "leaderboard.md", "leaderboard_json": out_dir / "leaderboard.json"}
    write_atomic(written["leaderboard"], render_markdown(rows, headline, incomplete, metrics))
    bases = {row["reference"] for row in rows}
    data = {
        "headline": headline,
        "reference": bases.pop() if len(bases) == 1 else None,  # one for every row; else see each row's
        "reports": [_relative(run.path, out_dir) for run in runs],
        "rows": rows,
        "incomplete": incomplete,
    }
    write_atomic(written["leaderboard_json"], json.dumps(data, indent=2, allow_nan=True) + "\n")
    written.update(plot_robust_vs_eps(runs, out_dir))
    scatter = plot_clean_vs_autoattack(rows, out_dir, headline)
    if scatter is not None:
        written["clean_vs_autoattack"] = scatter
    return written


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` where possible (POSIX separators), else absolute."""
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive
        return path.resolve().as_posix()


def main(argv: list[str] | None = None) -> int:
    """``lit-robust compare RUN_OR_REPORT... [--out DIR] [--headline NAME] [--reference NAME]
    [--metric KEY]...``: write the leaderboard, print its table and the paths written; 2 on a missing or
    unreadable input."""
    parser = argparse.ArgumentParser(
        prog="lit-robust compare",
        description="Compare runs: a leaderboard (Markdown, JSON) and figures from their report.json files.",
    )
    parser.add_argument("paths", nargs="+", metavar="RUN_OR_REPORT", help="report.json files or run folders")
    parser.add_argument("--out", default="leaderboard", help="output folder (default: %(default)s)")
    parser.add_argument("--headline", default=DEFAULT_HEADLINE, help="headline attack (default: %(default)s)")
    parser.add_argument(
        "--reference",
        default=None,
        help="run whose step time and DeepFool rho_2 are 1x for every row (default: for each run, the first "
        "StandardTraining run on the same network)",
    )
    parser.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="KEY",
        help="one more column: a metric every report logged, e.g. test/grad_l1_over_l2/input (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        written = write_leaderboard(args.paths, args.out, args.headline, args.reference, args.metric)
    except (FileNotFoundError, ValueError) as error:
        print(f"lit-robust compare: error: {error}", file=sys.stderr)
        return 2
    print(written["leaderboard"].read_text(), end="")
    print()
    for path in written.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
