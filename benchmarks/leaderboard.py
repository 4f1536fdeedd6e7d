"""The robustness leaderboard on the embedded MNIST sample: train every row, score it by one protocol.

    python benchmarks/leaderboard.py                 # every row of benchmarks/leaderboard_rows.py, in order
    python benchmarks/leaderboard.py pgd_at trades   # only these rows
    python benchmarks/leaderboard.py --list          # rows and their state
    python benchmarks/leaderboard.py --validate-only # train and validate every sweep point, test nothing
    python benchmarks/leaderboard.py --smoke --out /tmp/lb   # five tiny rows (the test suite runs it)

Each row is three ``lit-robust`` commands, printed and logged as they run (the exact commands behind
its numbers, also kept in its ``row.json``):

1. ``fit`` (the row's configs on the matched budget ``benchmarks/leaderboard/budget.yaml``) into
   ``<runs>/<row>/fit``; an interrupted fit resumes from its ``last.ckpt``;
2. for a weight sweep (a row ``group``), ``validate`` with APGD-CE + APGD-T at Linf 0.3 on the 400
   validation digits: the group's point is the best worst case there, never chosen on test;
3. ``test`` with ``configs/eval/leaderboard_mnist.yaml`` plus the paper's attacks (``eval.yaml``). A
   sweep scores on test only its selected point and its paper's (or spec's) setting, once every point
   of it is validated: a point that is neither keeps its validation score and weights, untested (the
   protocol costs 20-90 min a row on 2 cores; selection never looks at test, so nothing else needs it).
An evaluation-only row (``scores``: WNLL + TVM) runs only the ``test``, of its source row's trained
network under its own protocol; it shares the source's fit key and waits for the source row.

Results go to ``<out>/<row>/``: ``report.md``, ``report.json``, ``weights.safetensors`` (the network's
final state dict; it reproduces the scored logits exactly), ``config.yaml`` and ``eval.yaml`` (re-score
without training: ``lit-robust test --config config.yaml --config eval.yaml --model.init_args.init_from
weights.safetensors``) and ``row.json`` (the cache entry: the row's config key, the code version, the
commands, timings, threads and versions). A re-run skips every row whose ``row.json`` has the same
config key; a changed config retrains that row. After every row the leaderboard (``lit-robust compare``)
is rewritten; ``--commit`` commits each finished row's folder at once, so a long run can stop anywhere:
Ctrl-C or SIGTERM (``pkill -f benchmarks/leaderboard.py``) stops the running command with it, and a
re-run resumes (an interrupted fit from its ``last.ckpt``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_robust.leaderboard import write_leaderboard
from lit_robust.loading import load_file, save_safetensors
from lit_robust.report import PACKAGES, _version

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cards import update_cards  # noqa: E402
from gfa_study_rows import CIFAR10_STUDY_ROWS, STUDY_ROWS  # noqa: E402
from leaderboard_rows import LEADERBOARD, ROWS, SMOKE_ROWS, Row, references  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SELECTION = f"{LEADERBOARD}/select.yaml"
SMOKE_SELECTION = f"{LEADERBOARD}/smoke_select.yaml"
SELECTION_METRIC = "val/worst_case_acc"
HEADLINE = "autoattack_linf_0.3"
TABLES = {  # name -> (rows, results folder, training logs)
    "leaderboard": (ROWS, "benchmarks/results/mnist_sample", "runs/leaderboard"),
    "gfa_study": (STUDY_ROWS, "benchmarks/results/gfa_study", "runs/gfa_study"),
    "gfa_study_cifar10": (
        CIFAR10_STUDY_ROWS,
        "benchmarks/results/gfa_study_cifar10",
        "runs/gfa_study_cifar10",
    ),
    "smoke": (SMOKE_ROWS, "runs/leaderboard_smoke/results", "runs/leaderboard_smoke/runs"),
}
# the leaderboard's full-scale rows, which this machine cannot run
CIFAR10, IMAGENET = "the CIFAR-10 files and a GPU", "the ImageNet files and GPUs"
FULL_SCALE = {  # configs/experiments/<name>.yaml -> what it needs
    "cifar10_standard_preactresnet18": CIFAR10,
    "cifar10_adversarial_training_preactresnet18": CIFAR10,
    "cifar10_trades_wrn34_10": CIFAR10,
    "cifar10_wnll_resnet20": CIFAR10,
    "cifar10_deep_defense_convnet": CIFAR10,
    "imagenet_standard_resnet50": IMAGENET,
}
assert all((ROOT / f"configs/experiments/{name}.yaml").is_file() for name in FULL_SCALE), FULL_SCALE
# extra columns of a table: metrics its protocol logs (the GFA study: issue 14's derivation, FIRST tap)
GFA_METRICS = ("test/grad_l1_over_l2/input", "test/gfa_abs_cos/input", "test/gfa_cos/input")
TABLE_METRICS = {"gfa_study": GFA_METRICS, "gfa_study_cifar10": GFA_METRICS}


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
    return [row.data, *row.configs, row.budget, *row.schedule] + (
        [f"{LEADERBOARD}/smoke.yaml"] if smoke else []
    )


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
    selection = (ROOT / selection_config(smoke)).read_text() if row.group else None
    return digest({"fit": fit_key(row, smoke), "selection": selection, "eval": eval_config(row, smoke)})


def code_version() -> str:
    """``<commit>`` of the checkout, ``+dirty`` when ``lit_robust/`` has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "lit_robust", "configs", LEADERBOARD) else "")


