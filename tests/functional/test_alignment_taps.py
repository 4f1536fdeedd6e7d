"""The GFA measurement on a network (functional.alignment): tap selection, recording forward, summaries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.functional.alignment import (
    INPUT_TAP,
    build_taps,
    measure_alignment,
    per_sample_cosine,
    summarize_cosines,
)
from lit_robust.models import Normalize


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        Normalize(0.5, 0.3), nn.Flatten(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3)
    ).double()


def test_variants_select_the_documented_modules():
    network = net()
    x = torch.rand(5, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1])
    selections = {"first": [INPUT_TAP], "deep": [INPUT_TAP, "4"], "DEEP": [INPUT_TAP, "4"]}
    for variant, names in selections.items():  # "deep": the first Linear's input is the flattened x
        _, _, cosines = measure_alignment(network, build_taps(network, variant, ["torch.nn.Linear"]), x, y)
        assert list(cosines) == names, variant
    _, _, cosines = measure_alignment(network, build_taps(network, ["3"], ["torch.nn.Linear"]), x, y)
    assert list(cosines) == [INPUT_TAP, "3"]
    with pytest.raises(ValueError, match="taps must be 'first', 'deep' or a list"):
        build_taps(network, "middle", ["torch.nn.Linear"])
    with pytest.raises(ValueError, match="network-input tap, always present"):
        build_taps(network, [INPUT_TAP, "2"], ["torch.nn.Linear"])


def test_cosines_equal_the_formula_and_summaries_name_each_tap():
    network = net()
    x = torch.rand(5, 2, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match="x must require grad"):
        measure_alignment(network, build_taps(network, "first", []), x, y)
    leaf = x.clone().requires_grad_(True)
    per_sample, logits, cosines = measure_alignment(
        network, build_taps(network, "deep", ["torch.nn.Linear"]), leaf, y, input_center=0.25, eps_cos=0.0
    )
    torch.testing.assert_close(per_sample, F.cross_entropy(network(x), y, reduction="none"))
    torch.testing.assert_close(logits, network(x))
    for b in range(len(x)):  # one sample at a time: the input tap, then the input of Linear "4"
        xb = x[b : b + 1].clone().requires_grad_(True)
        hidden = network[3](network[2](network[1](network[0](xb))))
        loss = F.cross_entropy(network[4](hidden), y[b : b + 1])
        g_x, g_h = torch.autograd.grad(loss, [xb, hidden])
        torch.testing.assert_close(cosines[INPUT_TAP][b], per_sample_cosine(g_x, xb - 0.25, 0.0)[0])
        torch.testing.assert_close(cosines["4"][b], per_sample_cosine(g_h, hidden, 0.0)[0])
    metrics = summarize_cosines("test", cosines)
    assert set(metrics) == {f"test/{kind}/{tap}" for kind in ("gfa_abs_cos", "gfa_cos") for tap in cosines}
    torch.testing.assert_close(metrics["test/gfa_abs_cos/4"], cosines["4"].abs().mean())
    torch.testing.assert_close(metrics["test/gfa_cos/input"], cosines[INPUT_TAP].mean())
