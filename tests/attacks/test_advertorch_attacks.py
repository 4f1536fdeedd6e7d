"""The advertorch-backed attacks: the same answer as advertorch, closed forms on an affine classifier,
honest failures (the clean input, never a placeholder), and clear argument errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from lit_robust.attacks.advertorch_compat import (
    CarliniWagnerL2Attack,
    DDNL2Attack,
    ElasticNetL1Attack,
    FABAttack,
    LinfBasicIterativeAttack,
    MomentumIterativeAttack,
    SparseL1DescentAttack,
    SpatialTransformAttack,
    quiet_advertorch,
)
from lit_robust.attacks.base import Attack
from lit_robust.attacks.bim import BIM
from lit_robust.attacks.cw import CWL2
from lit_robust.attacks.ddn import DDN
from lit_robust.attacks.ead import EAD
from lit_robust.attacks.fab import FAB
from lit_robust.attacks.mifgsm import MIFGSM
from lit_robust.attacks.pgd import PGD
from lit_robust.attacks.stadv import StAdv
from lit_robust.models.modes import frozen_parameters


class Affine(nn.Module):
    """Two classes, logits ``[0, w·x + b]``: the decision boundary is the hyperplane ``w·x + b = 0``."""

    def __init__(self, w: Tensor, b: float):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x: Tensor) -> Tensor:
        margin = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(margin), margin], dim=1)

    def margin(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self(x)[:, 1]


def affine_problem(zero_weight: bool = False, n: int = 8) -> tuple[Affine, Tensor, Tensor]:
    """4x4 one-channel points at L2 distance 0.04 to 0.12 from the boundary of a random affine
    classifier, on both sides, in about [0.35, 0.65]: neither the attacks nor the closed-form points
    reach the box edge."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=g)
    if zero_weight:
        w[5] = 0.0  # a pixel without gradient
    u = w / w.norm()
    distance = 0.04 + 0.08 * torch.rand(n, generator=g)
    side = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    noise = 0.1 * (2 * torch.rand(n, 16, generator=g) - 1)
    noise -= (noise @ u)[:, None] * u  # orthogonal to w: leaves the margin alone
    x = (0.5 + noise + (side * distance)[:, None] * u).view(n, 1, 4, 4)
    model = Affine(w, -0.5 * w.sum().item()).eval()
    return model, x, (model.margin(x) > 0).long()


# ---------------------------------------------------------------------------------------------------
# (1) Our wrappers give advertorch's answer (minimal attacks: with failures replaced by the clean x).

MakeAdvertorch = Callable[[nn.Module], object]
EAD_SETTINGS = dict(binary_search_steps=2, max_iterations=10, initial_const=1.0, beta=1e-3, abort_early=True)
SAME_AS_ADVERTORCH: list[tuple[Attack, MakeAdvertorch, float]] = [
    (
        PGD(1.0, norm="l1", steps=5, step_size=0.3, l1_sparsity=0.9),
        lambda m: SparseL1DescentAttack(m, eps=1.0, nb_iter=5, eps_iter=0.3, rand_init=True, l1_sparsity=0.9),
        1e-6,
    ),
    (
        BIM(0.1, steps=5, step_size=0.03),
        lambda m: LinfBasicIterativeAttack(m, eps=0.1, nb_iter=5, eps_iter=0.03),
        1e-6,
    ),
    (
        MIFGSM(0.1, steps=5, decay=0.5),
        lambda m: MomentumIterativeAttack(m, eps=0.1, nb_iter=5, decay_factor=0.5, eps_iter=0.02),
        1e-6,
    ),
    (  # our own L2 loop (advertorch's projection can be NaN): equal up to float rounding
        MIFGSM(1.0, norm="l2", steps=5, decay=0.5),
        lambda m: MomentumIterativeAttack(m, eps=1.0, nb_iter=5, decay_factor=0.5, eps_iter=0.2, ord=2),
        1e-5,
    ),
    (
        CWL2(c=10.0, steps=10, lr=0.05, binary_search_steps=2),
        lambda m: CarliniWagnerL2Attack(
            m, 4, learning_rate=0.05, binary_search_steps=2, max_iterations=10, initial_const=10.0
        ),
        1e-6,
    ),
    (EAD(c=1.0, binary_search_steps=2, steps=10), lambda m: ElasticNetL1Attack(m, 4, **EAD_SETTINGS), 1e-6),
    (
        EAD(decision_rule="L1", c=1.0, binary_search_steps=2, steps=10),
        lambda m: ElasticNetL1Attack(m, 4, decision_rule="L1", **EAD_SETTINGS),
        1e-6,
    ),
    (DDN(steps=10), lambda m: DDNL2Attack(m, nb_iter=10), 1e-6),
    (FAB(norm="linf", steps=5), lambda m: FABAttack(m, norm="Linf", n_iter=5), 1e-6),
    (FAB(norm="l2", steps=5, restarts=2), lambda m: FABAttack(m, norm="L2", n_iter=5, n_restarts=2), 1e-6),
    (StAdv(steps=10), lambda m: SpatialTransformAttack(m, 4, initial_const=0.05, max_iterations=10), 1e-6),
]