def selection_config(smoke: bool) -> str:
    return SMOKE_SELECTION if smoke else SELECTION


def record_of(row: Row, out: Path, key: str) -> dict[str, Any] | None:
    """``row``'s ``row.json`` when it was written for config ``key``, else ``None``."""
    path = out / row.name / "row.json"
    record = json.loads(path.read_text()) if path.is_file() else None
    return record if record is not None and record.get("config_key") == key else None


def sweeps(rows: list[Row]) -> dict[str, list[Row]]:
    """The points of each weight sweep among ``rows``, in listed order."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        if row.group:
            groups.setdefault(row.group, []).append(row)
    return groups


def best_point(group: list[Row], out: Path, keys: dict[str, str]) -> Row | None:
    """The sweep's point with the best validation worst case (ties: the first listed); ``None``
    until every point has been validated under its current config."""
    records = [record_of(row, out, keys[row.name]) for row in group]
    if any(record is None for record in records):
        return None
    return group[max(range(len(group)), key=lambda i: (records[i]["validation_worst_case_acc"], -i))]


def to_test(group: list[Row], out: Path, keys: dict[str, str]) -> list[Row] | None:
    """The points of a sweep scored on test: its best point on validation and its paper's setting;
    ``None`` until every point has been validated."""
    best = best_point(group, out, keys)
    return None if best is None else [row for row in group if row is best or "paper_setting" in row.tags]


def pruned_because(row: Row, out: Path) -> str | None:
    """Why ``row``'s screen skips it, given the results in ``out``; None when it runs (or has no screen)."""
    return row.screen(out) if row.screen is not None else None


def state(row: Row, table: list[Row], out: Path, keys: dict[str, str]) -> str:
    """``done`` (nothing left to run), ``to test`` (a validated sweep point its sweep scores on
    test), ``validated`` (a sweep point waiting for the rest of its sweep), ``pruned`` (a study's
    screen skips it: :func:`pruned_because`) or ``to run``."""
    record = record_of(row, out, keys[row.name])
    if record is None:
        return "pruned" if pruned_because(row, out) else "to run"
    if record.get("tested", True):  # a row.json written before untested sweep points has no flag
        return "done"
    if row.group is None:  # only a sweep point is left untested on purpose
        return "to run"
    chosen = to_test(sweeps(table)[row.group], out, keys)
    if chosen is None:
        return "validated"
    return "to test" if row in chosen else "done"


# ----------------------------------------------------------------------------------- running
class Timing(NamedTuple):
    """A command's wall-clock seconds and its CPU seconds (user + system, its whole process tree):
    ``cpu / wall`` is the cores it had, lower than its threads when another job shared them."""

    wall: float
    cpu: float


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command: list[str], log: Path) -> Timing:
    """Run ``command`` in the repository root, appending its output to ``log``; its timing.

    Raises:
        RuntimeError: the command failed (the message holds the end of its output).
    """
    started, cpu = time.perf_counter(), children_cpu_seconds()
    with open(log, "a") as file:
        file.write("\n$ " + " ".join(command) + "\n")
        file.flush()
        code = subprocess.run(command, cwd=ROOT, stdout=file, stderr=subprocess.STDOUT).returncode
    if code:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"exit code {code}: {' '.join(command[:2])} ...\n{tail}")
    return Timing(time.perf_counter() - started, children_cpu_seconds() - cpu)


