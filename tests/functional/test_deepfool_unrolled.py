"""The one batched DeepFool (``functional/deepfool.py``) in the modes Deep Defense needs: closed forms on
linear classifiers, the targeted branch, Jacobian rows, a naive per-sample reference loop, and the
gradient of the unrolled loop with respect to the weights (finite differences, gradcheck)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from lit_robust.functional.deepfool import (
    FromNormalized,
    candidate_gradients,
    deepfool,
    deepfool_rho,
    leading_normalize,
    relative_size,
)
from lit_robust.models.normalize import Normalize

DTYPE = torch.float64


def linear(weight: Tensor, bias: Tensor) -> nn.Module:
    layer = nn.Linear(weight.shape[1], weight.shape[0]).to(DTYPE)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), layer).eval()


class ReluNet(nn.Module):
    """``f(x) = W2 relu(W1 x + b1) + b2`` with the weights as plain tensors (perturbable)."""

    def __init__(self, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor):
        super().__init__()
        self.w1, self.b1, self.w2, self.b2 = w1, b1, w2, b2

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x.flatten(1) @ self.w1.T + self.b1) @ self.w2.T + self.b2


def relu_params(seed: int, d: int = 6, h: int = 8, k: int = 4) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(h, d, dtype=DTYPE, generator=g),
        0.3 * torch.randn(h, dtype=DTYPE, generator=g),
        torch.randn(k, h, dtype=DTYPE, generator=g),
        0.3 * torch.randn(k, dtype=DTYPE, generator=g),
    ]


# ------------------------------------------------------------------------------ naive reference
def _reference_deepfool(
    model: nn.Module,
    x: Tensor,
    max_iter: int,
    overshoot: float,
    norm_eps: float = 0.0,
    source: Tensor | None = None,
    target: Tensor | None = None,
    num_candidates: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, list[list[tuple[int, int]]]]:
    """Deep Defense's DeepFool (deep_defense.md (b)) one sample and one class at a time.

    Untargeted from ``source`` (default: the prediction) towards the candidates ordered once by logit;
    targeted at ``target`` from the strongest rival of the target at each linearization point. Returns
    ``(delta, steps, fooled, record)``; ``record[i]`` lists ``(source, chosen class)`` per iteration.
    """
    deltas, steps, fooled, records = [], [], [], []
    for i, x0 in enumerate(x):
        x0 = x0[None]
        logits = model(x0)[0].detach()
        prediction = int(logits.argmax())
        if target is None:
            s0 = prediction if source is None else int(source[i])
            order = [int(k) for k in logits.argsort(descending=True) if int(k) != s0]
            candidates = order[:num_candidates]

            def done(label, s0=s0):
                return label != s0
        else:
            goal = int(target[i])
            candidates = [goal]

            def done(label, goal=goal):
                return label == goal

        r_tot, iteration, record = torch.zeros_like(x0), 0, []
        while iteration < max_iter and not done(int(model(x0 + (1 + overshoot) * r_tot).argmax())):
            point = (x0 + r_tot).detach().requires_grad_(True)
            out = model(point)[0]
            if target is None:
                s = s0
            else:
                rivals = [k for k in range(len(out)) if k != goal]
                s = max(rivals, key=lambda k: float(out[k].detach()))
            best = math.inf
            for k in candidates:
                (w,) = torch.autograd.grad(out[k] - out[s], point, retain_graph=True)
                size = float((w + norm_eps).norm())
                distance = abs(float(out[k].detach() - out[s].detach())) / size
                if distance < best:
                    best, w_best, size_best, chosen = distance, w, size, k
            r_tot = r_tot + best * w_best / size_best
            record.append((s, chosen))
            iteration += 1
        deltas.append((1 + overshoot) * r_tot)
        steps.append(iteration)
        fooled.append(done(int(model(x0 + (1 + overshoot) * r_tot).argmax())))
        records.append(record)
    return torch.cat(deltas).detach(), torch.tensor(steps), torch.tensor(fooled), records


def _reference_replay(
    model: nn.Module, x: Tensor, records: list, overshoot: float, points: list | None = None
) -> Tensor:
    """The unrolled DeepFool with the class choices and iteration counts of ``records`` held fixed.

    With ``points`` (per sample, the list of linearization points) the points are constants too:
    the function that ``detach_prev_r=True`` differentiates."""
    deltas = []
    for i, x0 in enumerate(x):
        x0 = x0[None]
        r_tot = torch.zeros_like(x0)
        for j, (s, k) in enumerate(records[i]):
            point = (x0 + r_tot if points is None else points[i][j]).detach().requires_grad_(True)
            out = model(point)[0]
            (w,) = torch.autograd.grad(out[k] - out[s], point)
            r_tot = r_tot + abs(float((out[k] - out[s]).detach())) / w.norm() ** 2 * w
        deltas.append((1 + overshoot) * r_tot)
    return torch.cat(deltas).detach()


def _linearization_points(x: Tensor, records: list, model: nn.Module, overshoot: float) -> list[list[Tensor]]:
    """Per sample, the points ``x + r_tot`` at which each iteration linearized (replayed)."""
    points = []
    for i, x0 in enumerate(x):
        x0, r_tot, mine = x0[None], torch.zeros_like(x0[None]), []
        for s, k in records[i]:
            point = (x0 + r_tot).detach().requires_grad_(True)
            mine.append(point.detach())
            out = model(point)[0]
            (w,) = torch.autograd.grad(out[k] - out[s], point)
            r_tot = r_tot + abs(float((out[k] - out[s]).detach())) / w.norm() ** 2 * w
        points.append(mine)
    return points


# ------------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("overshoot", [0.0, 0.02])
@pytest.mark.parametrize("differentiable", [False, True])
def test_linear_binary_closed_form_in_one_iteration(overshoot, differentiable):
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(16, dtype=DTYPE, generator=g), 0.1
    model = linear(torch.stack([torch.zeros(16, dtype=DTYPE), w]), torch.tensor([0.0, b], dtype=DTYPE))
    x = torch.randn(10, 16, dtype=DTYPE, generator=g)
    f = x @ w + b

    result = deepfool(model, x, overshoot=overshoot, max_iter=5, differentiable=differentiable)

    expected = -(1 + overshoot) * (f / (w @ w))[:, None] * w
    torch.testing.assert_close(result.delta, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        result.delta.norm(dim=1), (1 + overshoot) * f.abs() / w.norm(), rtol=1e-12, atol=0
    )
    if overshoot > 0:  # one iteration flips the label (with overshoot 0 it lands on the boundary)
        assert result.steps.tolist() == [1] * 10 and result.fooled.all()
        assert torch.equal(model(result.x_adv).argmax(1), 1 - model(x).argmax(1))


def test_linear_multiclass_closed_form_ties_and_stops_after_one_step():
    g = torch.Generator().manual_seed(1)
    weight, x = torch.randn(5, 12, dtype=DTYPE, generator=g), torch.randn(20, 12, dtype=DTYPE, generator=g)
    bias = -(x @ weight.T).mean(0)
    model = linear(weight, bias)
    eta = 0.02

    result = deepfool(model, x, overshoot=eta, max_iter=5, differentiable=True)

    logits = x @ weight.T + bias
    s = logits.argmax(1)
    gaps = (logits - logits.gather(1, s[:, None])).abs()
    distances = (gaps / (weight[None] - weight[s][:, None]).norm(dim=2)).scatter(1, s[:, None], math.inf)
    torch.testing.assert_close(result.delta.norm(dim=1), (1 + eta) * distances.amin(1), rtol=1e-12, atol=0)
    assert (
        result.steps.tolist() == [1] * 20 and result.fooled.all()
    )  # inactive after step 1: later steps add 0
    top2 = (x + result.delta / (1 + eta)) @ weight.T + bias
    top2 = top2.topk(2, dim=1).values
    torch.testing.assert_close(top2[:, 0], top2[:, 1], rtol=1e-10, atol=1e-10)
    assert len(s.unique()) > 1


def test_targeted_branch_on_a_linear_three_class_model():
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=DTYPE)
    model = linear(weight, torch.zeros(3, dtype=DTYPE))
    x = torch.tensor([[2.0, 0.5], [0.2, 1.5], [-1.0, -2.0]], dtype=DTYPE)
    y = torch.tensor([1, 2, 0])  # all three misclassified: predictions 0, 1, 2
    logits = x @ weight.T
    pred = logits.argmax(1)
    assert (pred != y).all()

    result = deepfool(model, x, overshoot=0.02, max_iter=10, targeted_to=y, differentiable=True)

    assert result.fooled.all() and torch.equal(model(result.x_adv).argmax(1), y)
    first = deepfool(model, x, overshoot=0.0, max_iter=1, targeted_to=y)
    gap = (logits.gather(1, y[:, None]) - logits.gather(1, pred[:, None])).squeeze(1).abs()
    expected = gap / (weight[y] - weight[pred]).norm(dim=1)
    torch.testing.assert_close(first.delta.norm(dim=1), expected, rtol=1e-12, atol=0)


def test_samples_already_at_their_target_are_not_moved():
    model = linear(torch.eye(3, 4, dtype=DTYPE), torch.zeros(3, dtype=DTYPE))
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=DTYPE)
    result = deepfool(model, x, targeted_to=torch.tensor([0, 2]))
    assert torch.equal(result.delta[0], torch.zeros(4, dtype=DTYPE)) and result.steps[0] == 0
    assert result.delta[1].norm() > 0 and result.fooled.all()
    with pytest.raises(ValueError, match="source"):
        deepfool(model, x, source=torch.tensor([0, 1]), targeted_to=torch.tensor([0, 2]))


def test_jacobian_rows_match_the_hand_computed_relu_formula():
    params = relu_params(2)
    net = ReluNet(*params)
    w1, b1, w2, _ = params
    x = torch.randn(7, 6, dtype=DTYPE, generator=torch.Generator().manual_seed(3))
    source = net(x).argmax(1)
    candidates = torch.stack([(source + 1) % 4, (source + 2) % 4], dim=1)

    gaps, grads = candidate_gradients(net, x, source, candidates)

    mask = (x @ w1.T + b1 > 0).to(DTYPE)  # (B, h)
    for i in range(len(x)):
        for j, k in enumerate(candidates[i]):
            expected = ((w2[k] - w2[source[i]]) * mask[i]) @ w1
            torch.testing.assert_close(grads[i, j], expected, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(
                gaps[i, j], (net(x[i : i + 1])[0, k] - net(x[i : i + 1])[0, source[i]])
            )


# --------------------------------------------------------------------- batched = per sample
@pytest.mark.parametrize("max_iter", [1, 3, 50])
@pytest.mark.parametrize("mode", ["untargeted", "targeted"])
def test_batched_equals_the_per_sample_reference_on_a_relu_mlp(max_iter, mode):
    net = ReluNet(*relu_params(4))
    x = torch.randn(40, 6, dtype=DTYPE, generator=torch.Generator().manual_seed(5))
    target = (net(x).argmax(1) + 1) % 4 if mode == "targeted" else None
    kwargs = dict(max_iter=max_iter, overshoot=0.02, norm_eps=1e-5)

    for differentiable in (False, True):
        result = deepfool(net, x, differentiable=differentiable, targeted_to=target, **kwargs)
        delta, steps, fooled, _ = _reference_deepfool(net, x, target=target, **kwargs)
        torch.testing.assert_close(result.delta.detach(), delta, rtol=1e-9, atol=1e-12)
        assert torch.equal(result.steps, steps) and torch.equal(result.fooled, fooled)
    if max_iter == 3:  # samples that stop early and samples not fooled within the iterations
        assert (steps < max_iter).any() and not fooled.all() and fooled.any()


def test_batched_equals_the_reference_with_few_candidates():
    net = ReluNet(*relu_params(6, k=6))
    x = torch.randn(25, 6, dtype=DTYPE, generator=torch.Generator().manual_seed(7))
    result = deepfool(net, x, max_iter=4, num_candidates=2, norm_eps=1e-5)
    delta, steps, _, _ = _reference_deepfool(net, x, 4, 0.02, norm_eps=1e-5, num_candidates=2)
    torch.testing.assert_close(result.delta, delta, rtol=1e-9, atol=1e-12)
    assert torch.equal(result.steps, steps)


# ------------------------------------------------------------- gradient w.r.t. the weights
def _autograd_weight_gradient(
    params: list[Tensor], x: Tensor, v: Tensor, detach_prev_r: bool, max_iter: int
) -> tuple[Tensor, ...]:
    leaves = [p.clone().requires_grad_(True) for p in params]
    result = deepfool(
        ReluNet(*leaves), x, max_iter=max_iter, differentiable=True, detach_prev_r=detach_prev_r
    )
    return torch.autograd.grad((result.delta * v).sum(), leaves)


def _finite_differences(
    function: Callable[[list[Tensor]], Tensor], params: list[Tensor], h: float = 1e-6
) -> list[Tensor]:
    grads = []
    for index, p in enumerate(params):
        grad = torch.zeros_like(p)
        for flat in range(p.numel()):
            values = []
            for sign in (1, -1):
                moved = [q.clone() for q in params]
                moved[index].view(-1)[flat] += sign * h
                values.append(function(moved))
            grad.view(-1)[flat] = (values[0] - values[1]) / (2 * h)
        grads.append(grad)
    return grads


def test_unrolled_weight_gradient_matches_finite_differences_with_frozen_masks():
    """Full unrolling differentiates through every earlier step; ``detach_prev_r`` differentiates each
    step at its (fixed) linearization point. Each matches finite differences of the matching naive
    replay (class choices, stopping and ReLU patterns frozen at the unperturbed weights)."""
    params = relu_params(8, d=5, h=6, k=3)
    net = ReluNet(*params)
    x = torch.randn(6, 5, dtype=DTYPE, generator=torch.Generator().manual_seed(9))
    v = torch.randn(6, 5, dtype=DTYPE, generator=torch.Generator().manual_seed(10))
    u = 3
    delta, steps, _, records = _reference_deepfool(net, x, u, 0.02)
    assert (steps >= 2).sum() >= 2  # the chain through earlier iterations is exercised
    torch.testing.assert_close(deepfool(net, x, max_iter=u).delta, delta, rtol=1e-9, atol=1e-12)
    points = _linearization_points(x, records, net, 0.02)

    def full(moved: list[Tensor]) -> Tensor:
        return (_reference_replay(ReluNet(*moved), x, records, 0.02) * v).sum()

    def frozen_points(moved: list[Tensor]) -> Tensor:
        return (_reference_replay(ReluNet(*moved), x, records, 0.02, points=points) * v).sum()

    unrolled = _autograd_weight_gradient(params, x, v, False, u)
    detached = _autograd_weight_gradient(params, x, v, True, u)
    for got, expected in zip(unrolled, _finite_differences(full, params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for got, expected in zip(detached, _finite_differences(frozen_points, params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    difference = sum((a - b).norm() for a, b in zip(unrolled, detached, strict=True))
    assert difference > 1e-3 * sum(a.norm() for a in unrolled)


class TanhNet(nn.Module):
    def __init__(self, w1: Tensor, w2: Tensor):
        super().__init__()
        self.w1, self.w2 = w1, w2

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(z.flatten(1) @ self.w1.T) @ self.w2.T


def test_gradcheck_of_rho_in_the_weights_and_detaching_changes_the_gradient():
    """Full unrolling is the exact gradient of rho (gradcheck, a smooth tanh net). ``detach_prev_r``
    returns the same rho with a different gradient: that of rho with the linearization points held
    fixed (checked against finite differences above), so gradcheck of rho itself must not pass."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 6, dtype=DTYPE, generator=g)
    w1 = (2 * torch.randn(5, 6, dtype=DTYPE, generator=g)).requires_grad_(True)
    w2 = torch.randn(3, 5, dtype=DTYPE, generator=g).requires_grad_(True)
    assert deepfool(TanhNet(w1, w2), x, max_iter=2).steps.min() == 2

    def rho(w1: Tensor, w2: Tensor, detach: bool = False) -> Tensor:
        return deepfool_rho(TanhNet(w1, w2), x, max_iter=2, differentiable=True, detach_prev_r=detach)[0]

    assert torch.autograd.gradcheck(rho, (w1, w2))
    assert not torch.autograd.gradcheck(lambda a, b: rho(a, b, True), (w1, w2), raise_exception=False)
    torch.testing.assert_close(rho(w1, w2, True), rho(w1, w2))
    full = torch.autograd.grad(rho(w1, w2).sum(), (w1, w2))
    detached = torch.autograd.grad(rho(w1, w2, True).sum(), (w1, w2))
    assert not torch.allclose(full[0], detached[0])


def test_rho_in_normalized_space():
    network = nn.Sequential(Normalize(0.5, 0.25), nn.Flatten(), nn.Linear(4, 3)).to(DTYPE).eval()
    x = torch.rand(5, 1, 2, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    normalize = leading_normalize(network)
    assert normalize is network[0]
    torch.testing.assert_close(FromNormalized(network, normalize)(normalize(x)), network(x))
    rho_pixel, result = deepfool_rho(network, x, overshoot=0.0)
    rho_normalized, _ = deepfool_rho(network, x, space="normalized", overshoot=0.0)
    torch.testing.assert_close(rho_pixel, relative_size(result.delta, x))
    # one std for every channel: the normalized perturbation is delta / std, the image (x - mean) / std
    torch.testing.assert_close(
        rho_normalized, result.delta.flatten(1).norm(dim=1) / (x - 0.5).flatten(1).norm(dim=1)
    )
    with pytest.raises(ValueError, match="space"):
        deepfool_rho(network, x, space="zca")
