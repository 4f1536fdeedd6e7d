"""DeepFool pinned by closed forms on affine classifiers, a naive per-sample reference, and gradcheck."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lit_robust.attacks.deepfool import DeepFool
from lit_robust.functional.deepfool import deepfool

ORDERS = {"l2": (2, 2), "linf": (math.inf, 1)}  # norm -> (order of the perturbation, dual order)


def affine(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    layer = nn.Linear(weight.shape[1], weight.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), layer).eval()


def far_from_box_edges(n: int, generator: torch.Generator) -> torch.Tensor:
    return 0.4 + 0.2 * torch.rand(n, 1, 4, 4, dtype=torch.float64, generator=generator)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_binary_affine_closed_form_after_one_step(norm):
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(2, 16, dtype=torch.float64, generator=generator), torch.zeros(2).double()
    x = far_from_box_edges(8, generator)
    w = weight[1] - weight[0]
    bias[1] = -(x.flatten(1) @ w).mean()  # both classes occur
    f = x.flatten(1) @ w + bias[1]
    assert 0 < (f > 0).sum() < 8
    order, dual = ORDERS[norm]

    result = deepfool(affine(weight, bias), x, norm=norm, overshoot=0.02)

    size = 1.02 * f.abs() / w.norm(p=dual)
    torch.testing.assert_close(result.delta.flatten(1).norm(p=order, dim=1), size, rtol=1e-12, atol=0)
    direction = w / w.norm() if norm == "l2" else w.sign()
    expected = -(size * f.sign())[:, None] * direction
    torch.testing.assert_close(result.delta.flatten(1), expected, rtol=1e-12, atol=1e-15)
    assert result.steps.tolist() == [1] * 8 and result.fooled.all()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_multiclass_affine_closed_form_after_one_step(norm):
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(5, 16, dtype=torch.float64, generator=generator)
    x = far_from_box_edges(16, generator)
    bias = -(x.flatten(1) @ weight.T).mean(dim=0)  # several source classes occur
    order, dual = ORDERS[norm]

    result = deepfool(affine(weight, bias), x, norm=norm, overshoot=0.02)

    logits = x.flatten(1) @ weight.T + bias
    source = logits.argmax(dim=1)
    gaps = (logits - logits.gather(1, source[:, None])).abs()
    differences = (weight[None] - weight[source][:, None]).norm(p=dual, dim=2)
    distances = (gaps / differences).scatter(1, source[:, None], math.inf)
    expected = 1.02 * distances.amin(dim=1)
    torch.testing.assert_close(result.delta.flatten(1).norm(p=order, dim=1), expected, rtol=1e-12, atol=0)
    assert result.steps.tolist() == [1] * 16 and result.fooled.all()
    assert len(source.unique()) > 1


def _reference_deepfool(model, x, norm, overshoot, max_iter, num_candidates):
    """Algorithm 2 of the paper, one sample and one class at a time; the label test at the overshot
    point as in the LTS4 code."""
    deltas, steps = [], []
    for x0 in x:
        x0 = x0[None]
        order = model(x0)[0].argsort(descending=True)
        source, candidates = order[0], order[1:][:num_candidates]
        r_tot, iteration = torch.zeros_like(x0), 0
        while iteration < max_iter and model(x0 + (1 + overshoot) * r_tot).argmax() == source:
            point = (x0 + r_tot).requires_grad_(True)
            out = model(point)[0]
            (grad_source,) = torch.autograd.grad(out[source], point, retain_graph=True)
            best = math.inf
            for k in candidates:
                (grad_k,) = torch.autograd.grad(out[k], point, retain_graph=True)
                w = grad_k - grad_source
                dual_norm = w.norm() if norm == "l2" else w.abs().sum()
                distance = (out[k] - out[source]).abs().item() / dual_norm
                if distance < best:
                    best, w_best, dual_best = distance, w, dual_norm
            r_tot = r_tot + best * (w_best / dual_best if norm == "l2" else w_best.sign())
            iteration += 1
        deltas.append((1 + overshoot) * r_tot)
        steps.append(iteration)
    return torch.cat(deltas).detach(), torch.tensor(steps)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize(("max_iter", "num_candidates"), [(1, None), (50, None), (50, 2)])
def test_batched_matches_per_sample_reference(trained_tiny, norm, max_iter, num_candidates):
    model, x, _ = trained_tiny
    model = copy.deepcopy(model).double()
    x = x.double()
    for parameter in model.parameters():
        parameter.requires_grad_(False)

    result = deepfool(model, x, norm=norm, max_iter=max_iter, num_candidates=num_candidates)
    delta, steps = _reference_deepfool(model, x, norm, 0.02, max_iter, num_candidates)

    torch.testing.assert_close(result.delta, delta, rtol=1e-9, atol=1e-12)
    assert torch.equal(result.steps, steps)
    if max_iter == 1:  # some samples need more than one step: the stopping rule is exercised
        assert result.fooled.any() and not result.fooled.all()
    else:
        assert len(steps.unique()) > 1 and result.fooled.all()


def test_misclassified_samples_are_not_moved(trained_tiny):
    model, x, y = trained_tiny
    wrong = torch.arange(len(y)) % 2 == 0
    labels = torch.where(wrong, (y + 1) % 4, y)
    assert (model(x).argmax(dim=1) == y).all()

    result = deepfool(model, x, source=labels)
    assert torch.equal(result.delta[wrong], torch.zeros_like(x[wrong]))
    assert result.fooled[wrong].all() and (result.steps[wrong] == 0).all()
    assert (result.delta[~wrong].flatten(1).norm(dim=1) > 0).all()
    assert torch.equal(DeepFool()(model, x, labels)[wrong], x[wrong])


def test_failure_returns_the_clean_input():
    # class 1 needs x_0 > 2: out of the [0, 1] box, so clipped DeepFool moves the point but never fools
    weight = torch.zeros(2, 16, dtype=torch.float64)
    weight[1, 0] = 1.0
    model = affine(weight, torch.tensor([0.0, -2.0], dtype=torch.float64))
    x = far_from_box_edges(4, torch.Generator().manual_seed(2))
    y = torch.zeros(4, dtype=torch.long)

    raw = deepfool(model, x, max_iter=5, clamp=True)
    assert not raw.fooled.any() and not torch.equal(raw.x_adv, x)  # the last iterate is no success
    assert deepfool(model, x, max_iter=5).fooled.all()  # without the box it would fool
    assert torch.equal(DeepFool(max_iter=5)(model, x, y), x)


def test_only_successes_are_returned_perturbed(trained_tiny):
    model, x, y = trained_tiny
    x_adv = DeepFool(max_iter=2)(model, x, y)  # two clipped steps fool some points, not all
    changed = (x_adv != x).flatten(1).any(dim=1)
    assert changed.any() and not changed.all()
    with torch.no_grad():
        prediction = model(x_adv).argmax(dim=1)
    assert (prediction[changed] != y[changed]).all() and (prediction[~changed] == y[~changed]).all()


class TanhNet(nn.Module):
    """A tiny smooth network whose weights are plain tensors, so gradcheck can perturb them."""

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor):
        super().__init__()
        self.w1, self.w2 = w1, w2

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z.flatten(1) @ self.w1.T) @ self.w2.T


def test_unrolled_deepfool_is_differentiable_in_input_and_weights():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(4, 6, dtype=torch.float64, generator=generator)
    w1 = 2 * torch.randn(5, 6, dtype=torch.float64, generator=generator)
    w2 = torch.randn(3, 5, dtype=torch.float64, generator=generator)

    def perturbation(x, w1, w2):
        return deepfool(TanhNet(w1, w2), x, max_iter=3, differentiable=True).delta

    steps = deepfool(TanhNet(w1, w2), x, max_iter=3).steps
    assert steps.min() >= 2  # the gradient runs through earlier steps, not just one
    inputs = (x.requires_grad_(True), w1.requires_grad_(True), w2.requires_grad_(True))
    assert torch.autograd.gradcheck(perturbation, inputs)
    assert not deepfool(TanhNet(w1, w2), x, max_iter=3).delta.requires_grad  # default: detached


def test_names_and_arguments():
    assert DeepFool().name == "deepfool_l2" and DeepFool("linf").name == "deepfool_linf"
    assert DeepFool().eps is None
    with pytest.raises(ValueError, match="norm"):
        DeepFool("l1")
    with pytest.raises(ValueError, match="overshoot"):
        DeepFool(overshoot=-0.1)
    with pytest.raises(ValueError, match="max_iter"):
        DeepFool(max_iter=0)
    with pytest.raises(ValueError, match="num_candidates"):
        DeepFool(num_candidates=0)
