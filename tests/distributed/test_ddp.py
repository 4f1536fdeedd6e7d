"""DDP on CPU (gloo, 2 processes): training and every evaluation callback, sample for sample equal to
a single process on the same checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_tiny(out: Path, devices: int, ckpt: Path | None = None) -> dict[str, float]:
    command = [sys.executable, "-m", "tests.distributed.run_tiny", str(out), "--devices", str(devices)]
    if ckpt is not None:
        command += ["--ckpt", str(ckpt)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / f"metrics_{devices}.json").read_text())


@pytest.mark.slow
def test_ddp_fit_validate_and_test_equal_a_single_process_run(tmp_path):
    distributed = run_tiny(tmp_path, devices=2)
    single = run_tiny(tmp_path, devices=1, ckpt=tmp_path / "model.ckpt")
    assert distributed.pop("world_size") == 2 and single.pop("world_size") == 1
    for stage in ("val", "test"):
        expected = {f"{stage}/{key}" for key in ("acc", "subset_acc", "worst_case_acc")}
        expected |= {f"{stage}/robust_acc/{name}" for name in ("fgsm_linf_0.05", "pgd_linf_0.05")}
        expected |= {f"{stage}/median_l2/deepfool_l2", f"{stage}/gfa_abs_cos/input"}
        assert expected <= set(single), sorted(single)
    assert sorted(distributed) == sorted(single)
    for name, value in single.items():
        if "/attack_seconds/" in name:  # a clock, summed over both processes: only its presence is equal
            assert distributed[name] > 0 and value > 0, name
            continue
        assert distributed[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert 0 < single["test/acc"] < 1  # an imperfect model: a double-counted sample would show
