"""project_ball against its closed forms, and Attack's project delegating to it."""

from __future__ import annotations

import pytest
import torch

from lit_robust.attacks.base import ThreatModel, project
from lit_robust.functional.projection import project_ball


def points(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean images in [0.2, 0.8] and candidates far outside every small ball (and outside [0, 1])."""
    generator = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.6 * torch.rand(5, 2, 3, 3, generator=generator, dtype=torch.float64)
    return x, x + 2 * torch.randn(x.shape, generator=generator, dtype=torch.float64)


def test_linf_clamps_each_coordinate_then_clips():
    x, x_adv = points()
    out = project_ball(x_adv, x, 0.1, "linf")
    expected = torch.minimum(torch.maximum(x_adv, x - 0.1), x + 0.1).clamp(0, 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize(("ball", "order"), [("l2", 2), ("l1", 1)])
def test_lp_rescales_each_sample_radially(ball, order):
    x, x_adv = points(1)
    x_adv = x_adv.clamp(0, 1)  # inside the box, so the result is exactly the rescaled perturbation
    x_adv[0] = x[0] + 1e-3 * (x_adv[0] - x[0])  # one sample already inside the ball: unchanged
    eps = 0.5
    out = project_ball(x_adv, x, eps, ball)
    for b in range(len(x)):  # one sample at a time: delta * min(1, eps / ||delta||_p)
        delta = x_adv[b] - x[b]
        expected = x[b] + delta * min(1.0, eps / float(delta.norm(p=order)))
        torch.testing.assert_close(out[b], expected)
    torch.testing.assert_close(out[0], x_adv[0])
    norms = (out - x).flatten(1).norm(p=order, dim=1)
    assert (norms <= eps * (1 + 1e-12)).all() and (norms[1:] > eps * (1 - 1e-9)).all()


@pytest.mark.parametrize("ball", ["linf", "l2", "l1"])
def test_clipping_keeps_the_point_in_the_ball(ball):
    x, x_adv = points(2)
    out = project_ball(x_adv, x, 0.3, ball)
    assert out.min() >= 0 and out.max() <= 1
    delta = (out - x).flatten(1)
    size = delta.abs().amax(dim=1) if ball == "linf" else delta.norm(p=2 if ball == "l2" else 1, dim=1)
    assert (size <= 0.3 * (1 + 1e-12)).all()


def test_attack_project_is_project_ball_for_pixel_balls_and_a_clip_otherwise():
    x, x_adv = points(3)
    for threat_model in (ThreatModel.LINF, ThreatModel.L2, ThreatModel.L1):
        expected = project_ball(x_adv, x, 0.2, threat_model.value)
        torch.testing.assert_close(project(x_adv, x, 0.2, threat_model), expected, rtol=0, atol=0)
    for threat_model in (ThreatModel.FLOW, ThreatModel.UNBOUNDED):
        torch.testing.assert_close(project(x_adv, x, 0.2, threat_model), x_adv.clamp(0, 1), rtol=0, atol=0)
    by_member = project_ball(x_adv, x, 0.2, ThreatModel.L2)  # a str enum member works as its value
    torch.testing.assert_close(by_member, project(x_adv, x, 0.2, ThreatModel.L2), rtol=0, atol=0)


def test_an_unknown_ball_is_a_clear_error():
    x, x_adv = points()
    with pytest.raises(ValueError, match="ball must be one of .*got 'l3'"):
        project_ball(x_adv, x, 0.1, "l3")