@pytest.mark.parametrize(
    ("attack", "make_advertorch", "atol"), SAME_AS_ADVERTORCH, ids=[c[0].name for c in SAME_AS_ADVERTORCH]
)
def test_wrappers_give_the_answer_of_advertorch(attack, make_advertorch, atol, trained_tiny):
    model, x, y = trained_tiny[0], trained_tiny[1][:16], trained_tiny[2][:16]
    torch.manual_seed(0)
    ours = attack(model, x, y)
    torch.manual_seed(0)
    with frozen_parameters(model), quiet_advertorch():
        theirs = make_advertorch(model).perturb(x.clone(), y.clone())
    if attack.eps is None:  # minimal attacks: advertorch's failures (clean or, stAdv, zeros) become x
        failed = (model(theirs).argmax(1) == y) | (theirs.flatten(1) == 0).all(1)
        theirs = torch.where(failed.view(-1, 1, 1, 1), x, theirs)
    assert not torch.equal(ours, x)
    # the base's final projection, x + (x_adv - x), may move a value by one float32 rounding step
    torch.testing.assert_close(ours, theirs, rtol=0, atol=atol)


# ---------------------------------------------------------------------------------------------------
# (2) Closed forms on the affine classifier.


def dual_norm(w: Tensor, order: float) -> Tensor:
    return w.norm(p={2: 2, math.inf: 1}[order])


MINIMAL_CLOSED_FORMS = [
    # Adam (lr 0.005) keeps crossing the kink of the hinge at the boundary, where the CW optimum lies
    # once c ||w|| / 2 exceeds the distance (here c = 1, ||w|| ~ 4); 300 steps end within 1%: 2% tolerance.
    (CWL2(steps=300, lr=0.005, abort_early=False), 2, 0.02),
    # DDN's norm moves by factors (1 +- gamma): its best adversarial norm lies in [d, (1 + gamma) d).
    (DDN(steps=300, gamma=0.01, init_norm=0.2, quantize=False), 2, 0.01),
    # FAB's first iterate, x + eta * (exact projection), is adversarial; later ones replace it only when
    # smaller: the result lies in [d, eta * d].
    (FAB(norm="l2", steps=20, eta=1.01), 2, 0.01),
    (FAB(norm="linf", steps=20, eta=1.01), math.inf, 0.01),
]


@pytest.mark.parametrize(
    ("attack", "order", "rtol"), MINIMAL_CLOSED_FORMS, ids=[c[0].name for c in MINIMAL_CLOSED_FORMS]
)
def test_minimal_attacks_find_the_distance_to_an_affine_boundary(attack, order, rtol):
    """``d = |w·x + b| / ||w||_q``, q the dual norm (2 for L2, 1 for Linf)."""
    model, x, y = affine_problem()
    distance = model.margin(x).abs() / dual_norm(model.w.detach(), order)
    found = (attack(model, x, y) - x).flatten(1).norm(p=order, dim=1)
    assert (found >= distance * (1 - 1e-4)).all()  # nothing closer than the boundary fools the model
    assert (found <= distance * (1 + rtol)).all()


def top_k_mean(w: Tensor, k: int) -> Tensor:
    return w.abs().topk(k).values.mean()