def export_weights(checkpoint: Path, target: Path) -> dict[str, Any]:
    """The network's state dict of ``checkpoint`` as ``target`` (.safetensors, with the checkpoint's
    training progress in its metadata: scored from ``target``, a row reports what it cost); that progress."""
    state = load_file(checkpoint, "checkpoint")
    prefix = "network."
    weights = {k.removeprefix(prefix): v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    progress = state.get("training_progress") or {}
    save_safetensors(weights, target, progress)
    return progress


def export_config(fit_config: Path, target: Path) -> None:
    """The fit's ``config.yaml`` as ``target`` with ``ckpt_path: null``: a resumed fit's config keeps
    the checkpoint it resumed from, which a clone lacks and which would win over ``init_from``."""
    text = re.sub(r"^ckpt_path: .*$", "ckpt_path: null", fit_config.read_text(), flags=re.MULTILINE)
    target.write_text(text)


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


def train(row: Row, runs: Path, out: Path, smoke: bool, log: Path) -> tuple[list[str], Timing]:
    """Train (or resume) ``row`` into ``<runs>/<row>/fit``, unless that fit is finished: its command
    and its timing now (zeros when it was done before)."""
    work = runs / row.name
    stamp, done = work / "fit.key", work / "fit.done"  # the fit key the fit trains; it finished
    trained = fit_key(row, smoke)
    if stamp.is_file() and stamp.read_text() != trained:
        shutil.rmtree(work / "fit", ignore_errors=True)  # begun or trained by another config: start again
        done.unlink(missing_ok=True)
    stamp.write_text(trained)
    fit = fit_command(row, runs, out, smoke)
    timing = run(fit, log) if not done.is_file() else Timing(0.0, 0.0)
    done.touch()
    return fit, timing


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
    """Train (or resume) ``row``, write its results folder and ``row.json``, and score it on test
    unless it is a sweep point: that one is validated (its selection score) and :func:`score_on_test`
    runs later if its sweep chooses it. An evaluation-only row (``row.scores``) trains nothing: it
    scores its source row's network."""
    version = code_version()  # the code its commands start with, not what is checked out at the end
    folder, work = out / row.name, runs / row.name
    folder.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    commands = {}
    fit = Timing(0.0, 0.0)
    if row.scores is None:
        commands["fit"], fit = train(row, runs, out, smoke, log)
    else:
        check_trained(row, runs, smoke)
    trained_by = runs / (row.scores or row.name)
    progress = export_weights(checkpoint_of(row, runs), folder / "weights.safetensors")
    export_config(trained_by / "fit" / "config.yaml", folder / "config.yaml")
    (folder / "eval.yaml").write_text(yaml.safe_dump(eval_config(row, smoke), sort_keys=False))
    for name in ("report.json", "report.md"):  # an earlier config's report must not outlive a retrain
        (folder / name).unlink(missing_ok=True)
    score = None
    if row.group:
        select = lit_robust(
            "validate", *config_args(relative(folder / "config.yaml"), selection_config(smoke)),
            f"--ckpt_path={relative(checkpoint_of(row, runs))}", *logger_args(runs, row.name, "select"),
        )  # fmt: skip
        shutil.rmtree(work / "select", ignore_errors=True)
        run(select, log)
        score, commands["select"] = selection_score(work / "select"), select
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
        "tested": False,
        "train_seconds": progress.get("train_seconds"),
        "global_step": progress.get("global_step"),
        "fit_wall_seconds": round(fit.wall, 1),
        "fit_cpu_seconds": round(fit.cpu, 1),  # over fit_wall_seconds: the cores the fit had
        "test_wall_seconds": None,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "versions": {name: _version(name) for name in PACKAGES},
    }
    if row.group is None:
        return score_on_test(row, runs, out, record)
    write_record(folder, record)  # a validated sweep point: its sweep may test it later
    return record


def checkpoint_of(row: Row, runs: Path) -> Path:
    """The ``last.ckpt`` of the fit whose network ``row`` scores (its own, or its source row's)."""
    return runs / (row.scores or row.name) / "fit" / "checkpoints" / "last.ckpt"


def write_record(folder: Path, record: dict[str, Any]) -> None:
    (folder / "row.json").write_text(json.dumps(record, indent=2) + "\n")


