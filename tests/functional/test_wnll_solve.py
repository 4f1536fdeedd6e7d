"""The WNLL graph solve (``lit_robust.functional.wnll``) against naive loops written from the spec's
formulas (``shared/papers/wnll_tvm.md`` (b), (h) 1-9), in float64 on CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_robust.functional.wnll import knn_weights, mu_value, wnll_scores, wnll_straight_through, wnll_system

N_L, N_U, C, K, K_SIGMA = 6, 10, 3, 4, 2


# ------------------------------------------------------------------------------ naive references
def _reference_weights(h: Tensor, k: int, k_sigma: int, weight: str) -> list[list[float]]:
    """``w(x, y)`` point by point: sort the distances from ``x`` (itself first), σ at rank ``k_sigma``."""
    n = len(h)
    w = [[0.0] * n for _ in range(n)]
    for x in range(n):
        dist = [float((h[x] - h[y]).norm()) for y in range(n)]
        order = sorted(range(n), key=lambda y: (y != x, dist[y]))
        sigma = dist[order[k_sigma - 1]]
        for y in order[:k]:
            r = dist[y] ** 2 / sigma**2
            w[x][y] = math.exp(-r) if weight == "paper" else math.exp(-(r**2))
    return w


def _reference_wnll_residual(w: list[list[float]], u: list[list[float]], n_l: int, mu: float) -> float:
    """max over queries x and classes c of |Σ_y (w(x,y)+w(y,x))(u(x)-u(y)) + μ Σ_{y∈L} w(y,x)(u(x)-u(y))|."""
    n = len(w)
    worst = 0.0
    for x in range(n_l, n):
        for c in range(len(u[0])):
            total = sum((w[x][y] + w[y][x]) * (u[x][c] - u[y][c]) for y in range(n))
            total += mu * sum(w[y][x] * (u[x][c] - u[y][c]) for y in range(n_l))
            worst = max(worst, abs(total))
    return worst


def _features(seed: int = 0, n_l: int = N_L, n_u: int = N_U, d: int = 5) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    h = torch.randn(n_l + n_u, d, generator=generator, dtype=torch.float64)
    labels = torch.arange(n_l) % C
    return h, labels


# ------------------------------------------------------------------------------------- the solve
@pytest.mark.parametrize("weight", ["paper", "code"])
@pytest.mark.parametrize("mu", ["paper", "code"])
def test_solve_satisfies_the_wnll_equation_node_by_node(weight, mu):
    h, labels = _features()
    result = wnll_scores(h, labels, C, k=K, k_sigma=K_SIGMA, weight=weight, mu=mu, ridge=0.0)
    assert not result.isolated.any()
    w = _reference_weights(h, K, K_SIGMA, weight)
    assert torch.allclose(knn_weights(h, K, K_SIGMA, weight), torch.tensor(w, dtype=h.dtype), atol=1e-14)
    one_hot = F.one_hot(labels, C).double()
    u = torch.cat([one_hot, result.scores]).tolist()
    m = (N_L + N_U) / N_L - (1.0 if mu == "paper" else 0.0)
    assert _reference_wnll_residual(w, u, N_L, m) < 1e-12
    # and the solution is the raw solve (normalization is a no-op in the nonsingular case)
    a, b = wnll_system(knn_weights(h, K, K_SIGMA, weight), labels, C, mu)
    raw = torch.linalg.solve(a, b)
    assert torch.allclose(raw, result.scores, atol=1e-12)


def test_rows_sum_to_one_and_lie_in_the_unit_interval():
    h, labels = _features(seed=3)
    a, b = wnll_system(knn_weights(h, K, K_SIGMA), labels, C)
    raw = torch.linalg.solve(a, b)  # before normalization
    assert torch.allclose(raw.sum(dim=1), torch.ones(N_U, dtype=h.dtype), atol=1e-12)
    assert (raw >= -1e-12).all() and (raw <= 1 + 1e-12).all()
    scores = wnll_scores(h, labels, C, k=K, k_sigma=K_SIGMA).scores
    assert torch.allclose(scores.sum(dim=1), torch.ones(N_U, dtype=h.dtype), atol=1e-12)


def test_single_query_closed_form():
    h, labels = _features(seed=1, n_u=1)
    w = _reference_weights(h, K, K_SIGMA, "paper")
    q, m = N_L, mu_value("paper", N_L + 1, N_L)
    a_y = [w[q][y] + w[y][q] + m * w[y][q] for y in range(N_L)]
    expected = [
        sum(a for a, lab in zip(a_y, labels.tolist(), strict=True) if lab == c) / sum(a_y) for c in range(C)
    ]
    scores = wnll_scores(h, labels, C, k=K, k_sigma=K_SIGMA, ridge=0.0).scores
    assert torch.allclose(scores[0], torch.tensor(expected, dtype=h.dtype), atol=1e-12)


def test_labeled_points_keep_their_labels():
    """A query that duplicates a template (distance 0, weight 1 both ways) in well-separated clusters
    gets that template's label; so does every template fed back as a query."""
    h, labels = _features(seed=2, n_u=0)
    h = h + 20 * F.one_hot(labels, 5).double()  # far-apart clusters, one per class
    scores = wnll_scores(torch.cat([h, h]), labels, C, k=K, k_sigma=K_SIGMA).scores
    assert torch.equal(scores.argmax(dim=1), labels)


