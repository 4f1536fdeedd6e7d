"""Short-run robustness of each defense on the embedded MNIST sample, side by side (not a test).

SmallCNN, 2 epochs of batch 64, seed 0, then clean accuracy, PGD-10 accuracy at Linf 0.1 and 0.2 and
flow-PGD-20 accuracy at a 0.5-pixel flow (the deformation threat model of Xia and Li) on every third
test digit (334). A smoke check of "does the regularizer move robustness at all in a tiny
budget", never a headline: the numbers come from PGD, not AutoAttack.

    python benchmarks/short_run_robustness.py            # every configuration below
    python benchmarks/short_run_robustness.py gfa_first  # only the named ones
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import lightning as L
import torch

from lit_robust.attacks import PGD, FlowPGD
from lit_robust.callbacks import robust_flags
from lit_robust.data import MNISTSampleDataModule
from lit_robust.defenses import (
    GFA,
    FlowGradientRegularization,
    InputGradientRegularization,
    LocalFlatnessRegularization,
    RobustClassifier,
    StandardTraining,
)
from lit_robust.models import SmallCNN

MNIST = {"mean": 0.1307, "std": 0.3081}
# GFA's networks start with PyTorch's default head: SmallCNN's zero-initialized head collapses it
GFA_NET = {**MNIST, "zero_init_head": False}


def adam(parameters):
    return torch.optim.Adam(parameters, lr=1e-3)


def sgd(parameters):
    return torch.optim.SGD(parameters, lr=0.01, momentum=0.9, weight_decay=5e-4)


# name -> (defense factory, optimizer, SmallCNN arguments)
CONFIGURATIONS: dict[str, tuple[Callable, Callable, dict]] = {
    "standard": (lambda net: StandardTraining(net), adam, MNIST),
    "input_gradient_lam10": (lambda net: InputGradientRegularization(net, lam=10.0), adam, MNIST),
    "flow_gradient": (lambda net: FlowGradientRegularization(net), adam, MNIST),
    "gfa_deep_lam0.1": (lambda net: GFA(net, lam=0.1), adam, GFA_NET),
    "gfa_deep_lam1": (lambda net: GFA(net, lam=1.0), adam, GFA_NET),
    "gfa_deep_lam10": (lambda net: GFA(net, lam=10.0), adam, GFA_NET),
    "gfa_deep_lam1_zero_head": (lambda net: GFA(net, lam=1.0), adam, MNIST),
    "gfa_deep_lam1_sgd": (lambda net: GFA(net, lam=1.0), sgd, {**GFA_NET, "mean": 0.5, "std": 0.5}),
    "gfa_first_lam1": (lambda net: GFA(net, taps="first", lam=1.0), adam, GFA_NET),
    "gfa_deep_mse_lam1": (lambda net: GFA(net, lam=1.0, task_loss="mse"), adam, GFA_NET),
    # the official K = 40 steps of 0.01 cost 40 double backprops a step: 5 steps of 0.08 here
    "local_flatness_k5": (
        lambda net: LocalFlatnessRegularization(net, eps=0.3, alpha=0.08, steps=5, lam=0.02),
        adam,
        MNIST,
    ),
}
ATTACKS = [PGD(0.1, steps=10), PGD(0.2, steps=10), FlowPGD(0.5, steps=20, units="pixels")]


def train(name: str, datamodule: MNISTSampleDataModule) -> RobustClassifier:
    """The configuration ``name`` trained for 2 epochs on ``datamodule`` from seed 0, in eval mode."""
    make, optimizer, network = CONFIGURATIONS[name]
    L.seed_everything(0, verbose=False)
    model = make(SmallCNN(**network))
    model.optimizer_factory = optimizer
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    return model.eval()


def evaluate(model: RobustClassifier, datamodule: MNISTSampleDataModule) -> dict[str, float]:
    """Clean and per-attack accuracy on every third test digit (334), attacks seeded."""
    x, y = (t[::3] for t in datamodule.test_set.tensors)
    torch.manual_seed(0)
    flags = robust_flags(model, x, y, ATTACKS)
    return {key: flag.float().mean().item() for key, flag in flags.items()}


def main(names: list[str]) -> None:
    datamodule = MNISTSampleDataModule(batch_size=64)
    columns = ["clean", *(attack.name for attack in ATTACKS)]
    print(f"| configuration | fit + eval (s) | {' | '.join(columns)} |\n" + "|---" * (len(columns) + 2) + "|")
    for name in names or list(CONFIGURATIONS):
        start = time.time()
        accuracy = evaluate(train(name, datamodule), datamodule)
        cells = " | ".join(f"{accuracy[column]:.3f}" for column in columns)
        print(f"| {name} | {time.time() - start:.0f} | {cells} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
