"""The GFA study's rows (issue 14, item 4): ``python benchmarks/leaderboard.py --table gfa_study``.

On the embedded MNIST sample, the leaderboard's matched budget (20 epochs, Adam 1e-3, batch 128,
seed 0), three networks — SmallCNN (with biases), bias-free SmallCNN and the bias-free MLP, all fed
the paper's [-1, 1] inputs (``Normalize(0.5, 0.5)``: the input center 0.5 is the point the bias-free
ones are positively homogeneous about) — each with standard training, PGD-AT and standard training on
MSE of the logits (the baselines *on the same network*; the last, GFA at lam 0, is the control of the
``mse_logits`` rows) and the GFA grid penalty {abs, pos, neg} x task loss {ce, mse_logits} x lam
{0.1, 1, 10}, DEEP taps. Scored by ``configs/eval/paper_gfa_mnist.yaml`` (the paper's protocol next
to AutoAttack, on 200 digits).

Order: the baselines, then every (penalty, task loss) at lam 1 with DEEP taps and with FIRST (the
input tap alone) — a screen of the grid at its middle weight — then DEEP at lam 0.1 and 10, pruned by
:class:`WeightScreen` on the SmallCNNs (fixed before their numbers: one step from lam 1, to 10 where lam 1
kept clean accuracy, to 0.1 where it did not; both where it also gained robustness) and run in full on
the MLP (about a minute a row). 9 baselines, 36 lam-1 rows and 24 to 36 weight rows: at about 5 minutes
a SmallCNN row on 2 CPU cores (PGD-AT about 30, the MLP's 1 to 3), some 6 hours, run in pieces; finished
rows are committed as they arrive; a pruned row named on the command line runs anyway. The table adds
the protocol's input-gradient ``||g||_1 / ||g||_2`` and input-tap cosines (``TABLE_METRICS`` in
``leaderboard.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from leaderboard_rows import LEADERBOARD, Row

PROTOCOL = "configs/eval/paper_gfa_mnist.yaml"
GFA = "configs/model/gfa.yaml"
STANDARD = "configs/model/standard.yaml"
INPUTS = ("--model.init_args.network.init_args.mean=[0.5]", "--model.init_args.network.init_args.std=[0.5]")
NETWORKS = {  # name -> (network config, overrides)
    "small_cnn": (
        "configs/network/small_cnn.yaml",
        ("--model.init_args.network.init_args.zero_init_head=false",),
    ),
    "small_cnn_bias_free": (
        "configs/network/small_cnn_bias_free.yaml",
        ("--model.init_args.network.init_args.zero_init_head=false",),
    ),
    "bias_free_mlp": ("configs/network/bias_free_mlp.yaml", ()),
}
PENALTIES = ("abs", "pos", "neg")
TASK_LOSSES = ("ce", "mse_logits")


@dataclass(frozen=True)
class Study:
    """Where a study's rows train and how they are scored: its ``networks`` (name -> network config and
    overrides), its PGD-AT attack config ``at``, the ``protocol``, and the ``data`` and ``budget`` configs."""

    networks: dict[str, tuple[str, tuple[str, ...]]]
    at: str
    protocol: str
    data: str = Row.data
    budget: str = Row.budget
    unscreened: tuple[str, ...] = ()  # networks cheap enough to run every weight (no WeightScreen)


CLEAN_KEPT = 0.05  # a lam-1 row within 5 points of its standard row's clean accuracy "kept" it
ROBUST_GAIN = 0.02  # a lam-1 row more than 2 points above its standard row's AutoAttack "gained"


@dataclass(frozen=True)
class WeightScreen:
    """The study's pruning of lam 0.1 and 10, fixed before any of their numbers: each (network, penalty,
    task loss) goes one step from its lam-1 DEEP row (``screen_row``) in the direction that could buy
    robustness without collapsing: to lam 10 if lam 1 kept clean accuracy (within ``CLEAN_KEPT`` of the
    ``standard`` row's: there is room to regularize harder), to lam 0.1 if it did not (back off). A
    lam-1 row that kept clean accuracy *and* gained robustness (a worst case over the protocol's attacks
    above the standard row's by ``ROBUST_GAIN``; a collapsed network's constant guess is no gain) runs
    both.
    Called with the results folder: why the row at ``lam`` is skipped, or None to run it."""

    screen_row: str
    standard: str
    lam: float

    def __call__(self, out: Path) -> str | None:
        reports = {name: out / name / "report.json" for name in (self.screen_row, self.standard)}
        missing = [name for name, path in reports.items() if not path.is_file()]
        if missing:
            return f"waits for the test report of `{missing[0]}`"
        screened, standard = (json.loads(path.read_text()) for path in reports.values())
        kept = screened["clean_acc"] >= standard["clean_acc"] - CLEAN_KEPT
        gained = (screened.get("worst_case_acc") or 0.0) > (
            standard.get("worst_case_acc") or 0.0
        ) + ROBUST_GAIN
        if kept == (self.lam > 1) or (kept and gained):
            return None
        clean = [
            f"`{name}` {100 * report['clean_acc']:.1f}%"
            for name, report in zip(reports, (screened, standard), strict=True)
        ]
        return f"clean {clean[0]} against {clean[1]}: the screen goes to lam {10 if kept else 0.1} instead"


MNIST_SAMPLE = Study(NETWORKS, f"{LEADERBOARD}/at_pgd20.yaml", PROTOCOL, unscreened=("bias_free_mlp",))


def baselines(network: str, study: Study = MNIST_SAMPLE) -> list[Row]:
    """Standard training and PGD-AT on ``network``: the references the study's GFA rows stand next to."""
    config, overrides = study.networks[network]
    where = {"protocol": study.protocol, "data": study.data, "budget": study.budget}
    at = ("configs/model/adversarial_training.yaml", config, study.at)
    standard = f"{network}_standard"
    # the task-loss control: GFA at lam 0 is standard training on MSE of the logits (to float rounding,
    # tested), so an mse_logits GFA row's gain over it is the penalty's, not the loss's
    mse = ("--model.init_args.task_loss=mse_logits", "--model.init_args.lam=0.0")
    return [
        Row(standard, (STANDARD, config), (*INPUTS, *overrides), reference=standard, **where),
        Row(f"{network}_pgd_at", at, (*INPUTS, *overrides), reference=standard, **where),
        Row(f"{network}_mse_logits", (GFA, config), (*INPUTS, *overrides, *mse), reference=standard, **where),
    ]


def gfa_rows(lam: float, taps: str = "deep", study: Study = MNIST_SAMPLE) -> list[Row]:
    """Every network x penalty x task loss at weight ``lam``, with the ``taps`` variant (``"deep"``:
    the input and every Conv2d / Linear input; ``"first"``: the input alone)."""
    tag = "" if taps == "deep" else f"_{taps}"
    return [
        Row(
            f"{network}_gfa{tag}_{penalty}_{task}_lam{lam:g}",
            (GFA, config),
            (
                *INPUTS,
                *overrides,
                f"--model.init_args.taps={taps}",
                f"--model.init_args.penalty={penalty}",
                f"--model.init_args.task_loss={task}",
                f"--model.init_args.lam={lam}",
            ),
            protocol=study.protocol,
            data=study.data,
            budget=study.budget,
            reference=f"{network}_standard",
            screen=None
            if lam == 1 or network in study.unscreened
            else WeightScreen(f"{network}_gfa_{penalty}_{task}_lam1", f"{network}_standard", lam),
        )  # fmt: skip
        for network, (config, overrides) in study.networks.items()
        for penalty in PENALTIES
        for task in TASK_LOSSES
    ]


def study_rows(study: Study) -> list[Row]:
    """The study's rows in the order they run: the baselines, the lam-1 screen (DEEP, then FIRST), then
    DEEP at lam 0.1 and 10."""
    rows = [
        *(row for network in study.networks for row in baselines(network, study)),
        *gfa_rows(1.0, study=study),
        *gfa_rows(1.0, taps="first", study=study),
        *gfa_rows(0.1, study=study),
        *gfa_rows(10.0, study=study),
    ]
    assert len({row.name for row in rows}) == len(rows), "row names must be unique"
    return rows


STUDY_ROWS = study_rows(MNIST_SAMPLE)

# The same study on CIFAR-10 (needs the CIFAR-10 files in data/ and a GPU; run it with
# ``python benchmarks/leaderboard.py --table gfa_study_cifar10 --commit``): the paper's data set and its
# protocol (configs/eval/paper_gfa.yaml, 1,000 test images, Linf 8/255), the authors' style of small CNN
# (BiasFreeCNN) next to a SmallCNN with biases, PGD-AT with PGD-10 of 2/255 at 8/255. The budget
# (benchmarks/gfa_study/cifar10_budget.yaml) is ours: the paper's is unknown.
CIFAR10 = Study(
    {
        "cifar10_small_cnn": NETWORKS["small_cnn"],
        "cifar10_bias_free_cnn": ("configs/network/bias_free_cnn.yaml", ()),
    },
    at="benchmarks/gfa_study/cifar10_at_pgd10.yaml",
    protocol="configs/eval/paper_gfa.yaml",
    data="configs/data/cifar10.yaml",
    budget="benchmarks/gfa_study/cifar10_budget.yaml",
)
CIFAR10_STUDY_ROWS = study_rows(CIFAR10)