BOUNDED_CLOSED_FORMS = [
    # L-inf ascent reaches the corner x - eps sign(w) (steps * step_size >= 2 eps from any start)
    (PGD(0.05), lambda w: 0.05 * w.norm(p=1)),
    (BIM(0.05, steps=20, step_size=0.005), lambda w: 0.05 * w.norm(p=1)),
    (MIFGSM(0.05, steps=10), lambda w: 0.05 * w.norm(p=1)),
    # L2 ascent from x walks straight along w to x - eps w / ||w||
    (PGD(0.3, norm="l2", random_start="none"), lambda w: 0.3 * w.norm()),
    (MIFGSM(0.3, norm="l2"), lambda w: 0.3 * w.norm()),
    # sparse L1 descent spreads eps evenly over the k = round(0.25 * 16) = 4 largest |w_i|
    (PGD(0.2, norm="l1", random_start="none", l1_sparsity=0.75), lambda w: 0.2 * top_k_mean(w, 4)),
]


@pytest.mark.parametrize(
    ("attack", "gain"), BOUNDED_CLOSED_FORMS, ids=[c[0].name for c in BOUNDED_CLOSED_FORMS]
)
def test_bounded_attacks_move_an_affine_margin_by_eps_times_the_dual_norm(attack, gain):
    """With a zero weight on one pixel: no NaN (advertorch's L2 momentum attack has them, see below)."""
    model, x, y = affine_problem(zero_weight=True)
    toward_other_class = 1 - 2 * y.float()
    moved = (model.margin(attack(model, x, y)) - model.margin(x)) * toward_other_class
    torch.testing.assert_close(moved, gain(model.w.detach()).expand_as(moved), rtol=1e-5, atol=1e-5)


def test_advertorch_l2_momentum_attack_is_nan_where_a_gradient_is_zero():
    """Why MIFGSM(norm="l2") runs its own loop: advertorch projects with ``eps * (d / ||d||) / d``."""
    model, x, y = affine_problem(zero_weight=True)
    with frozen_parameters(model):
        theirs = MomentumIterativeAttack(model, eps=0.3, nb_iter=2, eps_iter=0.1, ord=2).perturb(x, y)
    assert theirs.isnan().any()
    assert MIFGSM(0.3, norm="l2", steps=2, step_size=0.1)(model, x, y).isfinite().all()


# ---------------------------------------------------------------------------------------------------
# (3) Failures return the clean input, per sample.

MINIMAL = [
    CWL2(steps=20),
    EAD(binary_search_steps=2, steps=20),
    DDN(steps=20),
    FAB(norm="linf", steps=10),
    FAB(norm="l2", steps=10, restarts=2),
    StAdv(steps=10),
]


@pytest.mark.parametrize("attack", MINIMAL, ids=lambda a: a.name)
def test_attacks_that_cannot_succeed_return_the_clean_input(attack):
    """Logits ``[0, sum(x) + 1]``: class 1 on the whole box [0, 1]^16, so no attack can succeed."""
    model = Affine(torch.ones(16), 1.0).eval()
    x = 0.3 + 0.4 * torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    assert torch.equal(attack(model, x, torch.ones(4, dtype=torch.long)), x)


def test_stadv_never_returns_advertorchs_zeros_even_when_they_fool_the_model():
    """Logits ``[0, sum(x) - 1]`` on x in [0.5, 0.6]: a flow samples within the grid bounds [-1, 1]
    (bilinear, zero padding), so keeps at least a quarter of some pixel's value everywhere and
    ``sum >= 16 * 0.25 * 0.5 = 2 > 1``: stAdv cannot succeed. But the all-zero image is class 0."""
    model = Affine(torch.ones(16), -1.0).eval()
    x = 0.5 + 0.1 * torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.ones(4, dtype=torch.long)
    with frozen_parameters(model), quiet_advertorch():
        theirs = SpatialTransformAttack(model, 2, initial_const=0.05, max_iterations=10).perturb(x, y)
    assert (theirs == 0).all() and (model(theirs).argmax(1) != y).all()  # the trap
    assert torch.equal(StAdv(steps=10)(model, x, y), x)


WEAK = [
    CWL2(steps=10, lr=0.05),
    EAD(c=1.0, binary_search_steps=1, steps=10),
    DDN(steps=3),
    FAB(norm="linf", steps=1),
    FAB(norm="l2", steps=1),
    StAdv(steps=2),
]


