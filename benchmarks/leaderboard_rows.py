"""The leaderboard's rows (see ``benchmarks/leaderboard.py``): what each trains and how it is scored.

Every row trains on the embedded MNIST sample with SmallCNN under the matched budget
(``benchmarks/leaderboard/budget.yaml``: 20 epochs, Adam lr 1e-3, batch 128, seed 0) unless its
``note`` says why not, then is scored by ``configs/eval/leaderboard_mnist.yaml`` plus its paper's
own attacks (names ending in ``_paper``). A ``group`` is a 3-point sweep of one defense's weight:
its point is chosen on the validation split by the APGD-CE + APGD-T worst case at Linf 0.3, never
on test, and only that point and the paper's (or spec's) setting are scored on test. Rows run in the
order listed (the anchors first); a re-run skips finished rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

LEADERBOARD = "benchmarks/leaderboard"


@dataclass(frozen=True)
class Row:
    """One leaderboard row.

    Attributes:
        name: folder and display name.
        configs: ``fit`` configs after ``data``, before ``budget`` (paths from the repository root).
        schedule: configs after the budget: a paper's own recipe where it overrides the matched budget.
        overrides: ``fit`` command-line arguments after the configs (``--model.init_args.lam=0.1``).
        group: the weight sweep this row belongs to (selection on validation), or ``None``.
        fine_tune_from: the row whose final weights this one starts from (``init_from``).
        paper_attacks: the paper's own attacks, added to the protocol's main evaluation (the headline's
            500 digits, so the masking gap compares like with like); names end in ``_paper``.
        note: what differs from the matched budget, and why.
        tags: ``"paper_setting"`` marks a sweep's paper (or spec) value.
        protocol: the evaluation config (the paper attacks join its main evaluation).
        scores: an evaluation-only row: the name of the row whose trained network it scores, by its own
            protocol (say, with an input transform in front); it trains nothing (see :func:`scored_again`).
        screen: a study's pruning rule: given the results folder, why this row is not run (say, what an
            earlier row of the screen showed), or None to run it; it never changes the row's numbers.
        data: the data config, first of the ``fit`` configs.
        budget: the training budget, after ``configs`` (the leaderboard's matched budget unless a table
            trains on other data: the GFA study's CIFAR-10 version).
        reference: the row whose step time and DeepFool rho_2 count as 1x for this one: the standard row
            of the table (on the same network); until that row is scored, none.
    """

    name: str
    configs: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    schedule: tuple[str, ...] = ()
    group: str | None = None
    fine_tune_from: str | None = None
    paper_attacks: tuple[dict, ...] = ()
    note: str = ""
    tags: tuple[str, ...] = ()
    protocol: str = "configs/eval/leaderboard_mnist.yaml"
    scores: str | None = None
    screen: Callable[[Path], str | None] | None = None
    data: str = "configs/data/mnist_sample.yaml"
    budget: str = f"{LEADERBOARD}/budget.yaml"
    reference: str = "standard"


def references(table: list[Row], reports: Iterable[Path]) -> dict[str, str | None]:
    """``{row name: its reference row, or None}`` for every row of ``table``: None until the reference
    has a report among ``reports`` (``<row>/report.json``), never a run on another network."""
    done = {Path(path).parent.name for path in reports}
    return {row.name: row.reference if row.reference in done else None for row in table}


def attack(class_name: str, name: str, **init_args) -> dict:
    """A ``{class_path, init_args}`` entry of ``lit_robust.attacks.<class_name>`` named ``name``."""
    return {"class_path": f"lit_robust.attacks.{class_name}", "init_args": {**init_args, "name": name}}


# the paper protocols' own attacks at the MNIST budget (their papers' numbers come from these)
PGD40 = attack("PGD", "pgd40_linf_0.3_paper", eps=0.3, steps=40, step_size=0.01)
FGSM = attack("FGSM", "fgsm_linf_0.3_paper", eps=0.3)
APGD10 = attack("APGDCE", "apgd_ce10_linf_0.3_paper", eps=0.3, steps=10)
BIM = attack("BIM", "ifgsm_linf_0.3_paper", eps=0.3, steps=100, step_size=0.003)
FLOW = attack("FlowPGD", "flow_pgd100_0.5px_paper", eps=0.5, steps=100, units="pixels")

AT = f"{LEADERBOARD}/adversary_pgd20.yaml"
TRADES_OBJECTIVE = f"{LEADERBOARD}/adversary_trades_pgd20.yaml"
IGR = "configs/model/input_gradient.yaml"
SMALL_CNN = "configs/network/small_cnn.yaml"
DEEP_DEFENSE = ("configs/model/deep_defense.yaml", SMALL_CNN)
WNLL = ("configs/model/wnll.yaml", f"{LEADERBOARD}/wnll_schedule.yaml")


def sweep(
    name: str, configs: str | tuple[str, ...], weight: str, values: list[float], paper: float, **kwargs
) -> list[Row]:
    """The three rows of a weight sweep; the paper's (or spec's) value is one of them."""
    assert paper in values, (name, paper, values)
    overrides = tuple(kwargs.pop("overrides", ()))
    return [
        Row(
            f"{name}_{weight}{value:g}",
            (configs,) if isinstance(configs, str) else configs,
            (f"--model.init_args.{weight}={value}", *overrides),
            group=name,
            tags=("paper_setting",) if value == paper else (),
            **kwargs,
        )
        for value in values
    ]


def scored_again(source: Row, name: str, protocol: str, paper_attacks: tuple[dict, ...], note: str) -> Row:
    """An evaluation-only row: ``source``'s trained network under another ``protocol``. It keeps the
    source's training fields, so its fit key is the source's (the network it scores is that one)."""
    return replace(
        source, name=name, protocol=protocol, paper_attacks=paper_attacks, note=note,
        scores=source.name, group=None, tags=(),
    )  # fmt: skip


WNLL_ROW = Row("wnll", WNLL, paper_attacks=(BIM,), note="one round: 16 epochs of stage A, 4 of stage B")

ROWS: list[Row] = [
    Row("standard", ("configs/model/standard.yaml",)),
    Row(
        "pgd_at",
        ("configs/model/adversarial_training.yaml", f"{LEADERBOARD}/at_pgd20.yaml"),
        paper_attacks=(PGD40, FGSM),
    ),
    Row("trades", ("configs/model/trades.yaml", f"{LEADERBOARD}/trades_pgd20.yaml"), paper_attacks=(PGD40,)),
    Row(
        "fgsm_rs",
        ("configs/model/adversarial_training.yaml", f"{LEADERBOARD}/fgsm_rs.yaml"),
        paper_attacks=(PGD40,),
    ),
    *sweep("gfa", "configs/model/gfa.yaml", "lam", [0.1, 1.0, 10.0], 1.0, paper_attacks=(FGSM, APGD10)),
    *sweep(
        "input_gradient",
        "configs/model/input_gradient.yaml",
        "lam",
        [0.1, 1.0, 10.0],
        1.0,
        paper_attacks=(FGSM,),
    ),  # fmt: skip
    *sweep(
        "flow_gradient",
        "configs/model/flow_gradient.yaml",
        "lam",
        [0.44, 4.4, 44.0],
        4.4,
        paper_attacks=(FLOW,),
    ),  # fmt: skip
    *sweep(
        "local_flatness_k5",
        "configs/model/local_flatness.yaml",
        "lam",
        [0.002, 0.02, 0.2],
        0.02,
        overrides=("--model.init_args.steps=5", "--model.init_args.alpha=0.08"),
        paper_attacks=(PGD40, FGSM),
        note="K = 5 ascent steps of 0.08 (the paper: 40 of 0.01, 70x a standard step: local_flatness_k40)",
    ),  # fmt: skip
    Row("gfa_pgd_at", ("configs/model/gfa.yaml", AT), paper_attacks=(FGSM, APGD10)),
    Row("input_gradient_pgd_at", ("configs/model/input_gradient.yaml", AT), paper_attacks=(FGSM,)),
    Row("flow_gradient_pgd_at", ("configs/model/flow_gradient.yaml", AT), paper_attacks=(FLOW,)),
    Row(
        "local_flatness_k5_pgd_at",
        ("configs/model/local_flatness.yaml", AT),
        ("--model.init_args.steps=5", "--model.init_args.alpha=0.08"),
        paper_attacks=(PGD40,),
    ),
    Row(
        "input_gradient_trades",
        ("configs/model/input_gradient.yaml", TRADES_OBJECTIVE),
        paper_attacks=(PGD40,),
    ),  # fmt: skip
    Row(
        "local_flatness_k5_trades",
        ("configs/model/local_flatness.yaml", TRADES_OBJECTIVE),
        ("--model.init_args.steps=5", "--model.init_args.alpha=0.08"),
        paper_attacks=(PGD40,),
    ),
    *sweep(
        "deep_defense",
        DEEP_DEFENSE,
        "lam",
        [1.5, 15.0, 150.0],
        15.0,
        schedule=(f"{LEADERBOARD}/deep_defense_schedule.yaml",),
        fine_tune_from="standard",
        note="fine-tunes the standard row's SmallCNN by the paper's schedule (5 epochs of SGD 5e-4); "
        "the paper fine-tunes its LeNet",
    ),  # fmt: skip
    WNLL_ROW,
    scored_again(
        WNLL_ROW,
        "wnll_tvm",
        "configs/eval/leaderboard_wnll_tvm_mnist.yaml",
        (BIM,),
        "the wnll row's network with TVM in front (drop 0.5, TV weight 0.03), attacked through BPDA + EOT 20",
    ),
    Row(
        "wnll_pgd_at",
        (*WNLL, AT),
        paper_attacks=(BIM,),
        note="the WNLL paper's robust setting: stage A is PGD-AT",
    ),
    Row(
        "local_flatness_k40",
        ("configs/model/local_flatness.yaml",),
        paper_attacks=(PGD40, FGSM),
        note="the paper's K = 40 ascent steps of 0.01: about 70 standard steps each, over the 45-min budget",
    ),
]

BY_NAME = {row.name: row for row in ROWS}
assert len(BY_NAME) == len(ROWS), "row names must be unique"

SMOKE_STANDARD = Row("standard", ("configs/model/standard.yaml",))
SMOKE_ROWS: list[Row] = [
    SMOKE_STANDARD,
    Row(
        "pgd_at",
        ("configs/model/adversarial_training.yaml", f"{LEADERBOARD}/at_pgd20.yaml"),
        ("--model.init_args.attack.init_args.steps=2",),
    ),
    scored_again(SMOKE_STANDARD, "standard_tvm", f"{LEADERBOARD}/smoke_eval_tvm.yaml", (), "TVM in front"),
    # a two-point sweep: smoke_select.yaml ties the points, so the first (the paper's) is chosen, tested
    # once both are validated; the other is neither chosen nor the paper's and is never tested
    *sweep("input_gradient", IGR, "lam", [1.0, 0.1], 1.0),
]
