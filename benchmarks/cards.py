"""Fill each reproduction card's numbers (and the README's leaderboard) from the committed results.

    python benchmarks/cards.py           # rewrite the block between the markers of docs/reproductions/*.md
    python benchmarks/cards.py --check   # exit 1 when a card's numbers differ from the results

Each card (``docs/reproductions/<card>.md``) holds hand-written prose (the paper's claim, the protocol,
the verdict) and one generated block between ``<!-- numbers:begin -->`` and ``<!-- numbers:end -->``:
a table of its rows from ``benchmarks/results/mnist_sample/<row>/report.json`` and ``row.json``, with
the command behind every number. A row not run yet says so, with the command that runs it. The GFA card
has a second block, the GFA study's rows (``gfa_study_card.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gfa_study_card
import yaml
from leaderboard_rows import ROWS, references

from lit_robust.leaderboard import leaderboard_rows, load_runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mnist_sample"
CARDS = ROOT / "docs" / "reproductions"
BEGIN, END = "<!-- numbers:begin -->", "<!-- numbers:end -->"
README = ROOT / "README.md"
README_BEGIN, README_END = "<!-- leaderboard:begin -->", "<!-- leaderboard:end -->"
HEADLINE = "autoattack_linf_0.3"
SELECTION = ROOT / "benchmarks" / "leaderboard" / "select.yaml"  # how a sweep's point is chosen
VALIDATION_DIGITS = yaml.safe_load(SELECTION.read_text())["robustness"]["num_samples"]

# card -> the leaderboard rows it cites (benchmarks/leaderboard_rows.py)
SWEEP = {
    "gfa": ["gfa_lam0.1", "gfa_lam1", "gfa_lam10"],
    "input_gradient": ["input_gradient_lam0.1", "input_gradient_lam1", "input_gradient_lam10"],
    "flow_gradient": ["flow_gradient_lam0.44", "flow_gradient_lam4.4", "flow_gradient_lam44"],
    "local_flatness": ["local_flatness_k5_lam0.002", "local_flatness_k5_lam0.02", "local_flatness_k5_lam0.2"],
    "deep_defense": ["deep_defense_lam1.5", "deep_defense_lam15", "deep_defense_lam150"],
}
CARD_ROWS: dict[str, list[str]] = {
    "pgd_at": ["standard", "pgd_at", "fgsm_rs"],
    "trades": ["standard", "pgd_at", "trades"],
    "gfa": ["standard", *SWEEP["gfa"], "gfa_pgd_at", "pgd_at"],
    "deep_defense": ["standard", *SWEEP["deep_defense"]],
    "flow_gradient": [
        "standard",
        *SWEEP["flow_gradient"],
        "flow_gradient_pgd_at",
        *SWEEP["input_gradient"],
        "input_gradient_pgd_at",
        "input_gradient_trades",
        "pgd_at",
    ],  # fmt: skip
    "wnll_tvm": ["standard", "wnll", "wnll_tvm", "wnll_pgd_at", "pgd_at"],
    "local_flatness": [
        "standard",
        *SWEEP["local_flatness"],
        "local_flatness_k40",
        "local_flatness_k5_pgd_at",
        "local_flatness_k5_trades",
        "pgd_at",
    ],  # fmt: skip
}
COLUMNS = {  # header -> robust_acc key
    "AutoAttack Linf 0.3 (500)": "autoattack_linf_0.3",
    "AutoAttack Linf 0.1 (200)": "autoattack_linf_0.1",
    "AutoAttack L2 2.0 (200)": "autoattack_l2_2",
    "flow-PGD 0.5 px (200)": "flow_pgd_0.5px",
}


def digits_of(accuracy: float) -> str:
    """A validation accuracy as ``1.25% (5 of 400)``: the digits it rests on."""
    return f"{100 * accuracy:.2f}% ({round(accuracy * VALIDATION_DIGITS)} of {VALIDATION_DIGITS})"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def row_cells(name: str, results: Path = RESULTS) -> list[str] | None:
    """The table cells of row ``name`` from its committed results, or None when it has none yet."""
    folder = results / name
    if not (folder / "report.json").is_file() or not (folder / "row.json").is_file():
        return None
    report, record = (json.loads((folder / f).read_text()) for f in ("report.json", "row.json"))
    robust: dict[str, float] = report.get("robust_acc") or {}
    paper = ", ".join(f"`{k}` {percent(v)}" for k, v in robust.items() if k.endswith("_paper")) or "-"
    masking = report.get("masking") or {}
    failed = [k.removesuffix("_flag") for k, v in masking.items() if k.endswith("_flag") and v]
    deepfool = next(
        (v for k, v in (report.get("minimal_perturbation") or {}).items() if k.startswith("deepfool")), {}
    )
    selected = {True: " (selected)", False: ""}.get(record.get("selected"), "")
    return [
        f"[`{name}`]({Path('../../benchmarks/results/mnist_sample') / name / 'report.md'}){selected}",
        percent(report.get("clean_acc")),
        *(percent(robust.get(key)) for key in COLUMNS.values()),
        paper,
        f"{int(masking.get('flags', 0))}" + (f" ({', '.join(failed)})" if failed else ""),
        "n/a" if not deepfool else f"{deepfool.get('median_l2', float('nan')):.3g}",
    ]


def sweep_points(card: str) -> list[str]:
    """The card's rows that are points of a weight sweep (any sweep: the flow-gradient card cites the
    input-gradient sweep too)."""
    points = {name for names in SWEEP.values() for name in names}
    return [name for name in CARD_ROWS[card] if name in points]


def sweep_lines(card: str, results: Path = RESULTS) -> list[str]:
    """The card's weight sweeps: each point's validation worst case, which one was chosen, and which
    were scored on test (the chosen point and the paper's setting); ``[]`` without a validated point."""
    records = {}
    for name in sweep_points(card):
        path = results / name / "row.json"
        if path.is_file():
            records[name] = json.loads(path.read_text())
    if not records:
        return []
    lines = [
        "",
        f"Weight sweeps: each sweep's point is chosen on the {VALIDATION_DIGITS} validation digits by the "
        "APGD-CE + APGD-T worst case at Linf 0.3 (never on test); only that point and the paper's setting "
        f"are scored on test. One digit is {100 / VALIDATION_DIGITS:.2f} points, and at 1% the binomial "
        f"standard error is {100 * (0.01 * 0.99 / VALIDATION_DIGITS) ** 0.5:.1f} points: a choice between "
        "points a few digits apart is within noise.",
        "",
        "| point | validation worst case | chosen | paper's setting | scored on test |",
        "|---|---|---|---|---|",
    ]
    for name, record in records.items():
        chosen = {True: "yes", False: "no"}.get(record.get("selected"), "waits for the sweep")
        paper = "yes" if "paper_setting" in record.get("tags", []) else "no"
        tested = "yes" if record.get("tested", True) else "no"
        lines.append(
            f"| `{name}` | {digits_of(record['validation_worst_case_acc'])} | {chosen} | {paper} | {tested} |"
        )
    return lines


def numbers_block(card: str, results: Path = RESULTS) -> str:
    """The generated block of ``card``: the table, the sweep, the commands, the rows still to run."""
    header = ["row", "clean (1,000)", *COLUMNS, "paper protocol (500)", "masking flags", "DeepFool median L2"]
    lines = [BEGIN, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    missing = []
    for name in CARD_ROWS[card]:
        cells = row_cells(name, results)
        if cells is None:
            if name not in sweep_points(card) or not (results / name / "row.json").is_file():
                missing.append(name)  # a validated sweep point is in sweep_lines
        else:
            lines.append("| " + " | ".join(cells) + " |")
    lines += sweep_lines(card, results)
    lines += [
        "",
        "Each row: SmallCNN on the embedded MNIST sample (3,600 training digits, not full MNIST), scored by "
        "`configs/eval/leaderboard_mnist.yaml` plus the paper's attacks (`_paper`); sample sizes in the "
        "header. "
        "The commands behind each row (fit, selection, test) are in its `row.json`; "
        "`python benchmarks/leaderboard.py <row>` reruns it.",
    ]
    if missing:
        lines += ["", "Not run yet: " + ", ".join(f"`{m}`" for m in missing)
                  + f" (`python benchmarks/leaderboard.py {' '.join(missing)}`)."]  # fmt: skip
    return "\n".join([*lines, "", END])


def render(card: str, text: str, results: Path = RESULTS) -> str:
    """``text`` with its numbers block regenerated.

    Raises:
        ValueError: the card lacks the two markers.
    """
    if BEGIN not in text or END not in text:
        raise ValueError(f"{card}.md has no {BEGIN} ... {END} block")
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    return before + numbers_block(card, results) + after


def readme_block(results: Path = RESULTS) -> str:
    """The README's leaderboard block: the headline columns of every finished row, best first."""
    reports = sorted(results.glob("*/report.json"))
    rows = (
        leaderboard_rows(load_runs(reports), HEADLINE, references=references(ROWS, reports))
        if reports
        else []
    )
    header = [
        "row",
        "defense",
        "clean",
        "AutoAttack Linf 0.3",
        "paper protocol",
        "masking flags",
        "step cost ×",
    ]
    lines = [README_BEGIN, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        paper = "-" if row["paper_attack"] is None else f"{percent(row['paper_acc'])} `{row['paper_attack']}`"
        flags = "n/a" if row["masking_flags"] is None else str(row["masking_flags"])
        cost = "n/a" if row["step_cost"] is None else f"{row['step_cost']:.1f}"
        name = f"`{row['name']}`" + (" (selected on val)" if row.get("selected") else "")
        cells = [
            name,
            row["model"],
            percent(row["clean_acc"]),
            percent(row["headline_acc"]),
            paper,
            flags,
            cost,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = "; ".join(f"`{row['name']}`: {row['note']}" for row in rows if row.get("note"))
    if notes:
        lines += ["", f"Notes: {notes}."]
    records = [json.loads(path.read_text()) for path in results.glob("*/row.json")]
    untested = sum(
        1 for record in records if not record.get("tested", True) and record.get("selected") is False
    )
    validated = f"; {untested} sweep points validated only (neither chosen nor the paper's setting)"
    total = (
        f"{len(rows)} of {len(ROWS)} rows scored{validated if untested else ''} (every column: "
        "`benchmarks/results/mnist_sample/leaderboard.md`; the rows still to run: "
        "`python benchmarks/leaderboard.py --list`)."
    )
    return "\n".join([*lines, "", total, "", README_END])


def update_readme(results: Path = RESULTS, write: bool = True) -> list[Path]:
    """Regenerate the README's leaderboard block; ``[README]`` when it changed (written if ``write``)."""
    text = README.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"README.md has no {README_BEGIN} ... {README_END} block")
    before, rest = text.split(README_BEGIN, 1)
    updated = before + readme_block(results) + rest.split(README_END, 1)[1]
    if updated == text:
        return []
    if write:
        README.write_text(updated)
    return [README]


def update_cards(results: Path = RESULTS, write: bool = True) -> list[Path]:
    """Regenerate every card's numbers (and the README's leaderboard block) from ``results``; the
    files that changed (written if ``write``)."""
    stale = update_readme(results, write)
    for card in CARD_ROWS:
        path = CARDS / f"{card}.md"
        text = path.read_text()
        updated = render(card, text, results)
        if card == "gfa":  # and the study's block (benchmarks/results/gfa_study)
            updated = gfa_study_card.render(updated)
        if updated != text:
            stale.append(path)
            if write:
                path.write_text(updated)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale cards, write nothing")
    args = parser.parse_args(argv)
    stale = [path.name for path in update_cards(write=not args.check)]
    if args.check and stale:
        print(f"stale cards (run python benchmarks/cards.py): {stale}", file=sys.stderr)
        return 1
    print(("stale: " if args.check else "updated: ") + (", ".join(stale) or "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