@pytest.mark.parametrize("attack", WEAK, ids=lambda a: a.name)
def test_each_sample_is_either_adversarial_or_exactly_clean(attack, trained_tiny):
    """Budgets so small that the attack breaks some of the (all correctly classified) points only."""
    model, x, y = trained_tiny
    torch.manual_seed(0)
    x_adv = attack(model, x, y)
    clean = (x_adv == x).flatten(1).all(1)
    fooled = model(x_adv).argmax(1) != y
    assert clean.any() and fooled.any()
    assert (clean ^ fooled).all()


# ---------------------------------------------------------------------------------------------------
# (4) Names and argument errors.


def test_metric_names():
    names = [
        a.name
        for a in (CWL2(), EAD(), EAD(decision_rule="L1"), DDN(), FAB(), FAB(norm="l2"), StAdv(), BIM(0.3))
    ]
    assert names == ["cw_l2", "ead_en", "ead_l1", "ddn_l2", "fab_linf", "fab_l2", "stadv", "bim_linf_0.3"]
    assert MIFGSM(0.5, norm="l2").name == "mifgsm_l2_0.5"
    assert PGD(10.0, norm="l1").name == "pgd_l1_10"
    assert (BIM(0.3).steps, BIM(8 / 255).steps, BIM(0.3).step_size) == (81, 10, 1 / 255)  # Kurakin et al.


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: PGD(1.0, norm="l1", l1_sparsity=1.0), "l1_sparsity"),
        (lambda: PGD(0.1, l1_sparsity=0.5), "l1_sparsity"),
        (lambda: BIM(1.5), "eps"),
        (lambda: BIM(0.1, steps=0), "steps"),
        (lambda: BIM(0.1, step_size=0.0), "step_size"),
        (lambda: MIFGSM(0.1, norm="l1"), "norm"),
        (lambda: MIFGSM(-1.0, norm="l2"), "eps"),
        (lambda: MIFGSM(0.1, steps=0), "steps"),
        (lambda: MIFGSM(0.1, decay=-1.0), "decay"),
        (lambda: MIFGSM(0.1, step_size=-0.1), "step_size"),
        (lambda: CWL2(c=0.0), "c"),
        (lambda: CWL2(kappa=-1.0), "kappa"),
        (lambda: CWL2(steps=0), "steps"),
        (lambda: CWL2(lr=0.0), "lr"),
        (lambda: CWL2(binary_search_steps=0), "binary_search_steps"),
        (lambda: EAD(decision_rule="L2"), "decision_rule"),
        (lambda: EAD(beta=-1e-3), "beta"),
        (lambda: EAD(c=0.0), "c"),
        (lambda: EAD(kappa=-1.0), "kappa"),
        (lambda: EAD(lr=0.0), "lr"),
        (lambda: EAD(binary_search_steps=0), "binary_search_steps"),
        (lambda: EAD(steps=0), "steps"),
        (lambda: DDN(steps=0), "steps"),
        (lambda: DDN(gamma=1.0), "gamma"),
        (lambda: DDN(init_norm=0.0), "init_norm"),
        (lambda: DDN(levels=1), "levels"),
        (lambda: FAB(norm="l1"), "norm"),
        (lambda: FAB(steps=0), "steps"),
        (lambda: FAB(restarts=0), "restarts"),
        (lambda: FAB(alpha_max=1.5), "alpha_max"),
        (lambda: FAB(eta=0.9), "eta"),
        (lambda: FAB(beta=0.0), "beta"),
        (lambda: FAB(restart_eps=0.0), "restart_eps"),
        (lambda: StAdv(initial_const=0.0), "initial_const"),
        (lambda: StAdv(steps=0), "steps"),
        (lambda: StAdv(kappa=-1.0), "kappa"),
    ],
)
def test_bad_arguments_name_the_parameter(make, parameter):
    with pytest.raises(ValueError, match=rf"\b{parameter}\b"):
        make()


def test_bad_inputs_are_clear_errors_before_any_work(trained_tiny):
    model, x, y = trained_tiny
    with pytest.raises(TypeError, match="eps"):
        CWL2(eps=0.5)  # minimal-perturbation attacks have no budget
    with pytest.raises(ValueError, match="l1_sparsity=0.999 leaves no coordinate"):
        PGD(1.0, norm="l1", l1_sparsity=0.999)(model, x, y)  # round(0.001 * 144) = 0
    with pytest.raises(ValueError, match="StAdv needs images"):
        StAdv(steps=1)(nn.Flatten(), x.flatten(1), y)
