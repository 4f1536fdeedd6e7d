"""The GFA card's study block: every scored row of the GFA study, from its committed reports.

``docs/reproductions/gfa.md`` holds a generated block between ``<!-- study:begin -->`` and
``<!-- study:end -->`` (``python benchmarks/cards.py`` rewrites it with the other cards' blocks,
``--check`` reports it stale): one line per scored row of ``benchmarks/results/gfa_study/``, grouped by
network in the study's order, each next to the standard run on the same network; then how many rows
are scored, which the screen pruned and the command that runs the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gfa_study_rows import NETWORKS, STUDY_ROWS
from leaderboard_rows import references

from lit_robust.leaderboard import leaderboard_rows, load_runs

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "benchmarks" / "results" / "gfa_study"
BEGIN, END = "<!-- study:begin -->", "<!-- study:end -->"
HEADLINE = "autoattack_linf_0.3"
RATIO, ABS_COS, COS = "test/grad_l1_over_l2/input", "test/gfa_abs_cos/input", "test/gfa_cos/input"
COMMAND = "python benchmarks/leaderboard.py --table gfa_study --commit"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def cells(row: dict[str, Any], robust: dict[str, float], network: str) -> list[str]:
    """One table line: clean, AutoAttack, the APGD pair at Linf 0.1, FGSM, flags, DeepFool, gradient shape."""
    failed = f" ({', '.join(row['masking_failed'])})" if row["masking_failed"] else ""
    flags = "n/a" if row["masking_flags"] is None else f"{row['masking_flags']}{failed}"
    apgd = f"{percent(robust.get('apgd_ce_linf_0.1'))} / {percent(robust.get('apgd_t_linf_0.1'))}"
    metrics = row["metrics"]
    return [
        network,
        f"[`{row['name']}`]({Path('../../benchmarks/results/gfa_study') / row['name'] / 'report.md'})",
        percent(row["clean_acc"]),
        percent(row["headline_acc"]),
        apgd,
        percent(robust.get("fgsm_linf_0.3_paper")),
        flags,
        number(row["median_l2"], ".3g"),
        number(row["rho2_ratio"], ".2f"),
        number(metrics.get(RATIO), ".2f"),
        number(metrics.get(COS), "+.3f"),
    ]


def study_block(results: Path = STUDY) -> str:
    """The generated block: the table of scored rows, the count, the pruned rows and the command."""
    header = [
        "network", "row", "clean (1,000)", "AutoAttack Linf 0.3", "APGD-CE / APGD-T Linf 0.1",
        "FGSM Linf 0.3 (paper)", "masking flags", "DeepFool median L2", "DeepFool rho_2 × standard",
        "‖g‖₁ / ‖g‖₂ (input)", "cos(g, x − c) (input)",
    ]  # fmt: skip
    lines = [BEGIN, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    reports = sorted(results.glob("*/report.json"))
    runs = {run.name: run for run in load_runs(reports)} if reports else {}
    rows = {}
    if runs:
        metrics = (RATIO, ABS_COS, COS)
        found = leaderboard_rows(
            list(runs.values()), HEADLINE, metrics=metrics, references=references(STUDY_ROWS, reports)
        )
        rows = {row["name"]: row for row in found}
    order = {network: index for index, network in enumerate(NETWORKS)}
    table = sorted(
        STUDY_ROWS, key=lambda r: order[r.reference.removesuffix("_standard")]
    )  # stable: study order
    for study_row in table:
        if study_row.name in rows:
            network = study_row.reference.removesuffix("_standard")
            robust = runs[study_row.name].report.get("robust_acc") or {}
            lines.append("| " + " | ".join(cells(rows[study_row.name], robust, network)) + " |")
    pruned = [(row.name, row.screen(results)) for row in STUDY_ROWS if row.name not in rows and row.screen]
    pruned = [(name, why) for name, why in pruned if why and not why.startswith("waits")]
    lines += [
        "",
        f"{len(rows)} of {len(STUDY_ROWS)} rows scored, {len(pruned)} pruned by the screen "
        f"(`benchmarks/gfa_study_rows.py`, `WeightScreen`); the rest: `{COMMAND}` (`--list` shows each "
        "row's state). Each row: the embedded MNIST sample, 20 epochs, inputs in [-1, 1], scored by "
        "`configs/eval/paper_gfa_mnist.yaml` on 200 test digits (clean accuracy on all 1,000); c = 0.5, the "
        "input center; DeepFool rho_2 relative to the standard row on the same network; its commands are in "
        "its `row.json`.",
    ]
    if pruned:
        lines += ["", "Pruned: " + "; ".join(f"`{name}` ({why})" for name, why in pruned) + "."]
    return "\n".join([*lines, "", END])


def render(text: str, results: Path = STUDY) -> str:
    """``text`` (the GFA card) with its study block regenerated.

    Raises:
        ValueError: the card lacks the two markers.
    """
    if BEGIN not in text or END not in text:
        raise ValueError(f"gfa.md has no {BEGIN} ... {END} block")
    before, rest = text.split(BEGIN, 1)
    return before + study_block(results) + rest.split(END, 1)[1]