def score_on_test(row: Row, runs: Path, out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Run ``row``'s ``test`` on its results folder alone (its configs and its exported weights: the
    command anyone can rerun from a clone, and a validated sweep point is tested without its fit);
    copy the report into the folder; its ``row.json`` updated (``tested``, the test command, seconds
    and code version)."""
    folder, work = out / row.name, runs / row.name
    version = code_version()
    test = lit_robust(
        "test", *config_args(relative(folder / "config.yaml"), relative(folder / "eval.yaml")),
        f"--model.init_args.init_from={relative(folder / 'weights.safetensors')}",
        *logger_args(runs, row.name, "test"),
    )  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "test", ignore_errors=True)
    timing = run(test, work / "commands.log")
    for name in ("report.json", "report.md"):
        shutil.copyfile(work / "test" / name, folder / name)
    record = {
        **record,
        "commands": {**record["commands"], "test": shown(test)},
        "tested": True,
        "test_wall_seconds": round(timing.wall, 1),
        "test_cpu_seconds": round(timing.cpu, 1),
    }
    if version != record["code_version"]:  # a sweep point validated by earlier code
        record["test_code_version"] = version
    write_record(folder, record)
    return record


def mark_selected(rows: list[Row], out: Path, keys: dict[str, str]) -> None:
    """In every validated sweep, mark its point with the best validation worst case ``selected``
    (see :func:`best_point`); sweeps not validated yet get no mark."""
    for group in sweeps(rows).values():
        best = best_point(group, out, keys)
        if best is None:
            continue
        for row in group:
            record = record_of(row, out, keys[row.name])
            write_record(out / row.name, {**record, "selected": row is best})


@dataclass
class Benchmark:
    """One run of a table: after each row's step, the leaderboard and cards are refreshed (and committed)."""

    table_name: str
    table: list[Row]
    out: Path
    runs: Path
    smoke: bool
    commit: bool
    keys: dict[str, str]
    started: float = field(default_factory=time.perf_counter)
    failures: list[str] = field(default_factory=list)

    def attempt(self, label: str, row: Row, step: Callable[[], dict[str, Any]]) -> None:
        """Run ``step`` (a row's :func:`run_row` or :func:`score_on_test`), print how long it took; a
        failure is printed and kept in ``failures``, and the run goes on with the next row."""
        print(f"{label}: running (log: {self.runs / row.name / 'commands.log'})", flush=True)
        step_started = time.perf_counter()
        try:
            record = step()
        except (RuntimeError, OSError) as error:
            print(f"{label}: FAILED: {error}", file=sys.stderr, flush=True)
            self.failures.append(row.name)
            return
        minutes = (time.perf_counter() - step_started) / 60
        total = (time.perf_counter() - self.started) / 60
        tested = record["test_wall_seconds"]
        timing = f"fit {record['fit_wall_seconds']:.0f} s, " + (
            "validated, test waits for its sweep" if tested is None else f"test {tested:.0f} s"
        )
        print(f"{label}: done in {minutes:.1f} min ({timing}; {total:.1f} min so far)", flush=True)
        self.refresh(row)

    @property
    def rerun_command(self) -> str:
        """The command that runs one of this table's rows, its name appended."""
        if self.smoke:
            return "python benchmarks/leaderboard.py --smoke"
        table = "" if self.table_name == "leaderboard" else f" --table {self.table_name}"
        return f"python benchmarks/leaderboard.py{table}"

    def refresh(self, row: Row) -> None:
        """Mark the sweeps' selected points; rewrite the leaderboard (and, for the leaderboard table,
        the cards and the README block); commit them with ``row``'s folder (its sweep's) if ``commit``."""
        mark_selected(self.table, self.out, self.keys)
        reports = sorted(self.out.glob("*/report.json"))
        metrics = TABLE_METRICS.get(self.table_name, ())
        published = self.table_name == "leaderboard" and not self.smoke
        written = []
        if reports:  # none yet after --validate-only
            files = write_leaderboard(
                reports, self.out, HEADLINE, metrics=metrics, references=references(self.table, reports)
            )
            board = files["leaderboard"]
            unscored = unscored_section(self.table, self.out, self.keys, published, self.rerun_command)
            board.write_text(board.read_text() + unscored)
            written = list(files.values())
        if published:  # the cards cite the leaderboard's results
            written += update_cards(self.out)
        elif self.table_name == "gfa_study":  # the GFA card cites the study's
            written += update_cards()
        if self.commit:  # a sweep's points all: marking the chosen one rewrites every point's row.json
            folders = [self.out / point.name for point in sweeps(self.table).get(row.group, [row])]
            commit([*folders, *written], f"Leaderboard row {row.name} (config {self.keys[row.name]})")


