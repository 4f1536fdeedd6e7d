"""The GFA study's rows (issue 14, item 4): ``python benchmarks/leaderboard.py --table gfa_study``.

On the embedded MNIST sample, the leaderboard's matched budget (20 epochs, Adam 1e-3, batch 128,
seed 0), three networks — SmallCNN (with biases), bias-free SmallCNN and the bias-free MLP, all fed
the paper's [-1, 1] inputs (``Normalize(0.5, 0.5)``: the input center 0.5 is the point the bias-free
ones are positively homogeneous about) — each with standard training and PGD-AT (the baselines *on
the same network*) and the GFA grid penalty {abs, pos, neg} x task loss {ce, mse_logits} x lam
{0.1, 1, 10}, DEEP taps. Scored by ``configs/eval/paper_gfa_mnist.yaml`` (the paper's protocol next
to AutoAttack, on 200 digits).

Order: the baselines, then every (penalty, task loss) at lam 1 with DEEP taps and with FIRST (the
input tap alone) — a screen of the grid at its middle weight — then DEEP at lam 0.1 and 10. 6
baselines + 72 GFA rows at about 10-15 minutes each on 2 CPU cores (PGD-AT rows about 30): some 17
hours, run in pieces; finished rows are committed as they arrive. The table adds the protocol's
input-gradient ``||g||_1 / ||g||_2`` and input-tap cosines (``TABLE_METRICS`` in ``leaderboard.py``).
"""

from __future__ import annotations

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


def baselines(network: str) -> list[Row]:
    config, overrides = NETWORKS[network]
    at = ("configs/model/adversarial_training.yaml", config, f"{LEADERBOARD}/at_pgd20.yaml")
    return [
        Row(
            f"{network}_standard",
            ("configs/model/standard.yaml", config),
            (*INPUTS, *overrides),
            protocol=PROTOCOL,
            reference=f"{network}_standard",
        ),
        Row(
            f"{network}_pgd_at", at, (*INPUTS, *overrides), protocol=PROTOCOL, reference=f"{network}_standard"
        ),
    ]


def gfa_rows(lam: float, taps: str = "deep") -> list[Row]:
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
            protocol=PROTOCOL,
            reference=f"{network}_standard",
        )  # fmt: skip
        for network, (config, overrides) in NETWORKS.items()
        for penalty in PENALTIES
        for task in TASK_LOSSES
    ]


STUDY_ROWS: list[Row] = [
    *(row for network in NETWORKS for row in baselines(network)),
    *gfa_rows(1.0),
    *gfa_rows(1.0, taps="first"),
    *gfa_rows(0.1),
    *gfa_rows(10.0),
]
assert len({row.name for row in STUDY_ROWS}) == len(STUDY_ROWS), "row names must be unique"
