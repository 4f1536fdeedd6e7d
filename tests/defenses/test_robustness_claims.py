"""The papers' robustness claims, checked in a small budget on the embedded MNIST sample.

Each defense is trained exactly as ``benchmarks/short_run_robustness.py`` trains it (SmallCNN,
2 epochs of batch 64, Adam, seed 0; the recipe's copy in ``tests/helpers.py``, which
``test_the_recipe_is_the_benchmarks`` compares with the benchmark's source) next to ``StandardTraining``
with the same budget, and attacked on the same 334 test digits. Margins are several standard errors of a
334-sample accuracy (about 0.025), below the gaps that benchmark measures
(``benchmarks/results/short_run_robustness_cpu.md``).

Flow-gradient regularization is not here any more: its gain under flow-PGD at 0.5 px depends on the
batch order in this budget (+6.9 points with the fixed order every epoch that the DataModules used to
replay, +2.1 with a new order each epoch, within the noise of 334 digits), so a 2-epoch run does not
establish it; the leaderboard issue measures it at 20 epochs.

GFA is not here: its paper claims robustness, but our reconstruction (``papers/gfa.md``) shows no
clear gain in this budget: at lam 0.1 (random head) PGD-10 accuracy moves by +3.0 and +6.6 points
at 0.1 and 0.2, near the noise of 334 digits and against a standard row that itself moved by 9
points with the batch order; at lam 1 it falls at 0.2, at lam 10 clean accuracy is chance (see the
benchmark). That the regularizer raises the alignment it optimizes is tested in
``test_gfa.py``.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

import tests.helpers
from lit_robust.data import MNISTSampleDataModule
from tests.helpers import CONFIGURATIONS, evaluate, train

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "short_run_robustness.py"

# configuration -> (the paper's threat model: the attack's metric name, required gain over standard)
CLAIMS = {
    # Ross & Doshi-Velez: robustness to gradient attacks. Measured gains: +9.3 points (the benchmark's
    # table) and +6.0 on another 2-core machine (AMD EPYC, same versions: other CPU kernels move a 2-epoch
    # run); 0.05, the gain both machines show, is 2 standard errors of a 334-digit accuracy
    "input_gradient_lam10": ("pgd_linf_0.2", 0.05),
    "local_flatness_k5": ("pgd_linf_0.2", 0.08),  # Xu et al.: Linf robustness, PGD in their evaluation
}


def top_level_definitions(path: Path) -> dict[str, ast.AST]:
    """The module's top-level functions and assignments by name, parsed (never imported)."""
    definitions: dict[str, ast.AST] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            definitions[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            definitions.update({t.id: node.value for t in targets if isinstance(t, ast.Name)})
    return definitions


def configuration_entries(table: ast.AST) -> dict[str, str]:
    """A ``CONFIGURATIONS = {...}`` literal as name -> source of its (factory, optimizer, network) entry."""
    assert isinstance(table, ast.Dict)
    pairs = zip(table.keys, table.values, strict=True)
    return {ast.literal_eval(key): ast.unparse(value) for key, value in pairs}


def test_the_recipe_is_the_benchmarks():
    """``tests.helpers`` copies the benchmark's recipe (tests never import ``benchmarks/``): the same
    training and evaluation code, attacks, optimizer, SmallCNN statistics and claimed configurations."""
    ours, theirs = top_level_definitions(Path(tests.helpers.__file__)), top_level_definitions(BENCHMARK)
    for name in ("MNIST", "adam", "ATTACKS", "train", "evaluate"):
        assert ast.dump(ours[name]) == ast.dump(theirs[name]), name
    our_entries, their_entries = (configuration_entries(t["CONFIGURATIONS"]) for t in (ours, theirs))
    assert set(CLAIMS) | {"standard"} == set(our_entries) == set(CONFIGURATIONS)
    assert {name: their_entries.get(name) for name in our_entries} == our_entries


@pytest.fixture(scope="module", autouse=True)
def every_core():
    """SmallCNN training wants every core; the rest of the suite runs on one thread."""
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sample() -> MNISTSampleDataModule:
    datamodule = MNISTSampleDataModule(batch_size=64)
    datamodule.setup()
    return datamodule


@pytest.fixture(scope="module")
def standard(sample):
    return train("standard", sample)


@pytest.fixture(scope="module")
def standard_accuracy(standard, sample) -> dict[str, float]:
    return evaluate(standard, sample)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLAIMS))
def test_the_regularizer_is_more_robust_than_standard_training_in_its_threat_model(
    name, sample, standard_accuracy
):
    attack, gain = CLAIMS[name]
    accuracy = evaluate(train(name, sample), sample)
    assert accuracy[attack] > standard_accuracy[attack] + gain, (accuracy, standard_accuracy)
    assert accuracy["clean"] > 0.8  # robust by learning, not by refusing to classify
