"""Weighted nonlocal Laplacian (WNLL) interpolation on a kNN feature graph.

Bao Wang, Alex T. Lin, Wei Zhu, Penghang Yin, Andrea L. Bertozzi, Stanley J. Osher, "Adversarial Defense
via Data Dependent Activation Function and Total Variation Minimization", arXiv 1809.08516 (Inverse
Problems & Imaging 2020); the WNLL equation of Shi, Osher and Zhu. The spec is
``shared/papers/wnll_tvm.md`` (b), (d) 2.

Points ``X = L ∪ U`` (templates first, then queries) with features ``h`` (any units; only distances
matter). For each ``x``, ``N_k(x)`` is its ``k`` nearest points by Euclidean distance, ``x`` itself at
rank 1, and ``σ(x)`` the distance to its rank-``k_σ`` neighbour. Weights (not symmetric)::

    w(x, y) = exp(-||h_x - h_y||² / σ(x)²)        y ∈ N_k(x)  (weight="paper")
    w(x, y) = exp(-(||h_x - h_y||² / σ(x)²)²)     y ∈ N_k(x)  (weight="code")

and 0 otherwise. With ``S = W + Wᵀ`` and one-hot template labels ``G``, the scores ``u`` of the queries
solve, for every ``x ∈ U``::

    Σ_{y∈X} S(x, y) (u(x) - u(y)) + μ Σ_{y∈L} w(y, x) (u(x) - u(y)) = 0,   u = G on L
    A = diag(S[U,:]·1 + μ W[L,U]ᵀ·1) - S[U,U],   b = (S[U,L] + μ W[L,U]ᵀ) G,   A u_U = b

``μ = |X|/|L| - 1`` (``mu="paper"``) or ``|X|/|L|`` (``mu="code"``) or any number >= 0. Rows of the
solution lie in [0, 1] and sum to 1 (maximum principle); queries without a graph path to a template
(row sum below 1/2 after the ridge-regularized solve) get uniform scores and are flagged ``isolated``.

Gradients: the kNN sets and the rank-``k_σ`` index are chosen without autograd and held fixed; the
distances, ``σ``, the weights and ``torch.linalg.solve`` are differentiable, so calling
:func:`wnll_scores` on features that require grad gives the exact gradient. :func:`wnll_straight_through`
gives the surrogate (value of the scores, gradient of the linear head).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

WEIGHTS = ("paper", "code")
MU_RULES = ("paper", "code")


class WNLLResult(NamedTuple):
    """``scores``: ``(|U|, C)`` row-normalized class scores of the queries; ``isolated``: ``(|U|,)`` bool,
    queries with no graph path to any template (given uniform scores)."""

    scores: Tensor
    isolated: Tensor


def check_graph_args(k: int, k_sigma: int, weight: str) -> None:
    """Raise ``ValueError`` for ``k < 2``, ``k_sigma`` outside ``[2, k]`` (σ would be 0 at rank 1) or an
    unknown ``weight``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2 (the point itself is rank 1), got {k!r}")
    if isinstance(k_sigma, bool) or not isinstance(k_sigma, int) or not 2 <= k_sigma <= k:
        raise ValueError(
            f"k_sigma must be an integer in [2, k={k}] (rank 1 is the point itself, σ would be 0), "
            f"got {k_sigma!r}"
        )
    if weight not in WEIGHTS:
        raise ValueError(f"weight must be one of {WEIGHTS}, got {weight!r}")


def mu_value(mu: Literal["paper", "code"] | float, num_points: int, num_templates: int) -> float:
    """``μ``: ``|X|/|L| - 1`` (``"paper"``), ``|X|/|L|`` (``"code"``) or the number given (>= 0)."""
    if mu == "paper":
        return num_points / num_templates - 1.0
    if mu == "code":
        return num_points / num_templates
    if isinstance(mu, (str, bool)) or not float(mu) >= 0:
        raise ValueError(f"mu must be 'paper', 'code' or a number >= 0, got {mu!r}")
    return float(mu)


