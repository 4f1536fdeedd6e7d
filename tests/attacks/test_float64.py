"""Every attack runs on a float64 model and float64 images, returning float64 images.

advertorch's CW, EAD, FAB and stAdv and pyautoattack's APGD and FAB-T are float32-only inside; they
run on a float32 view of the model (``lit_robust.attacks.float32``), the model itself in float64.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from lit_robust.attacks import APGDCE, APGDT, CWL2, EAD, FAB, FABT, Attack, AutoAttack, StAdv, Transfer
from lit_robust.attacks.float32 import Float32View, float32_view
from tests.attacks.cases import ATTACKS, target_for
from tests.attacks.test_attack_family import within_ball


class RequireFloat64(nn.Module):
    """Fails on anything but float64 inputs: a library that casts to float32 must not get past it
    (a float64 model with a Normalize buffer would silently promote float32 inputs instead)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != torch.float64:
            raise TypeError(f"the float64 model got {x.dtype} inputs")
        return x


def as_float64(model: nn.Module) -> nn.Module:
    return nn.Sequential(RequireFloat64(), copy.deepcopy(model).double()).eval()


def on_float64_source(attack: Attack, source: nn.Module) -> Attack:
    """``attack``, with a transfer attack's source replaced by the float64 ``source``."""
    if isinstance(attack, Transfer):
        return Transfer(attack.attack, source=source, source_name="self")
    return attack


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_every_attack_runs_on_float64(attack, trained_tiny):
    model, x, y = trained_tiny
    model64, x64 = as_float64(model), x.double()
    x_adv = on_float64_source(attack, model64)(target_for(attack, model64), x64, y)
    assert x_adv.dtype == torch.float64 and x_adv.shape == x.shape
    assert torch.isfinite(x_adv).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    assert within_ball(x_adv, x64, attack)
    assert not torch.equal(x_adv, x64)  # it did perturb


@pytest.fixture(scope="module")
def linear() -> tuple[nn.Module, Tensor, Tensor]:
    """A small linear classifier (10 classes on 8x8 images) and inputs it classifies with small margins."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model, x, y


@pytest.mark.parametrize(
    "attack",
    [
        CWL2(steps=20, lr=0.05),
        EAD(c=1.0, binary_search_steps=2, steps=20),
        FAB(norm="linf", steps=10),
        FAB(norm="l2", steps=10),
        StAdv(steps=10),
        APGDCE(0.1, steps=10),
        APGDT(0.1, steps=10),
        FABT(0.1, steps=10),
        AutoAttack(0.1, apgd_steps=5, fab_steps=5, n_queries=20),
    ],
    ids=lambda a: a.name,
)
def test_float64_matches_float32(attack, linear):
    """The library sees the same float32 inputs (seeded starts included); only the model's precision
    differs, so the float64 result is the float32 one up to rounding."""
    model, x, y = linear
    x_adv32 = attack(model, x, y)
    x_adv64 = attack(as_float64(model), x.double(), y)
    assert x_adv64.dtype == torch.float64
    assert not torch.equal(x_adv32, x)  # a comparison of clean inputs would prove nothing
    torch.testing.assert_close(x_adv64.float(), x_adv32, rtol=0, atol=1e-5)


def test_autoattack_run_individual_on_float64(linear):
    model, x, y = linear
    attack = AutoAttack(0.1, version="custom", attacks=["apgd_ce", "fab_t"], apgd_steps=5, fab_steps=5)
    expected = attack.run_individual(model, x, y)
    results = attack.run_individual(as_float64(model), x.double(), y)
    assert set(results) == {"apgd_ce", "fab_t"}
    for component, x_adv in results.items():
        assert x_adv.dtype == torch.float64
        torch.testing.assert_close(x_adv.float(), expected[component], rtol=0, atol=1e-5)


def test_float32_view():
    model = as_float64(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    x = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    view, x32 = float32_view(model, x)
    assert isinstance(view, Float32View) and x32.dtype == torch.float32
    out = view(x32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(x).float())
    (grad,) = torch.autograd.grad(out.sum(), x)  # gradients flow through both casts
    assert grad.dtype == torch.float64 and grad.abs().sum() > 0
    plain = nn.Linear(4, 2)
    same_model, same_x = float32_view(plain, x32)
    assert same_model is plain and same_x is x32  # float32 inputs: nothing changes
