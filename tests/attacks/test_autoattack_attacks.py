"""The pyautoattack-backed attacks against pyautoattack itself, its sanity checks, and its side effects."""

from __future__ import annotations

import copy
import logging
import sys
import warnings

import pytest
import torch
from pyautoattack import AutoAttack as PyAutoAttack
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from pyautoattack.fab_pt import FABAttack_PT
from pyautoattack.square import SquareAttack
from torch import nn

from lit_robust.attacks.apgd import APGDCE, APGDDLR, APGDT
from lit_robust.attacks.autoattack import AutoAttack
from lit_robust.attacks.autoattack_compat import LOGGER
from lit_robust.attacks.base import GradientMaskingWarning, ThreatModel
from lit_robust.attacks.fab_t import FABT
from lit_robust.attacks.square import Square
from lit_robust.models import Normalize
from lit_robust.models.modes import frozen_parameters
from tests.attacks.cases_autoattack import CASES
from tests.helpers import tiny_cnn

CPU = torch.device("cpu")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def square_images_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An untrained CNN on 16x16 images (Square's L2 start cannot tile 12x12), labels = its predictions."""
    torch.manual_seed(0)
    model = nn.Sequential(
        Normalize(0.5, 0.3), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(128, 4),
    ).eval()  # fmt: skip
    x = torch.rand(16, 1, 16, 16)
    with torch.no_grad():
        return model, x, model(x).argmax(1)


# (ours, pyautoattack's class called directly with the same settings; 4 classes cap 9 targets at 3)
REFERENCES = [
    (APGDCE(0.1, steps=5), lambda m: APGDAttack(m, n_iter=5, eps=0.1, seed=0, loss="ce", device=CPU)),
    (
        APGDCE(1.0, norm="l2", steps=12, restarts=2, seed=3),
        lambda m: APGDAttack(m, n_iter=12, norm="L2", n_restarts=2, eps=1.0, seed=3, loss="ce", device=CPU),
    ),
    (APGDDLR(0.1, steps=5), lambda m: APGDAttack(m, n_iter=5, eps=0.1, seed=0, loss="dlr", device=CPU)),
    (
        APGDT(0.1, steps=5),
        lambda m: APGDAttack_targeted(m, n_iter=5, eps=0.1, n_target_classes=3, device=CPU),
    ),
    (
        APGDT(0.1, steps=5, n_target_classes=2),
        lambda m: APGDAttack_targeted(m, n_iter=5, eps=0.1, n_target_classes=2, device=CPU),
    ),
    (
        FABT(0.1, steps=5),
        lambda m: FABAttack_PT(m, n_iter=5, eps=0.1, targeted=True, n_target_classes=3, device=CPU),
    ),
    (
        FABT(1.0, norm="l2", steps=5, restarts=2, seed=1),
        lambda m: FABAttack_PT(
            m,
            norm="L2",
            n_restarts=2,
            n_iter=5,
            eps=1.0,
            seed=1,
            targeted=True,
            n_target_classes=3,
            device=CPU,
        ),
    ),
    (
        Square(0.2, n_queries=50, p_init=0.5),
        lambda m: SquareAttack(m, n_queries=50, eps=0.2, p_init=0.5, resc_schedule=False, device=CPU),
    ),
]


@pytest.mark.parametrize(("attack", "reference"), REFERENCES, ids=[a.name for a, _ in REFERENCES])
def test_wrappers_equal_pyautoattack(attack, reference, trained_tiny):
    model, x, y = trained_tiny
    with frozen_parameters(model):
        expected = reference(model).perturb(x, y)
        assert torch.equal(attack.perturb(model, x, y), expected)  # exactly, before the final projection
    assert not torch.equal(expected, x)
    # the base's projection x + (x_adv - x) may move a coordinate by one rounding error
    torch.testing.assert_close(attack(model, x, y), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_square_l2_l1_equal_pyautoattack_and_refuse_sizes_it_cannot_tile(norm, trained_tiny):
    model, x, y = square_images_model()
    expected = SquareAttack(model, norm=norm.upper(), n_queries=30, eps=2.0, resc_schedule=False).perturb(
        x, y
    )
    assert not torch.equal(expected, x)
    torch.testing.assert_close(Square(2.0, norm=norm, n_queries=30)(model, x, y), expected, atol=1e-6, rtol=0)
    model, x, y = trained_tiny  # 12x12 images: pyautoattack itself fails on them
    with pytest.raises(RuntimeError):
        SquareAttack(model, norm=norm.upper(), n_queries=2, eps=2.0).perturb(x, y)
    for attack in (Square(2.0, norm=norm, n_queries=2), AutoAttack(2.0, norm=norm, apgd_steps=1)):
        with pytest.raises(ValueError, match="cannot tile"):
            attack(model, x, y)


def _reference_autoattack(model, eps, apgd_steps, fab_steps, queries):
    """pyautoattack's standard AutoAttack; its APGDs rebuilt with fewer steps, as its constructor does."""
    reference = PyAutoAttack(model, norm="Linf", eps=eps, seed=0, version="standard", device=CPU)
    options = dict(n_iter=apgd_steps, eps=eps, norm="Linf", eot_iter=1, rho=0.75, seed=0, device=CPU)
    reference.apgd = APGDAttack(model, n_restarts=1, logger=reference.logger, **options)
    reference.apgd_targeted = APGDAttack_targeted(
        model, n_restarts=1, n_target_classes=3, logger=reference.logger, **options
    )
    reference.fab.n_iter, reference.fab.n_target_classes = fab_steps, 3
    reference.square.n_queries = queries
    return reference


def test_autoattack_equals_pyautoattack_and_is_the_per_sample_worst_case(trained_tiny):
    model, x, y = trained_tiny
    attack = AutoAttack(0.1, apgd_steps=10, fab_steps=5, n_queries=50)
    with frozen_parameters(model):
        expected = _reference_autoattack(model, 0.1, 10, 5, 50).run_standard_evaluation(x, y)[0]
        reference = _reference_autoattack(model, 0.1, 10, 5, 50)
        expected_individual = reference.run_standard_evaluation_individual(x, y)
        assert torch.equal(attack.perturb(model, x, y), expected)
    x_adv = attack(model, x, y)
    torch.testing.assert_close(x_adv, expected, atol=1e-6, rtol=0)
    individual = attack.run_individual(model, x, y)
    assert list(individual) == attack.components == ["apgd_ce", "apgd_t", "fab_t", "square"]
    for component, x_component in individual.items():
        expected_component = expected_individual[component.replace("_", "-")][0]
        torch.testing.assert_close(x_component, expected_component, atol=1e-6, rtol=0)
        assert accuracy(model, x_adv, y) <= accuracy(model, x_component, y)
    assert accuracy(model, x_adv, y) < accuracy(model, x, y)


def test_autoattack_default_budgets_equal_pyautoattack(trained_tiny):
    """No overrides: pyautoattack's own standard settings (APGD-CE fools every point at this eps)."""
    model, x, y = trained_tiny
    with frozen_parameters(model):
        expected = PyAutoAttack(model, eps=0.25, seed=0, device=CPU).run_standard_evaluation(x[:8], y[:8])[0]
    torch.testing.assert_close(AutoAttack(0.25)(model, x[:8], y[:8]), expected, atol=1e-6, rtol=0)
    assert accuracy(model, expected, y[:8]) == 0


@pytest.mark.parametrize("version", ["standard", "plus", "rand"])
def test_components_are_pyautoattacks(version):
    expected = PyAutoAttack(nn.Identity(), version=version).attacks_to_run
    assert [c.replace("_", "-") for c in AutoAttack(0.1, version=version).components] == expected


class Rounding(nn.Module):
    """Quantizes the input: the gradient is zero everywhere (a classic masked model)."""

    def forward(self, x):
        return (x * 4).round() / 4


class Noisy(nn.Module):
    def forward(self, x):
        return x + 0.05 * torch.randn_like(x)


class Dynamic(nn.Module):
    """A test-time computation with autograd inside the forward (AutoAttack's "dynamic defense")."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        with torch.enable_grad():
            probe = x.detach().requires_grad_(True)
            torch.autograd.grad(self.net(probe).logsumexp(1).sum(), probe)
        return self.net(x)


MASKED = {
    "probability": lambda net: nn.Sequential(net, nn.Softmax(dim=1)),
    "zero gradient": lambda net: nn.Sequential(Rounding(), net),
    "randomized": lambda net: nn.Sequential(Noisy(), net),
    "dynamic": Dynamic,
}
CHEAP_AUTOATTACK = AutoAttack(0.1, apgd_steps=5, fab_steps=5, n_queries=50)


def masking_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """pyautoattack's flags: ours, or the bare ``Warning`` it emits when nothing captures them."""
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, GradientMaskingWarning) or w.category is Warning
    ]


