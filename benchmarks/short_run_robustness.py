"""Short-run robustness of each defense on the embedded MNIST sample, side by side (not a test).

SmallCNN, 2 epochs of batch 64, seed 0, then clean and PGD-10 accuracy at Linf 0.1 and 0.2 on every
third test digit (334). A smoke check of "does the regularizer move robustness at all in a tiny
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

from lit_robust.attacks import PGD
from lit_robust.callbacks import robust_flags
from lit_robust.data import MNISTSampleDataModule
from lit_robust.defenses import (
    GFA,
    FlowGradientRegularization,
    InputGradientRegularization,
    StandardTraining,
)
from lit_robust.models import SmallCNN

MNIST = (0.1307, 0.3081)


def adam(parameters):
    return torch.optim.Adam(parameters, lr=1e-3)


def sgd(parameters):
    return torch.optim.SGD(parameters, lr=0.01, momentum=0.9, weight_decay=5e-4)


# name -> (defense factory, optimizer, Normalize mean/std)
CONFIGURATIONS: dict[str, tuple[Callable, Callable, tuple[float, float]]] = {
    "standard": (lambda net: StandardTraining(net), adam, MNIST),
    "input_gradient_lam10": (lambda net: InputGradientRegularization(net, lam=10.0), adam, MNIST),
    "flow_gradient": (lambda net: FlowGradientRegularization(net), adam, MNIST),
    "gfa_deep_lam1": (lambda net: GFA(net, lam=1.0), adam, MNIST),
    "gfa_deep_lam0.1": (lambda net: GFA(net, lam=0.1), adam, MNIST),
    "gfa_deep_lam1_sgd": (lambda net: GFA(net, lam=1.0), sgd, (0.5, 0.5)),
    "gfa_first": (lambda net: GFA(net, taps="first", lam=1.0), adam, MNIST),
}


def main(names: list[str]) -> None:
    datamodule = MNISTSampleDataModule(batch_size=64)
    print("| configuration | fit (s) | clean | PGD-10 @ 0.1 | PGD-10 @ 0.2 |\n|---|---|---|---|---|")
    for name in names or list(CONFIGURATIONS):
        make, optimizer, (mean, std) = CONFIGURATIONS[name]
        L.seed_everything(0, verbose=False)
        model = make(SmallCNN(mean=mean, std=std))
        model.optimizer_factory = optimizer
        start = time.time()
        trainer = L.Trainer(
            max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        )  # fmt: skip
        trainer.fit(model, datamodule=datamodule)
        x, y = (t[::3] for t in datamodule.test_set.tensors)
        torch.manual_seed(0)
        flags = robust_flags(model, x, y, [PGD(0.1, steps=10), PGD(0.2, steps=10)])
        accuracy = {key: flag.float().mean().item() for key, flag in flags.items()}
        print(
            f"| {name} | {time.time() - start:.0f} | {accuracy['clean']:.3f} | "
            f"{accuracy['pgd_linf_0.1']:.3f} | {accuracy['pgd_linf_0.2']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
