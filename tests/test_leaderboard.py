"""The leaderboard of ``lit-robust compare``, on synthetic reports (no training, no attacks).

Regenerate the golden table with ``UPDATE_GOLDEN=1`` and read every number before keeping it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from lit_robust.leaderboard import (
    Run,
    eps_points,
    find_reports,
    incomplete_runs,
    leaderboard_rows,
    load_runs,
    main,
    reference_runs,
    render_markdown,
    write_leaderboard,
)

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
PNG = b"\x89PNG\r\n\x1a\n"
AA = "autoattack_linf_0.3"


def attack(name: str, cls: str, threat: str, eps: float | None) -> dict[str, Any]:
    """An attack's settings as the report writes them."""
    return {"name": name, "class": cls, "short_name": name.split("_")[0], "threat_model": threat, "eps": eps}


def make_report(
    model: str,
    clean: float,
    attacks: list[tuple[str, str, str, float | None, float]],
    masking: dict[str, float] | None = None,
    deepfool: dict[str, float] | None = None,
    train_seconds: float | None = None,
    global_step: int = 1000,
    checks: list[tuple[str, str, str, float | None]] = (),
) -> dict[str, Any]:
    """A minimal completed report: ``attacks`` are (name, class, threat model, eps, accuracy) of the
    RobustnessEvaluation, ``checks`` the gradient-masking callback's (accuracies in ``masking``)."""
    robust = {name: acc for name, _, _, _, acc in attacks}
    progress = {"epochs_completed": 10, "max_epochs": 10, "global_step": global_step}
    if train_seconds is not None:
        progress["train_seconds"] = train_seconds
    evaluations = [
        {
            "callback": "RobustnessEvaluation",
            "num_samples": 1000,
            "seed": 0,
            "attacks": [attack(*settings[:4]) for settings in attacks],
        }
    ]
    if checks:
        evaluations.append(
            {
                "callback": "GradientMaskingChecks",
                "num_samples": 1000,
                "seed": 0,
                "attacks": [attack(*c) for c in checks],
            }
        )
    return {
        "created": "2026-01-01T00:00:00+00:00",
        "run": {"command": "test", "completed": True, "status": "finished"},
        "model": model,
        "network": "SmallCNN",
        "checkpoint": "checkpoints/last.ckpt",
        "checkpoint_progress": progress,
        "clean_acc": clean,
        "subset_clean_acc": clean,
        "robust_acc": robust,
        "worst_case_acc": min(robust.values()),
        "eps_curves": {},
        "minimal_perturbation": {"deepfool_l2": deepfool} if deepfool else {},
        "masking": masking or {},
        "evaluations": evaluations,
        "seed": 0,
        "versions": {"lit-robust": "0.1.0"},
        "hardware": {"platform": "test", "device": "cpu", "gpu": None, "processes": 1},
        "metrics": {},
    }


def write_run(root: Path, folder: str, report: dict[str, Any], row: dict[str, Any] | None = None) -> Path:
    directory = root / folder
    directory.mkdir(parents=True)
    (directory / "report.json").write_text(json.dumps(report))
    if row is not None:
        (directory / "row.json").write_text(json.dumps(row))
    return directory