def unscored_section(
    table: list[Row], out: Path, keys: dict[str, str], full_scale: bool, command: str
) -> str:
    """Markdown: every row of ``table`` without a test report yet, its state and the ``command`` (plus
    the row's name) that runs it (and, with ``full_scale``, the rows that need data or hardware this
    machine lacks)."""
    lines = []
    for row in table:
        now = state(row, table, out, keys)
        if now == "done" and (out / row.name / "report.json").is_file():
            continue
        record = record_of(row, out, keys[row.name]) or {}
        why = {
            "to run": f"not run yet: `{command} {row.name}`",
            "pruned": f"pruned by the screen: {pruned_because(row, out)}",
            "validated": "validated, waits for the rest of its sweep",
            "to test": f"validated, to be tested: `{command} {row.name}`",
            "done": "validated only: neither its sweep's choice nor the paper's setting",
        }[now]
        score = record.get("validation_worst_case_acc")
        validation = "" if score is None else f" (validation worst case {100 * score:.1f}%)"
        lines.append(f"| `{row.name}` | {why}{validation} |")
    if full_scale:
        lines += [
            f"| `{name}` | needs {needs}: `configs/experiments/{name}.yaml` (commands: its card) |"
            for name, needs in FULL_SCALE.items()
        ]
    if not lines:
        return ""
    header = ["", "## Rows without a test score, and why", "", "| row | state |", "|---|---|"]
    return "\n".join([*header, *lines, ""])


def stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM exits like Ctrl-C: ``subprocess.run`` then kills the running command instead of leaving
    it orphaned, still writing into a row's logs that the next run starts again."""
    raise SystemExit(128 + signum)


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
    parser.add_argument("--smoke", action="store_true", help="the smoke table (five rows) on tiny budgets")
    parser.add_argument(
        "--table",
        choices=list(TABLES),
        default="leaderboard",
        help="which rows: the leaderboard, the GFA study or its CIFAR-10 version (needs the data and a GPU)",
    )
    parser.add_argument("--list", action="store_true", help="print the rows and their state, run nothing")
    parser.add_argument("--commit", action="store_true", help="git-commit each row's results when done")
    parser.add_argument(
        "--validate-only",
        action="store_true",
        help="only train and validate sweep points (minutes each); a later run tests the chosen ones",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    table, default_out, default_runs = TABLES["smoke" if args.smoke else args.table]
    out, runs = (args.out or ROOT / default_out).resolve(), (args.runs or ROOT / default_runs).resolve()
    unknown = sorted(set(args.rows) - {row.name for row in table})
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {[row.name for row in table]}")
    chosen = [row for row in table if not args.rows or row.name in args.rows]
    keys = {row.name: config_key(row, args.smoke) for row in table}
    if args.list:
        for row in chosen:
            now = state(row, table, out, keys)
            print(f"{row.name:32s} {now:9s}  {pruned_because(row, out) if now == 'pruned' else row.note}")
        return 0
    bench = Benchmark(args.table, table, out, runs, args.smoke, args.commit, keys)
    for index, row in enumerate(chosen, 1):
        prefix = f"[{index}/{len(chosen)}] {row.name}"
        now = state(row, table, out, keys)
        if args.validate_only and row.group is None:
            continue
        if now == "to run" or (now == "pruned" and row.name in args.rows):  # a row named runs anyway
            bench.attempt(prefix, row, partial(run_row, row, runs, out, args.smoke, keys[row.name]))
        elif now == "pruned":
            print(f"{prefix}: pruned by the screen: {pruned_because(row, out)}", flush=True)
        else:
            done = "finished" if now == "done" else "validated"  # a sweep point its sweep may test next
            print(f"{prefix}: {done} earlier (config key {keys[row.name]}), skipped", flush=True)
        last_of_sweep = row is sweeps(chosen).get(row.group, [row])[-1]
        for point in sweeps(chosen).get(row.group, []) if last_of_sweep else []:  # its chosen points
            if not args.validate_only and state(point, table, out, keys) == "to test":
                record = record_of(point, out, keys[point.name])
                bench.attempt(
                    f"{prefix}: test {point.name}", point, partial(score_on_test, point, runs, out, record)
                )
    if bench.failures:
        print(f"{len(bench.failures)} row(s) failed: {bench.failures}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