def test_knn_and_sigma_conventions_on_a_line():
    h = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    w = knn_weights(h, k=3, k_sigma=2)
    # point 0: neighbours {0, 1, 2}, sigma = |0 - 1| = 1
    assert w[0, 0] == 1.0 and math.isclose(w[0, 1], math.exp(-1)) and math.isclose(w[0, 2], math.exp(-9))
    assert w[0, 3] == 0.0
    # point 3: neighbours {3, 2, 1}, sigma = 4; not symmetric: w(1, 3) = 0 but w(3, 1) > 0
    assert math.isclose(w[3, 2], math.exp(-1)) and math.isclose(w[3, 1], math.exp(-36 / 16))
    assert w[1, 3] == 0.0 and w[3, 1] > 0
    code = knn_weights(h, k=3, k_sigma=2, weight="code")
    assert math.isclose(code[0, 2], math.exp(-81)) and math.isclose(code[3, 1], math.exp(-((36 / 16) ** 2)))


@pytest.mark.parametrize(("k", "k_sigma"), [(4, 1), (4, 5), (1, 1)])
def test_bad_graph_arguments_are_clear_errors(k, k_sigma):
    h, labels = _features()
    with pytest.raises(ValueError, match="k"):
        wnll_scores(h, labels, C, k=k, k_sigma=k_sigma)


def test_mu_conventions_and_zero_mu_is_the_plain_harmonic_extension():
    assert mu_value("paper", 30, 10) == 2.0 and mu_value("code", 30, 10) == 3.0
    with pytest.raises(ValueError, match="mu"):
        mu_value(-1.0, 30, 10)
    h, labels = _features(seed=4)
    scores = wnll_scores(h, labels, C, k=K, k_sigma=K_SIGMA, mu=0.0, ridge=0.0).scores
    w = knn_weights(h, K, K_SIGMA)
    s = w + w.T
    laplacian = torch.diag(s.sum(dim=1)) - s
    g = F.one_hot(labels, C).double()
    harmonic = torch.linalg.solve(laplacian[N_L:, N_L:], -laplacian[N_L:, :N_L] @ g)
    assert torch.allclose(scores, harmonic, atol=1e-12)


def test_isolated_queries_get_uniform_scores_and_are_counted():
    h, labels = _features(seed=5)
    far = 1000 + 0.01 * torch.randn(
        K + 1, h.shape[1], dtype=h.dtype, generator=torch.Generator().manual_seed(0)
    )
    result = wnll_scores(torch.cat([h, far]), labels, C, k=K, k_sigma=K_SIGMA)
    assert torch.isfinite(result.scores).all()
    assert result.isolated[-(K + 1) :].all() and not result.isolated[:N_U].any()
    assert torch.allclose(result.scores[-(K + 1) :], torch.full((K + 1, C), 1 / C, dtype=h.dtype))
    assert torch.allclose(result.scores.sum(dim=1), torch.ones(len(result.scores), dtype=h.dtype))


def test_float64_solve_of_float32_features():
    h, labels = _features(seed=6)
    result = wnll_scores(h.float(), labels, C, k=K, k_sigma=K_SIGMA, solve_dtype=torch.float64)
    assert result.scores.dtype == torch.float32
    assert torch.allclose(
        result.scores.double(), wnll_scores(h, labels, C, k=K, k_sigma=K_SIGMA).scores, atol=1e-5
    )


# ---------------------------------------------------------------------------------- gradients
def test_straight_through_value_is_the_scores_and_gradient_is_the_linear_head():
    h, labels = _features(seed=7)
    head = torch.nn.Linear(h.shape[1], C).double()
    y = torch.randint(0, C, (N_U,), generator=torch.Generator().manual_seed(1))
    hq = h[N_L:].clone().requires_grad_(True)
    scores = wnll_scores(torch.cat([h[:N_L], hq.detach()]), labels, C, k=K, k_sigma=K_SIGMA).scores
    z = head(hq)
    o = wnll_straight_through(scores, z)
    assert torch.allclose(o, scores, rtol=0, atol=1e-15)  # z + (s - z) rounds in the last bit
    loss = F.cross_entropy(o, y)
    (grad,) = torch.autograd.grad(loss, hq)
    expected = (F.softmax(scores, dim=1) - F.one_hot(y, C).double()) @ head.weight.detach() / N_U
    assert torch.allclose(grad, expected, atol=1e-12)


def test_exact_gradient_matches_finite_differences():
    h, labels = _features(seed=8, n_l=5, n_u=4, d=3)
    templates = h[:5]

    def scores_of(queries: Tensor) -> Tensor:
        return wnll_scores(
            torch.cat([templates, queries]), labels[:5], C, k=K, k_sigma=K_SIGMA, ridge=0.0
        ).scores

    # the kNN sets are piecewise constant: gradcheck's small steps (1e-6) never cross a switch here
    assert torch.autograd.gradcheck(scores_of, (h[5:].clone().requires_grad_(True),), eps=1e-6, atol=1e-7)