def build_runs(root: Path) -> Path:
    """Five runs under ``root``: standard, adversarial (named by row.json), a masking regularizer, one
    without AutoAttack or training time, and one that was terminated."""
    std = make_report(
        "StandardTraining",
        0.991,
        [
            ("pgd_linf_0.1", "PGD", "linf", 0.1, 0.2),
            ("pgd_linf_0.3", "PGD", "linf", 0.3, 0.01),
            (AA, "AutoAttack", "linf", 0.3, 0.0),
            ("pgd_l2_2", "PGD", "l2", 2.0, 0.03),
        ],
        masking={
            "flags": 0.0,
            "zero_grad_frac": 0.0,
            "zero_grad_frac_flag": 0.0,
            "robust_acc/pgd_linf_0.5": 0.0,
        },
        deepfool={"median_l2": 1.234, "median_linf": 0.1, "mean_l2": 1.3, "success_rate": 1.0, "rho2": 0.15},
        train_seconds=60.0,
        checks=[("pgd_linf_0.5", "PGD", "linf", 0.5)],
    )
    adv = make_report(
        "AdversarialTraining",
        0.984,
        [
            ("pgd_linf_0.1", "PGD", "linf", 0.1, 0.95),
            ("pgd_linf_0.3", "PGD", "linf", 0.3, 0.88),
            (AA, "AutoAttack", "linf", 0.3, 0.85),
        ],
        masking={"flags": 0.0, "zero_grad_frac": 0.0, "zero_grad_frac_flag": 0.0},
        deepfool={"median_l2": 2.5, "median_linf": 0.35, "mean_l2": 2.6, "success_rate": 1.0, "rho2": 0.3},
        train_seconds=600.0,
    )
    reg = make_report(
        "InputGradientRegularization",
        0.97,
        [
            ("pgd_linf_0.1", "PGD", "linf", 0.1, 0.5),
            ("pgd_linf_0.3_paper", "PGD", "linf", 0.3, 0.6),
            ("cw_l2_paper", "CWL2", "l2", None, 0.4),
            (AA, "AutoAttack", "linf", 0.3, 0.05),
        ],
        masking={
            "flags": 1.0,
            "zero_grad_frac": 0.4,
            "zero_grad_frac_flag": 1.0,
            "eps_sweep_ok": 1.0,
            "eps_sweep_ok_flag": 0.0,
        },
        deepfool={"median_l2": 0.8, "median_linf": 0.05, "mean_l2": 0.9, "success_rate": 1.0, "rho2": 0.0987},
        global_step=500,
    )
    fast = make_report("FastAdversarialTraining", 0.95, [("fgsm_linf_0.3", "FGSM", "linf", 0.3, 0.7)])
    write_run(root, "std", std)
    write_run(root, "adv", adv, {"name": "Madry PGD-AT", "selected": True})
    write_run(root, "reg", reg, {"train_seconds": 120.0})  # no name: the folder names it
    write_run(root, "fast", fast)
    crashed = {
        "run": {"command": "fit", "completed": False, "status": "terminated (SIGTERM)"},
        "checkpoint": None,
    }
    write_run(root, "crashed", crashed)
    return root


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def written(runs_dir: Path) -> dict[str, Path]:
    return write_leaderboard([runs_dir], runs_dir.parent / "board")


def test_rows_are_sorted_by_headline_with_unknown_last_and_skip_incomplete_runs(runs_dir):
    rows = leaderboard_rows(load_runs([runs_dir]))
    assert [row["name"] for row in rows] == ["Madry PGD-AT", "reg", "std", "fast"]
    assert [row["headline_acc"] for row in rows] == [0.85, 0.05, 0.0, None]
    assert incomplete_runs(load_runs([runs_dir])) == [
        {"name": "crashed", "command": "fit", "status": "terminated (SIGTERM)"}
    ]


def test_masking_gap_is_the_best_paper_number_minus_autoattack_at_the_same_budget(runs_dir):
    rows = {row["name"]: row for row in leaderboard_rows(load_runs([runs_dir]))}
    reg = rows["reg"]
    assert reg["paper_attack"] == "pgd_linf_0.3_paper" and reg["paper_acc"] == 0.6  # beats cw_l2_paper's 0.4
    assert reg["masking_gap"] == pytest.approx(0.55)
    assert reg["masking_flags"] == 1 and reg["masking_failed"] == ["zero_grad_frac"]
    assert rows["std"]["masking_gap"] is None and rows["std"]["masking_failed"] == []
    assert rows["fast"]["masking_flags"] is None and rows["fast"]["median_l2"] is None
    assert reg["median_l2"] == 0.8 and reg["rho2"] == 0.0987
    assert reg["rho2_ratio"] == pytest.approx(0.0987 / 0.15)


def test_step_cost_is_seconds_per_step_relative_to_the_reference(runs_dir):
    runs = load_runs([runs_dir])
    rows = {row["name"]: row for row in leaderboard_rows(runs)}
    # std 60 s / 1000 steps; adv 600 s / 1000; reg 120 s (row.json) / 500; fast: no training time
    assert rows["std"]["step_cost"] == pytest.approx(1.0)
    assert rows["Madry PGD-AT"]["step_cost"] == pytest.approx(10.0)
    assert rows["reg"]["step_cost"] == pytest.approx(4.0) and rows["reg"]["train_seconds"] == 120.0
    assert rows["fast"]["step_cost"] is None and rows["fast"]["train_seconds"] is None
    other = {row["name"]: row for row in leaderboard_rows(runs, reference="Madry PGD-AT")}
    assert other["std"]["step_cost"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="nope"):
        leaderboard_rows(runs, reference="nope")


def test_the_markdown_table_matches_the_golden_file(runs_dir, written):
    text = written["leaderboard"].read_text()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    runs = load_runs([runs_dir])
    again = render_markdown(leaderboard_rows(runs), AA, incomplete_runs(runs))
    assert again == text  # deterministic
    table_rows = [line for line in text.splitlines() if line.startswith("| ") and "crashed" in line]
    assert not table_rows and "- `crashed`: `lit-robust fit` did not complete" in text


def test_the_json_holds_the_rows_the_headline_and_the_reports(written):
    data = json.loads(written["leaderboard_json"].read_text())
    assert data["headline"] == AA and data["reference"] == "std"
    assert data["reports"][0] == "../runs0/adv/report.json" and len(data["reports"]) == 5
    assert [row["name"] for row in data["rows"]] == ["Madry PGD-AT", "reg", "std", "fast"]