@pytest.mark.parametrize("flag", list(MASKED))
def test_masking_warning_fires_on_masked_models(flag, trained_tiny):
    model, x, y = trained_tiny
    with pytest.warns(GradientMaskingWarning, match=flag):
        CHEAP_AUTOATTACK(MASKED[flag](model), x, y)


def test_standalone_apgd_dlr_flags_zero_gradients(trained_tiny):
    model, x, y = trained_tiny
    with pytest.warns(GradientMaskingWarning, match="zero gradient"):
        APGDDLR(0.1, steps=2)(MASKED["zero gradient"](model), x, y)


def test_no_masking_warning_on_a_normal_model_even_after_a_dynamic_one(trained_tiny):
    """pyautoattack never resets the counters of its dynamic-forward check: without our reset, one dynamic
    model would flag every later one."""
    model, x, y = trained_tiny
    with pytest.warns(GradientMaskingWarning, match="dynamic"):
        CHEAP_AUTOATTACK(Dynamic(model), x, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x_adv = CHEAP_AUTOATTACK(model, x, y)
        APGDDLR(0.1, steps=5)(model, x, y)
        APGDT(0.1, steps=5)(model, x, y)
    assert masking_warnings(caught) == []
    assert 0 < accuracy(model, x_adv, y) < 1  # a real evaluation: some points fooled, some robust


def test_quiet_by_default_verbose_on_request_logger_restored(trained_tiny, capsys, caplog):
    model, x, y = trained_tiny
    caplog.set_level(logging.DEBUG)  # a root logger at DEBUG would show AutoAttack's progress
    saved = LOGGER.level, LOGGER.propagate, list(LOGGER.handlers)
    quiet = [
        AutoAttack(0.1, apgd_steps=2, fab_steps=2, n_queries=5),
        APGDCE(0.1, steps=2),
        FABT(0.1, steps=2),
    ]
    for attack in quiet:
        attack(model, x, y)
    assert capsys.readouterr() == ("", "") and not caplog.records
    AutoAttack(0.1, apgd_steps=2, fab_steps=2, n_queries=5, verbose=True)(model, x, y)
    APGDCE(0.1, steps=2, verbose=True)(model, x, y)
    out, err = capsys.readouterr()
    assert "robust accuracy" in err and "iteration" in out
    assert (LOGGER.level, LOGGER.propagate, list(LOGGER.handlers)) == saved


@pytest.mark.parametrize(
    "attack",
    [APGDCE(0.1, steps=3), AutoAttack(0.1, version="custom", attacks=["apgd_ce"], apgd_steps=3)],
    ids=lambda a: a.name,
)
def test_caller_rng_and_tracing_untouched(attack, trained_tiny):
    """pyautoattack reseeds the global generators and calls ``sys.settrace(None)``; we undo both."""
    model, x, y = trained_tiny
    torch.manual_seed(12345)  # not the attack's seed
    state = torch.get_rng_state()
    previous = sys.gettrace()

    def tracer(frame, event, arg):
        return None

    sys.settrace(tracer)
    try:
        attack(model, x, y)
        after = sys.gettrace()
    finally:
        sys.settrace(previous)
    assert after is tracer
    assert torch.equal(torch.get_rng_state(), state)


def test_seed_none_follows_torch_global_seed(trained_tiny):
    model, x, y = trained_tiny
    attack = APGDCE(0.1, steps=3, seed=None)
    torch.manual_seed(1)
    first = attack(model, x, y)
    torch.manual_seed(1)
    assert torch.equal(attack(model, x, y), first)
    assert not torch.equal(attack(model, x, y), first)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("attack", CASES, ids=lambda a: a.name)
def test_runs_on_the_device_of_the_inputs(attack, trained_tiny):
    model, x, y = trained_tiny
    model, x, y = copy.deepcopy(model).cuda(), x.cuda(), y.cuda()
    x_adv = attack(model, x, y)
    assert x_adv.device == x.device and not torch.equal(x_adv, x)


def test_names_and_threat_models():
    assert APGDCE(8 / 255).name == "apgd_ce_linf_8_255"
    assert APGDDLR(0.5, norm="l2").name == "apgd_dlr_l2_0.5"
    assert APGDT(0.3).name == "apgd_t_linf_0.3"
    assert FABT(8 / 255).name == "fab_t_linf_8_255"
    assert Square(0.05).name == "square_linf_0.05"
    assert AutoAttack(8 / 255).name == "autoattack_linf_8_255"
    assert AutoAttack(0.5, norm="l2", version="plus").name == "autoattack_plus_l2_0.5"
    assert AutoAttack(8 / 255, apgd_steps=10).name == "autoattack_custom_linf_8_255"
    assert AutoAttack(0.1, version="custom", attacks=["apgd_ce"]).name == "autoattack_custom_linf_0.1"
    assert AutoAttack(12.0, norm="l1").threat_model is ThreatModel.L1
    assert (
        APGDCE(0.1).threat_model is ThreatModel.LINF and FABT(0.5, norm="l2").threat_model is ThreatModel.L2
    )


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: APGDCE(0.1, norm="l3"), "norm"),
        (lambda: Square(0.1, norm="Linf"), "norm"),
        (lambda: AutoAttack(0.1, norm="linf2"), "norm"),
        (lambda: AutoAttack(0.1, version="fast"), "version"),
        (lambda: APGDT(0.1, n_target_classes=0), "n_target_classes"),
        (lambda: FABT(0.1, n_target_classes=0), "n_target_classes"),
        (lambda: APGDCE(0.1, steps=0), "steps"),
        (lambda: APGDT(0.1, steps=0), "steps"),
        (lambda: FABT(0.1, steps=0), "steps"),
        (lambda: APGDDLR(0.1, restarts=0), "restarts"),
        (lambda: APGDCE(0.1, steps=2.5), "steps"),
        (lambda: Square(0.1, n_queries=0), "n_queries"),
        (lambda: Square(0.1, p_init=0.0), "p_init"),
        (lambda: APGDCE(0.1, seed=-1), "seed"),
        (lambda: AutoAttack(0.1, seed="0"), "seed"),
        (lambda: AutoAttack(0.1, attacks=["apgd_ce"]), "attacks"),
        (lambda: AutoAttack(0.1, version="custom"), "attacks"),
        (lambda: AutoAttack(0.1, version="custom", attacks=["apgd-ce"]), "attacks"),
        (lambda: AutoAttack(0.1, apgd_steps=0), "apgd_steps"),
        (lambda: AutoAttack(0.1, n_queries=0), "n_queries"),
        (lambda: AutoAttack(0.1, batch_size=0), "batch_size"),
        (lambda: AutoAttack(8.0), "eps"),
    ],
)
def test_bad_arguments_name_the_parameter(make, parameter):
    with pytest.raises((ValueError, TypeError), match=parameter):  # TypeError: steps=2.5, seed="0"
        make()


@pytest.mark.parametrize(
    ("attack", "classes"),
    [(APGDT(0.1, steps=1), 3), (APGDDLR(0.1, steps=1), 2), (AutoAttack(0.1, apgd_steps=1), 3)],
    ids=lambda a: getattr(a, "name", str(a)),
)
def test_too_few_classes_is_a_clear_error(attack, classes):
    model = tiny_cnn(num_classes=classes).eval()
    with pytest.raises(ValueError, match=f"at least {classes + 1} classes, got {classes}"):
        attack(model, torch.rand(4, 1, 12, 12), torch.zeros(4, dtype=torch.long))
