"""FlowPGD and ADef: displacement bounds, units, the ADef step in closed form, failures return clean input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.attacks.adef import ADef, adef
from lit_robust.attacks.base import ThreatModel
from lit_robust.attacks.flow_pgd import FlowPGD, flow_pgd
from lit_robust.functional.flow import gaussian_smooth, t_norm, warp


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x), y)


@pytest.mark.parametrize(("eps", "units"), [(0.05, "normalized"), (0.3, "pixels")])
def test_flow_pgd_keeps_every_component_within_eps_and_raises_the_loss(trained_tiny, eps, units):
    model, x, y = trained_tiny
    result = flow_pgd(model, x, y, eps, steps=5, units=units)
    assert result.flow.shape == (len(x), 12, 12, 2)
    assert result.flow.abs().max() <= eps
    assert torch.isclose(result.flow.abs(), torch.tensor(eps)).any()  # the bound is reached somewhere
    in_steps = result.flow / (eps / 5)  # default step eps / steps: every component a multiple of it
    torch.testing.assert_close(in_steps, in_steps.round(), rtol=0, atol=1e-4)
    assert torch.equal(result.x_adv, warp(x, result.flow, units).clamp(0, 1))
    assert cross_entropy(model, result.x_adv, y) > cross_entropy(model, x, y)
    attacked = FlowPGD(eps, steps=5, units=units)(model, x, y)
    torch.testing.assert_close(attacked, result.x_adv)  # up to the base class's x + (x_adv - x)
    with torch.no_grad():
        assert (model(attacked).argmax(dim=1) == y).float().mean() < (
            model(x).argmax(dim=1) == y
        ).float().mean()


def test_flow_pgd_one_step_is_a_signed_step_of_size_eps(trained_tiny):
    model, x, y = trained_tiny
    flow = torch.zeros(len(x), 12, 12, 2, requires_grad=True)
    F.cross_entropy(model(warp(x, flow, "normalized")), y).backward()
    expected = 0.02 * flow.grad.sign()
    assert torch.equal(flow_pgd(model, x, y, 0.02, steps=1).flow, expected)


def test_flow_pgd_pixel_and_normalized_budgets_agree(trained_tiny):
    model, x, y = trained_tiny  # 12 x 12: 1 normalized unit = 5.5 px on both axes
    normalized = flow_pgd(model, x, y, 0.04, steps=4, units="normalized")
    pixels = flow_pgd(model, x, y, 0.04 * 5.5, steps=4, units="pixels")
    torch.testing.assert_close(pixels.flow, normalized.flow * 5.5)
    torch.testing.assert_close(pixels.x_adv, normalized.x_adv)


def test_flow_pgd_names():
    assert FlowPGD(0.01).name == "flow_pgd_0.01n"
    assert FlowPGD(0.155, units="pixels").name == "flow_pgd_0.155px"
    assert FlowPGD(0.01, name="mine").name == "mine"
    assert FlowPGD(0.01).threat_model is ThreatModel.FLOW and FlowPGD(0.01).steps == 100


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"eps": -0.01}, "eps"), ({"steps": 0}, "steps"), ({"units": "px"}, "units"),
     ({"step_size": -1.0}, "step_size"), ({"padding_mode": "reflection"}, "padding_mode")],
)  # fmt: skip
def test_flow_pgd_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlowPGD(**{"eps": 0.01, **kwargs})


def ramp_and_linear_classifier(ring: int = 2, size: int = 10) -> tuple[torch.Tensor, nn.Module]:
    """Horizontal ramps (bilinear warping is exactly linear in the flow) and a binary linear classifier
    blind to a border ring (where border padding would break that linearity)."""
    slopes = torch.tensor([0.03, 0.05, 0.04], dtype=torch.float64)
    x = 0.5 + slopes.view(-1, 1, 1, 1) * (torch.arange(size, dtype=torch.float64) - size / 2)
    x = x.expand(-1, 1, size, size).contiguous()
    weight = torch.randn(2, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weight[:, :ring], weight[:, -ring:], weight[:, :, :ring], weight[:, :, -ring:] = 0, 0, 0, 0
    layer = nn.Linear(size * size, 2).double()
    with torch.no_grad():
        layer.weight.copy_(weight.flatten(1))
        logits = x.flatten(1) @ layer.weight.T
        layer.bias.copy_(torch.tensor([0.0, -logits[:, 1].sub(logits[:, 0]).max().item() - 0.05]))
    return x, nn.Sequential(nn.Flatten(), layer).eval()


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_adef_step_is_the_minimal_linearized_field(sigma):
    x, model = ramp_and_linear_classifier()
    with torch.no_grad():
        logits = model(x)
    assert (logits.argmax(dim=1) == 0).all()
    gap = logits[:, 1] - logits[:, 0]
    w = (model[1].weight[1] - model[1].weight[0]).view(1, 10, 10).detach()
    slope = x[:, 0, 0, 1] - x[:, 0, 0, 0]
    alpha = torch.stack([w * slope.view(-1, 1, 1), torch.zeros_like(w.expand(3, -1, -1))], dim=-1)
    smooth = gaussian_smooth(alpha, sigma, "zeros")
    expected = -(gap / smooth.square().sum((1, 2, 3))).view(-1, 1, 1, 1) * gaussian_smooth(
        smooth, sigma, "zeros"
    )

    result = adef(model, x, max_iter=1, sigma=sigma, smoothing_padding="zeros")

    torch.testing.assert_close(result.flow, expected, rtol=1e-10, atol=1e-12)
    assert t_norm(result.flow).max() < 2  # interior sample points stay inside the image
    with torch.no_grad():
        after = model(warp(x, result.flow, padding_mode="border"))
    torch.testing.assert_close(after[:, 1] - after[:, 0], torch.zeros(3).double(), rtol=0, atol=1e-10)

    overshot = adef(model, x, max_iter=1, sigma=sigma, overshoot=1.2, smoothing_padding="zeros")
    torch.testing.assert_close(overshot.flow, 1.2 * expected)  # on the boundary: overshoot applies
    assert overshot.fooled.all()
    budget = 1.1 * t_norm(expected)
    capped = adef(model, x, max_iter=1, sigma=sigma, overshoot=1.2, max_norm=budget.max().item(),
                  smoothing_padding="zeros")  # fmt: skip
    assert t_norm(capped.flow).max() <= budget.max() * (1 + 1e-12)


def test_adef_keeps_the_candidate_of_smallest_t_norm():
    """Class 1 is reached by moving one pixel, class 2 by moving a 4 x 4 block: class 1's field has the
    smaller L2 norm (0.4 vs 0.5 px), class 2's the smaller T-norm (0.4 vs 0.125 px): the official
    code keeps the latter."""
    x = (0.5 + 0.05 * (torch.arange(10, dtype=torch.float64) - 5)).expand(1, 1, 10, 10)
    weight = torch.zeros(3, 10, 10, dtype=torch.float64)
    weight[1, 5, 5] = 1.0
    weight[2, 3:7, 3:7] = 0.2
    layer = nn.Linear(100, 3).double()
    with torch.no_grad():
        layer.weight.copy_(weight.flatten(1))
        layer.bias.copy_(-0.02 - (x.flatten(1) @ layer.weight.T)[0])
        layer.bias[0] = 0.0
    model = nn.Sequential(nn.Flatten(), layer).eval()

    result = adef(model, x, max_iter=1, sigma=0.0, num_candidates=None)

    expected = torch.zeros(1, 10, 10, 2, dtype=torch.float64)
    expected[0, 3:7, 3:7, 0] = 0.02 / (16 * 0.05 * 0.2)
    torch.testing.assert_close(result.flow, expected)


def test_adef_fools_most_points_with_small_adversarial_fields(trained_tiny):
    model, x, y = trained_tiny
    result = adef(model, x, source=y)
    sizes = t_norm(result.flow)
    assert result.fooled.float().mean() >= 0.75
    assert sizes[result.fooled].median() < 2.0  # pixels, on 12 x 12 images
    # random smooth fields of the same sizes do not fool: the fields ADef finds are adversarial
    noise = gaussian_smooth(torch.randn(result.flow.shape, generator=torch.Generator().manual_seed(0)), 1.0)
    noise = noise * (sizes / t_norm(noise)).view(-1, 1, 1, 1)
    with torch.no_grad():
        assert (model(warp(x, noise, padding_mode="border")).argmax(dim=1) == y).float().mean() >= 0.9


def test_adef_failures_return_the_clean_input(trained_tiny):
    model, x, y = trained_tiny
    x_adv = ADef(max_iter=2)(model, x, y)  # two steps fool some points, not all
    changed = (x_adv != x).flatten(1).any(dim=1)
    assert changed.any() and not changed.all()
    with torch.no_grad():
        prediction = model(x_adv).argmax(dim=1)
    assert (prediction[changed] != y[changed]).all() and (prediction[~changed] == y[~changed]).all()


def test_adef_budget_bounds_the_largest_displacement(trained_tiny):
    model, x, y = trained_tiny
    result = adef(model, x, source=y, max_norm=0.8, overshoot=1.5)
    assert t_norm(result.flow).max() <= 0.8
    assert result.fooled.any() and not result.fooled.all()
    assert torch.equal(ADef(max_norm=0.0)(model, x, y), x)


def test_adef_names_and_threat_models():
    assert ADef().name == "adef" and ADef().threat_model is ThreatModel.UNBOUNDED and ADef().eps is None
    bounded = ADef(max_norm=0.5)
    assert bounded.name == "adef_0.5px" and bounded.threat_model is ThreatModel.FLOW and bounded.eps == 0.5
    assert (ADef().max_iter, ADef().num_candidates, ADef().sigma, ADef().overshoot) == (50, 9, 1.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_norm": -1.0}, "max_norm"), ({"max_iter": 0}, "max_iter"),
     ({"num_candidates": 0}, "num_candidates"), ({"sigma": -1.0}, "sigma"),
     ({"overshoot": 0.02}, "overshoot"), ({"smoothing_padding": "same"}, "smoothing")],
)  # fmt: skip
def test_adef_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ADef(**kwargs)