def test_lowest_accuracy_at_each_eps_counts_autoattack_and_the_masking_checks(runs_dir):
    runs = {run.name: run for run in load_runs([runs_dir])}
    assert eps_points(runs["reg"].report) == {"linf": {0.1: 0.5, 0.3: 0.05}}  # cw_l2_paper has no eps
    assert eps_points(runs["std"].report) == {"linf": {0.1: 0.2, 0.3: 0.0, 0.5: 0.0}, "l2": {2.0: 0.03}}


def test_one_png_per_threat_model_with_two_eps_and_the_scatter(written):
    figures = {name: path for name, path in written.items() if path.suffix == ".png"}
    assert sorted(figures) == ["clean_vs_autoattack", "robust_vs_eps_linf"]  # l2: one eps only
    for path in figures.values():
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def test_the_cli_writes_the_leaderboard_and_explains_missing_paths(runs_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(runs_dir / "std"), str(runs_dir / "adv" / "report.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| Madry PGD-AT (selected on val) |" in printed and f"wrote {out / 'leaderboard.md'}" in printed
    assert (out / "leaderboard.md").is_file() and (out / "leaderboard.json").is_file()
    assert main([str(tmp_path / "missing"), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "missing: no such file or directory" in captured.err and "Traceback" not in captured.err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2 and "no report.json" in capsys.readouterr().err


def test_row_json_names_a_run_and_folders_are_named_relative_to_the_common_parent(runs_dir, tmp_path):
    names = {run.path.parent.name: run.name for run in load_runs([runs_dir])}
    assert names["adv"] == "Madry PGD-AT" and names["std"] == "std"
    nested = tmp_path / "nested"
    write_run(
        nested, "a/version_0", make_report("StandardTraining", 0.9, [(AA, "AutoAttack", "linf", 0.3, 0.0)])
    )
    write_run(
        nested, "b/version_0", make_report("StandardTraining", 0.9, [(AA, "AutoAttack", "linf", 0.3, 0.0)])
    )
    assert [run.name for run in load_runs([nested])] == ["a/version_0", "b/version_0"]
    assert [run.name for run in load_runs([nested / "a" / "version_0"])] == ["version_0"]
    assert find_reports([nested / "a", nested]) == find_reports([nested])  # sorted, no duplicates


def test_the_worst_case_column_is_the_headline_budgets_when_the_main_evaluation_mixes_budgets():
    report = make_report(
        "FlowGradientRegularization", 0.97,
        [(AA, "AutoAttack", "linf", 0.3, 0.2), ("flow_pgd_0.5px_paper", "FlowPGD", "flow", 0.5, 0.1)],
    )  # fmt: skip
    assert leaderboard_rows([Run("fgr", Path("fgr/report.json"), report)])[0]["worst_case_acc"] == 0.1
    report["worst_case_acc_by_budget"] = {"linf_0.3": 0.2, "flow_0.5": 0.1}  # reports now keep these
    assert leaderboard_rows([Run("fgr", Path("fgr/report.json"), report)])[0]["worst_case_acc"] == 0.2


def test_a_randomized_pipeline_without_the_headline_shows_its_autoattack_at_the_same_budget():
    report = make_report(
        "WNLL", 0.9,
        [("autoattack_rand_linf_0.3", "AutoAttack", "linf", 0.3, 0.4),
         ("autoattack_l2_2", "AutoAttack", "l2", 2.0, 0.1),
         ("square_linf_0.3_tvm", "Square", "linf", 0.3, 0.5)],
    )  # fmt: skip
    row = leaderboard_rows([Run("wnll_tvm", Path("wnll_tvm/report.json"), report)])[0]
    assert row["headline_acc"] == 0.4  # not the L2 AutoAttack, not Square


def test_metric_columns_show_any_logged_metric_and_na_where_a_report_lacks_it(tmp_path):
    key = "test/grad_l1_over_l2/input"
    measured = make_report("StandardTraining", 0.97, [(AA, "AutoAttack", "linf", 0.3, 0.0)])
    measured["metrics"] = {key: 12.5872}
    write_run(tmp_path / "runs", "std", measured)
    write_run(
        tmp_path / "runs",
        "adv",
        make_report("AdversarialTraining", 0.97, [(AA, "AutoAttack", "linf", 0.3, 0.8)]),
    )
    written = write_leaderboard([tmp_path / "runs"], tmp_path / "board", metrics=[key])
    table = [line for line in written["leaderboard"].read_text().splitlines() if line.startswith("|")]
    assert table[0].endswith(f"| `{key}` |") and all(line.count("|") == table[0].count("|") for line in table)
    assert next(line for line in table if line.startswith("| std |")).endswith("| 12.59 |")
    assert next(line for line in table if line.startswith("| adv |")).endswith("| n/a |")


def networked(model: str, network: str, architecture: str | None, step_seconds: float, rho2: float) -> dict:
    """A report of ``model`` on ``network`` (``architecture``: its digest, None for an older report)."""
    deepfool = {"median_l2": 1.0, "median_linf": 0.1, "mean_l2": 1.0, "success_rate": 1.0, "rho2": rho2}
    report = make_report(
        model,
        0.9,
        [(AA, "AutoAttack", "linf", 0.3, 0.0)],
        deepfool=deepfool,
        train_seconds=step_seconds * 1000,
    )
    report["network"] = network
    if architecture is not None:
        report["architecture"] = architecture
    return report


def test_each_run_is_measured_against_the_standard_run_on_its_own_network(tmp_path):
    # two SmallCNN architectures (with and without biases: one class, two digests) and an MLP
    write_run(tmp_path, "a_bias_free_std", networked("StandardTraining", "SmallCNN", "bf00", 2.0, 0.2))
    write_run(tmp_path, "b_std", networked("StandardTraining", "SmallCNN", "cnn0", 1.0, 0.1))
    write_run(tmp_path, "bias_free_gfa", networked("GFA", "SmallCNN", "bf00", 6.0, 0.8))
    write_run(tmp_path, "gfa", networked("GFA", "SmallCNN", "cnn0", 4.0, 0.3))
    write_run(tmp_path, "mlp_gfa", networked("GFA", "BiasFreeMLP", "mlp0", 1.0, 0.5))
    rows = {row["name"]: row for row in leaderboard_rows(load_runs([tmp_path]))}
    assert rows["gfa"]["reference"] == "b_std"  # not the first StandardTraining run by name
    assert rows["gfa"]["step_cost"] == pytest.approx(4.0) and rows["gfa"]["rho2_ratio"] == pytest.approx(3.0)
    assert rows["bias_free_gfa"]["reference"] == "a_bias_free_std"
    assert rows["bias_free_gfa"]["step_cost"] == pytest.approx(3.0)
    assert rows["bias_free_gfa"]["rho2_ratio"] == pytest.approx(4.0)
    assert rows["mlp_gfa"]["reference"] is None and rows["mlp_gfa"]["step_cost"] is None  # no standard MLP
    assert rows["mlp_gfa"]["rho2_ratio"] is None
    text = write_leaderboard([tmp_path], tmp_path / "board")["leaderboard"].read_text()
    header = next(line for line in text.splitlines() if line.startswith("| run |"))
    assert header.endswith("| reference |") and "the StandardTraining run on the same network" in text
    assert next(line for line in text.splitlines() if line.startswith("| gfa |")).endswith("| b_std |")
    assert "| mlp_gfa |" in text and next(
        line for line in text.splitlines() if line.startswith("| mlp_gfa |")
    ).endswith("| n/a |")


def test_reports_without_an_architecture_digest_fall_back_to_the_network_class(tmp_path):
    write_run(tmp_path, "mlp_std", networked("StandardTraining", "BiasFreeMLP", None, 1.0, 0.1))
    write_run(tmp_path, "std", networked("StandardTraining", "SmallCNN", None, 2.0, 0.2))
    write_run(tmp_path, "gfa", networked("GFA", "SmallCNN", None, 4.0, 0.4))
    bases = reference_runs(load_runs([tmp_path]))
    assert {name: base and base.name for name, base in bases.items()} == {
        "mlp_std": "mlp_std", "std": "std", "gfa": "std"
    }  # fmt: skip


def test_explicit_references_override_the_default_and_none_means_no_reference_yet(tmp_path):
    write_run(tmp_path, "std", networked("StandardTraining", "SmallCNN", "cnn0", 1.0, 0.1))
    write_run(tmp_path, "other_std", networked("StandardTraining", "SmallCNN", "cnn0", 2.0, 0.2))
    write_run(tmp_path, "gfa", networked("GFA", "SmallCNN", "cnn0", 4.0, 0.4))
    runs = load_runs([tmp_path])
    rows = {row["name"]: row for row in leaderboard_rows(runs, references={"gfa": "other_std", "std": None})}
    assert rows["gfa"]["reference"] == "other_std" and rows["gfa"]["step_cost"] == pytest.approx(2.0)
    assert rows["std"]["reference"] is None and rows["std"]["step_cost"] is None
    assert rows["other_std"]["reference"] == "other_std"  # not in the mapping: the default (by name)
    with pytest.raises(ValueError, match="'missing' is not among the completed runs"):
        leaderboard_rows(runs, references={"gfa": "missing"})