def knn_weights(
    features: Tensor, k: int = 15, k_sigma: int = 8, weight: Literal["paper", "code"] = "paper"
) -> Tensor:
    """Dense ``(N, N)`` weight matrix ``W[x, y] = w(x, y)`` of the kNN graph (module docstring).

    ``features``: ``(N, d)``. Exact neighbours (``torch.cdist`` + ``topk``, the point itself forced to
    rank 1); the neighbour indices carry no gradient, the weights do (through the squared distances
    and ``σ(x)²``). ``σ(x)²`` is clamped below at 1e-12 (duplicate points) so weights stay finite.
    """
    check_graph_args(k, k_sigma, weight)
    if features.dim() != 2:
        raise ValueError(f"features must have shape (N, d), got {tuple(features.shape)}")
    n = features.shape[0]
    if n < k:
        raise ValueError(f"the graph needs at least k={k} points, got {n}")
    with torch.no_grad():
        distances = torch.cdist(features.detach(), features.detach())
        distances.fill_diagonal_(-1.0)  # the point itself is rank 1 even with rounding
        index = distances.topk(k, dim=1, largest=False).indices  # (N, k), ascending
    diff = features[:, None, :] - features[index]  # (N, k, d)
    squared = diff.pow(2).sum(dim=-1)  # (N, k), exact 0 at rank 1
    sigma2 = squared[:, k_sigma - 1 : k_sigma].clamp_min(1e-12)
    ratio = squared / sigma2
    values = torch.exp(-ratio) if weight == "paper" else torch.exp(-ratio.pow(2))
    return torch.zeros(n, n, dtype=features.dtype, device=features.device).scatter(1, index, values)


def wnll_system(
    weights: Tensor, labels: Tensor, num_classes: int, mu: Literal["paper", "code"] | float = "paper"
) -> tuple[Tensor, Tensor]:
    """``(A, b)`` of the WNLL system for the queries; ``weights`` is ``(N, N)`` with the ``|L| = len(labels)``
    templates in the first rows, ``labels`` their classes in ``[0, num_classes)``."""
    n_l = labels.shape[0]
    n = weights.shape[0]
    if not 0 < n_l < n:
        raise ValueError(f"need at least one template and one query, got {n_l} templates of {n} points")
    m = mu_value(mu, n, n_l)
    one_hot = torch.nn.functional.one_hot(labels.long(), num_classes).to(weights.dtype)
    sym = weights + weights.T
    w_lu = weights[:n_l, n_l:]  # w(y, x), y ∈ L, x ∈ U
    degree = sym[n_l:].sum(dim=1) + m * w_lu.sum(dim=0)
    a = torch.diag(degree) - sym[n_l:, n_l:]
    b = (sym[n_l:, :n_l] + m * w_lu.T) @ one_hot
    return a, b


def wnll_scores(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    k: int = 15,
    k_sigma: int = 8,
    weight: Literal["paper", "code"] = "paper",
    mu: Literal["paper", "code"] | float = "paper",
    ridge: float = 1e-6,
    solve_dtype: torch.dtype | None = None,
) -> WNLLResult:
    """WNLL class scores of the queries ``features[len(labels):]`` given the templates (the first rows).

    Args:
        features: ``(|L| + |U|, d)``, templates first; differentiable (exact gradient) if it requires grad.
        labels: ``(|L|,)`` template classes.
        num_classes: ``C``.
        k, k_sigma, weight, mu: the graph and equation (module docstring; spec defaults 15, 8).
        ridge: ``A + ridge·mean(diag A)·I`` (relative, dimensionless; the spec's 1e-6; 0 for the exact
            system). It keeps ``A`` nonsingular when some queries are isolated.
        solve_dtype: dtype of the dense solve (e.g. ``torch.float64``); the scores come back in
            ``features.dtype``.

    Returns:
        :class:`WNLLResult` with row-normalized ``scores`` ``(|U|, C)`` and the ``isolated`` flags.
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    weights = knn_weights(features, k, k_sigma, weight)
    a, b = wnll_system(weights, labels, num_classes, mu)
    if solve_dtype is not None:
        a, b = a.to(solve_dtype), b.to(solve_dtype)
    if ridge > 0:
        diag = a.diagonal()
        a = a + torch.diag(diag.new_full(diag.shape, 1.0) * ridge * diag.detach().mean())
    u = torch.linalg.solve(a, b).to(features.dtype)
    total = u.sum(dim=1, keepdim=True)
    isolated = (total.detach() < 0.5).squeeze(1)
    uniform = torch.full_like(u, 1.0 / num_classes)
    scores = torch.where(isolated[:, None], uniform, u / torch.where(isolated[:, None], 1.0, total))
    return WNLLResult(scores, isolated)


def wnll_straight_through(value: Tensor, surrogate: Tensor) -> Tensor:
    """``surrogate + (value - surrogate).detach()``: the value of ``value``, the gradient of ``surrogate``.

    With ``value`` the WNLL scores (or log-scores) and ``surrogate`` the linear head's logits
    ``z = W_fc h + b_fc`` this is the spec's training form and the BPDA gradient for attacks.
    """
    return surrogate + (value - surrogate).detach()
