"""The quickstart notebook runs end to end with its small defaults and reports sane numbers.

The notebook is executed as stored (nothing overridden) with nbclient, in a temporary working
directory, on the ``python3`` kernel of the running interpreter's environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
KERNEL = "python3"
CELL_TIMEOUT_S = 300
MODELS = ("standard", "fast_at")


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def stdout_text(cell: nbformat.NotebookNode) -> str:
    return "".join(
        out.text for out in cell.get("outputs", []) if out.output_type == "stream" and out.name == "stdout"
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> nbformat.NotebookNode:
    """The notebook after a full run; any cell error fails every test that uses it."""
    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.fail(f"no {KERNEL!r} Jupyter kernel: install ipykernel in this environment")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    workdir = tmp_path_factory.mktemp("quickstart")
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(workdir)}},  # the kernel's working directory
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MPLBACKEND", raising=False)  # keep the kernel's inline backend, which emits PNGs
        # One torch thread in the kernel, as conftest.py sets for the suite: on two shared cores,
        # intra-op threads spin and cost several times the work (a run's own setting is kept).
        mp.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
        client.execute()  # raises CellExecutionError with the traceback if a cell fails
    return nb


def test_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in code_cells(nb):
        assert cell.outputs == [] and cell.execution_count is None, "clear the notebook's outputs"
    first = code_cells(nb)[0]
    assert "SMALL = True" in first.source, "the parameters cell must default to the small run"


@pytest.mark.slow
def test_runs_without_error(executed: nbformat.NotebookNode) -> None:
    for cell in code_cells(executed):
        errors = [out for out in cell.outputs if out.output_type == "error"]
        assert not errors, f"{cell.source[:80]!r} raised {errors[0].ename}: {errors[0].evalue}"
        assert cell.execution_count is not None


@pytest.mark.slow
def test_reports_clean_and_robust_accuracy(executed: nbformat.NotebookNode) -> None:
    text = stdout_text(code_cells(executed)[-1])
    assert "test/acc" in text
    results = json.loads(text)
    assert set(results) == set(MODELS)
    for name in MODELS:
        metrics = results[name]
        robust = {key: value for key, value in metrics.items() if key.startswith("test/robust_acc/")}
        assert len(robust) == 2, f"{name}: expected FGSM and PGD robust accuracy, got {sorted(metrics)}"
        accuracies = {key: value for key, value in metrics.items() if key.endswith("acc") or key in robust}
        assert {"test/acc", "test/subset_acc", "test/worst_case_acc"} <= set(accuracies)
        for key, value in accuracies.items():
            assert 0.0 <= value <= 1.0, f"{name}: {key} = {value} is not an accuracy"
        # The per-sample worst case survives every attack; an attack only runs on clean-correct points.
        assert metrics["test/worst_case_acc"] <= min(robust.values()) + 1e-6
        assert max(robust.values()) <= metrics["test/subset_acc"] + 1e-6
    standard = results["standard"]
    assert standard["test/acc"] > 0.2, "standard training did not learn beyond chance (0.1)"
    assert standard["test/worst_case_acc"] < standard["test/subset_acc"], "the attacks fooled nothing"


@pytest.mark.slow
def test_plots_rendered(executed: nbformat.NotebookNode) -> None:
    images = [
        out
        for cell in code_cells(executed)
        for out in cell.outputs
        if out.output_type == "display_data" and "image/png" in out.get("data", {})
    ]
    assert len(images) >= 2, "expected the accuracy bar chart and the adversarial examples grid"
