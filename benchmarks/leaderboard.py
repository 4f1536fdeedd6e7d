"""The robustness leaderboard on the embedded MNIST sample: train every row, score it by one protocol.

    python benchmarks/leaderboard.py                 # every row of benchmarks/leaderboard_rows.py, in order
    python benchmarks/leaderboard.py pgd_at trades   # only these rows
    python benchmarks/leaderboard.py --list          # rows and their state
    python benchmarks/leaderboard.py --smoke --out /tmp/lb   # two rows, tiny budgets (the test suite runs it)

Each row is three ``lit-robust`` commands, printed and logged as they run (the exact commands behind
its numbers, also kept in its ``row.json``):

1. ``fit`` (the row's configs on the matched budget ``benchmarks/leaderboard/budget.yaml``) into
   ``<runs>/<row>/fit``; an interrupted fit resumes from its ``last.ckpt``;
2. for a weight sweep (a row ``group``), ``validate`` with APGD-CE + APGD-T at Linf 0.3 on the 400
   validation digits: the group's point is the best worst case there, never chosen on test;
3. ``test`` with ``configs/eval/leaderboard_mnist.yaml`` plus the paper's attacks (``eval.yaml``).
An evaluation-only row (``scores``: WNLL + TVM) runs only the ``test``, of its source row's trained
network under its own protocol; it shares the source's fit key and waits for the source row.

Results go to ``<out>/<row>/``: ``report.md``, ``report.json``, ``weights.safetensors`` (the network's
final state dict; it reproduces the scored logits exactly), ``config.yaml`` and ``eval.yaml`` (re-score
without training: ``lit-robust test --config config.yaml --config eval.yaml --model.init_args.init_from
weights.safetensors``) and ``row.json`` (the cache entry: the row's config key, the code version, the
commands, timings, threads and versions). A re-run skips every row whose ``row.json`` has the same
config key; a changed config retrains that row. After every row the leaderboard (``lit-robust compare``)
is rewritten; ``--commit`` commits each finished row's folder at once, so a long run can stop anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_robust.leaderboard import write_leaderboard
from lit_robust.loading import load_file, save_safetensors
from lit_robust.report import PACKAGES, _version

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cards import update_cards  # noqa: E402
from gfa_study_rows import STUDY_ROWS  # noqa: E402
from leaderboard_rows import LEADERBOARD, ROWS, SMOKE_ROWS, Row  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = "configs/data/mnist_sample.yaml"
BUDGET = f"{LEADERBOARD}/budget.yaml"
SELECTION = f"{LEADERBOARD}/select.yaml"
SELECTION_METRIC = "val/worst_case_acc"
HEADLINE = "autoattack_linf_0.3"
TABLES = {  # name -> (rows, results folder, training logs)
    "leaderboard": (ROWS, "benchmarks/results/mnist_sample", "runs/leaderboard"),
    "gfa_study": (STUDY_ROWS, "benchmarks/results/gfa_study", "runs/gfa_study"),
    "smoke": (SMOKE_ROWS, "runs/leaderboard_smoke/results", "runs/leaderboard_smoke/runs"),
}
# extra columns of a table: metrics its protocol logs (the GFA study: issue 14's derivation, FIRST tap)
TABLE_METRICS = {"gfa_study": ("test/grad_l1_over_l2/input", "test/gfa_abs_cos/input", "test/gfa_cos/input")}


# ----------------------------------------------------------------------------------- commands
def lit_robust(*args: str) -> list[str]:
    """The ``lit-robust`` command line (the venv's console script next to this Python)."""
    return [str(Path(sys.executable).with_name("lit-robust")), *args]


def shown(command: list[str]) -> str:
    """``command`` as a user types it in the repository root: ``lit-robust ...``, relative paths."""
    words = ["lit-robust", *command[1:]]
    return " ".join(word.replace(f"{ROOT}/", "") for word in words)


def config_args(*configs: str | Path) -> list[str]:
    return [arg for config in configs for arg in ("--config", str(config))]


def relative(path: Path) -> str:
    """``path`` relative to the repository root when inside it (what a committed config should hold)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def logger_args(runs: Path, row: str, version: str) -> list[str]:
    """Logs of ``row``'s ``version`` (``fit``, ``select``, ``test``) in ``<runs>/<row>/<version>``."""
    return [
        f"--trainer.logger.init_args.save_dir={relative(runs)}",
        f"--trainer.logger.init_args.name={row}",
        f"--trainer.logger.init_args.version={version}",
    ]


def fit_configs(row: Row, smoke: bool) -> list[str]:
    """The data, the row's configs, the budget, the row's own schedule (and the smoke budget)."""
    return [DATA, *row.configs, BUDGET, *row.schedule] + ([f"{LEADERBOARD}/smoke.yaml"] if smoke else [])


def fit_command(row: Row, runs: Path, out: Path, smoke: bool) -> list[str]:
    configs = fit_configs(row, smoke)
    command = lit_robust("fit", *config_args(*configs), *row.overrides, *logger_args(runs, row.name, "fit"))
    if row.fine_tune_from:
        command.append(
            f"--model.init_args.init_from={relative(out / row.fine_tune_from / 'weights.safetensors')}"
        )
    last = runs / row.name / "fit" / "checkpoints" / "last.ckpt"
    return command + ([f"--ckpt_path={relative(last)}"] if last.is_file() else [])


def eval_config(row: Row, smoke: bool) -> dict[str, Any]:
    """The row's protocol (or the smoke protocol) with its paper attacks added to the main evaluation:
    on the headline's digits, so the masking gap compares the two on the same points."""
    smoke_protocol = smoke and row.scores is None  # an evaluation-only row's protocol is its point
    protocol = yaml.safe_load(
        (ROOT / (f"{LEADERBOARD}/smoke_eval.yaml" if smoke_protocol else row.protocol)).read_text()
    )
    protocol["robustness"]["attacks"] += [dict(paper) for paper in row.paper_attacks]
    return protocol


# ----------------------------------------------------------------------------------- caching
def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def fit_key(row: Row, smoke: bool) -> str:
    """A hash of what the row's training depends on (besides library code): the row's training
    fields and the contents of its fit configs. A changed protocol re-scores; it never retrains."""
    payload = {  # an evaluation-only row has its source's training fields, so its source's key
        "row": [row.scores or row.name, row.configs, row.overrides, row.schedule, row.fine_tune_from],
        "files": {name: (ROOT / name).read_text() for name in fit_configs(row, smoke)},
    }
    return digest(payload)


def config_key(row: Row, smoke: bool) -> str:
    """A hash of everything the row's numbers depend on that is not library code: its training
    (:func:`fit_key`), its selection and its protocol."""
    selection = (ROOT / SELECTION).read_text() if row.group else None
    return digest({"fit": fit_key(row, smoke), "selection": selection, "eval": eval_config(row, smoke)})


def code_version() -> str:
    """``<commit>`` of the checkout, ``+dirty`` when ``lit_robust/`` has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "lit_robust", "configs", LEADERBOARD) else "")


def finished(row: Row, out: Path, key: str) -> bool:
    path = out / row.name / "row.json"
    return path.is_file() and json.loads(path.read_text()).get("config_key") == key


# ----------------------------------------------------------------------------------- running
def run(command: list[str], log: Path) -> float:
    """Run ``command`` in the repository root, appending its output to ``log``; seconds taken.

    Raises:
        RuntimeError: the command failed (the message holds the end of its output).
    """
    started = time.perf_counter()
    with open(log, "a") as file:
        file.write("\n$ " + " ".join(command) + "\n")
        file.flush()
        code = subprocess.run(command, cwd=ROOT, stdout=file, stderr=subprocess.STDOUT).returncode
    if code:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"exit code {code}: {' '.join(command[:2])} ...\n{tail}")
    return time.perf_counter() - started


def export_weights(checkpoint: Path, target: Path) -> dict[str, Any]:
    """The network's state dict of ``checkpoint`` as ``target`` (.safetensors); its training progress."""
    state = load_file(checkpoint, "checkpoint")
    prefix = "network."
    weights = {k.removeprefix(prefix): v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    save_safetensors(weights, target)
    return state.get("training_progress") or {}


def selection_score(log_dir: Path) -> float:
    """The last ``val/worst_case_acc`` the selection run logged under ``log_dir``."""
    values = []
    for event_file in sorted(log_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        if SELECTION_METRIC in accumulator.Tags()["scalars"]:
            values += [event.value for event in accumulator.Scalars(SELECTION_METRIC)]
    if not values:
        raise RuntimeError(f"the selection run logged no {SELECTION_METRIC} under {log_dir}")
    return float(values[-1])


def train(row: Row, runs: Path, out: Path, smoke: bool, log: Path) -> tuple[list[str], float]:
    """Train (or resume) ``row`` into ``<runs>/<row>/fit``, unless that fit is finished: its command
    and the seconds it took now (0 when it was done before)."""
    work = runs / row.name
    stamp, done = work / "fit.key", work / "fit.done"  # the fit key the fit trains; it finished
    trained = fit_key(row, smoke)
    if stamp.is_file() and stamp.read_text() != trained:
        shutil.rmtree(work / "fit", ignore_errors=True)  # begun or trained by another config: start again
        done.unlink(missing_ok=True)
    stamp.write_text(trained)
    fit = fit_command(row, runs, out, smoke)
    fit_seconds = run(fit, log) if not done.is_file() else 0.0
    done.touch()
    return fit, fit_seconds


def check_trained(row: Row, runs: Path, smoke: bool) -> None:
    """An evaluation-only row scores its source row's finished fit of the same key.

    Raises:
        RuntimeError: the source row has not been trained (by this fit key) yet.
    """
    work = runs / row.scores
    stamp, done = work / "fit.key", work / "fit.done"
    if not (done.is_file() and stamp.is_file() and stamp.read_text() == fit_key(row, smoke)):
        raise RuntimeError(f"{row.name} scores the network of row {row.scores!r}: run that row first")


def run_row(row: Row, runs: Path, out: Path, smoke: bool, key: str) -> dict[str, Any]:
    """Train (or resume), select and score ``row``; write its results folder; its ``row.json``. An
    evaluation-only row (``row.scores``) trains nothing: it scores its source row's network."""
    version = code_version()  # the code its commands start with, not what is checked out at the end
    folder, work = out / row.name, runs / row.name
    folder.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    commands = {}
    fit_seconds = 0.0
    if row.scores is None:
        commands["fit"], fit_seconds = train(row, runs, out, smoke, log)
    else:
        check_trained(row, runs, smoke)
    trained_by = runs / (row.scores or row.name)
    last = trained_by / "fit" / "checkpoints" / "last.ckpt"
    progress = export_weights(last, folder / "weights.safetensors")
    shutil.copyfile(trained_by / "fit" / "config.yaml", folder / "config.yaml")
    (folder / "eval.yaml").write_text(yaml.safe_dump(eval_config(row, smoke), sort_keys=False))
    score = None
    if row.group:
        select = lit_robust(
            "validate", *config_args(relative(folder / "config.yaml"), SELECTION),
            f"--ckpt_path={relative(last)}", *logger_args(runs, row.name, "select"),
        )  # fmt: skip
        shutil.rmtree(work / "select", ignore_errors=True)
        run(select, log)
        score, commands["select"] = selection_score(work / "select"), select
    test = lit_robust(
        "test", *config_args(relative(folder / "config.yaml"), relative(folder / "eval.yaml")),
        f"--ckpt_path={relative(last)}",
        *logger_args(runs, row.name, "test"),
    )  # fmt: skip
    shutil.rmtree(work / "test", ignore_errors=True)
    test_seconds = run(test, log)
    commands["test"] = test
    for name in ("report.json", "report.md"):
        shutil.copyfile(work / "test" / name, folder / name)
    record = {
        "name": row.name,
        "group": row.group,
        "scores": row.scores,
        "tags": list(row.tags),
        "note": row.note,
        "config_key": key,
        "code_version": version,
        "smoke": smoke,
        "commands": {step: shown(command) for step, command in commands.items()},
        "validation_worst_case_acc": score,
        "train_seconds": progress.get("train_seconds"),
        "global_step": progress.get("global_step"),
        "fit_wall_seconds": round(fit_seconds, 1),
        "test_wall_seconds": round(test_seconds, 1),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "versions": {name: _version(name) for name in PACKAGES},
    }
    (folder / "row.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def mark_selected(rows: list[Row], out: Path) -> None:
    """In every finished sweep, mark the row with the best validation worst case ``selected``
    (ties: the first listed); unfinished sweeps get no mark."""
    groups: dict[str, list[Path]] = {}
    for row in rows:
        if row.group:
            groups.setdefault(row.group, []).append(out / row.name / "row.json")
    for paths in groups.values():
        if not all(path.is_file() for path in paths):
            continue
        records = [json.loads(path.read_text()) for path in paths]
        best = max(range(len(records)), key=lambda i: (records[i]["validation_worst_case_acc"], -i))
        for i, (path, record) in enumerate(zip(paths, records, strict=True)):
            record["selected"] = i == best
            path.write_text(json.dumps(record, indent=2) + "\n")


def commit(paths: list[Path], message: str) -> None:
    """``git add`` and commit only ``paths`` (anything else staged stays staged), retrying on a lock."""
    names = [str(path.relative_to(ROOT)) for path in paths if path.exists()]
    for _ in range(5):
        added = subprocess.run(["git", "add", "--", *names], cwd=ROOT, capture_output=True)
        committed = subprocess.run(["git", "commit", "-q", "-m", message, "--", *names], cwd=ROOT)
        if added.returncode == 0 and committed.returncode in (0, 1):  # 1: nothing changed
            return
        time.sleep(5)
    print(f"  could not commit {names}", file=sys.stderr)


# ----------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="*", help="row names (default: all, in order)")
    parser.add_argument("--out", type=Path, help="results (default benchmarks/results/mnist_sample)")
    parser.add_argument("--runs", type=Path, default=None, help="training logs (default runs/leaderboard)")
    parser.add_argument("--smoke", action="store_true", help="two rows on tiny budgets")
    parser.add_argument(
        "--table",
        choices=list(TABLES),
        default="leaderboard",
        help="which rows: the leaderboard or the GFA study",
    )
    parser.add_argument("--list", action="store_true", help="print the rows and their state, run nothing")
    parser.add_argument("--commit", action="store_true", help="git-commit each row's results when done")
    args = parser.parse_args(argv)
    table, default_out, default_runs = TABLES["smoke" if args.smoke else args.table]
    out, runs = (args.out or ROOT / default_out).resolve(), (args.runs or ROOT / default_runs).resolve()
    unknown = sorted(set(args.rows) - {row.name for row in table})
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {[row.name for row in table]}")
    chosen = [row for row in table if not args.rows or row.name in args.rows]
    keys = {row.name: config_key(row, args.smoke) for row in chosen}
    if args.list:
        for row in chosen:
            print(f"{row.name:32s} {'done' if finished(row, out, keys[row.name]) else 'to run'}  {row.note}")
        return 0
    failures = []
    started = time.perf_counter()
    for index, row in enumerate(chosen, 1):
        prefix = f"[{index}/{len(chosen)}] {row.name}"
        if finished(row, out, keys[row.name]):
            print(f"{prefix}: finished earlier (config key {keys[row.name]}), skipped", flush=True)
            continue
        print(f"{prefix}: running (log: {runs / row.name / 'commands.log'})", flush=True)
        row_started = time.perf_counter()
        try:
            record = run_row(row, runs, out, args.smoke, keys[row.name])
        except (RuntimeError, OSError) as error:
            print(f"{prefix}: FAILED: {error}", file=sys.stderr, flush=True)
            failures.append(row.name)
            continue
        minutes, total = (time.perf_counter() - row_started) / 60, (time.perf_counter() - started) / 60
        timing = f"fit {record['fit_wall_seconds']:.0f} s, test {record['test_wall_seconds']:.0f} s"
        print(f"{prefix}: done in {minutes:.1f} min ({timing}; {total:.1f} min so far)", flush=True)
        mark_selected(table, out)
        reports = sorted(out.glob("*/report.json"))
        metrics = TABLE_METRICS.get(args.table, ())
        written = list(write_leaderboard(reports, out, headline=HEADLINE, metrics=metrics).values())
        if args.table == "leaderboard" and not args.smoke:  # the cards cite the leaderboard's results
            written += update_cards(out)
        if args.commit:
            message = f"Leaderboard row {row.name} (config {keys[row.name]})"
            commit([out / row.name, *written], message)
    if failures:
        print(f"{len(failures)} row(s) failed: {failures}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
