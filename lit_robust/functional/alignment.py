"""Gradient-feature alignment math (GFA, Lin et al. 2025, arXiv 2511.13749).

Pure tensor functions:

* :func:`per_sample_cosine` — ``c = <g, h> / max(||g|| ||h||, eps)`` per sample, in [-1, 1];
* :func:`alignment_penalty` — ``phi(c)``: ``1 - |c|`` (abs), ``1 - c^2`` (sq), ``1 - c`` (pos) or
  ``1 + c`` (neg);
* :func:`guarded_mean` — the batch mean of a tap's penalty over the samples whose gradient norm
  reaches ``min_grad_norm`` (GFA's guard against the ``1 / ||g||`` blow-up);
* :func:`per_sample_task_loss` — per-sample cross-entropy, the squared error of the probabilities or
  the squared error of the raw logits;
* :func:`gradient_feature_cosines` — the per-sample gradients of a summed per-sample loss with
  respect to several tensors (one ``autograd.grad`` call) and their cosines with the features
  (:func:`gradient_feature_alignment`: the gradients' norms too);
* :func:`summarize_cosines` — the per-tap means that are logged.

And the measurement on a network, through :class:`~lit_robust.models.taps.Taps` (forward pre-hooks
that live only during one recording forward):

* :func:`build_taps` — the tapped modules of a GFA variant (``"first"``, ``"deep"`` or a list);
* :func:`measure_alignment` — one recording forward, then every tap's per-sample cosine.

Used by the ``GFA`` defense and the ``GradientFeatureAlignment`` callback alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_robust.models.taps import Recording, Taps

PENALTIES = ("abs", "sq", "pos", "neg")
TASK_LOSSES = ("ce", "mse", "mse_logits")
INPUT_TAP = "input"  # the name of the network-input tap, h_in = x - input_center
VARIANTS = ("first", "deep")


def per_sample_cosine(g: Tensor, h: Tensor, eps: float = 1e-12) -> Tensor:
    """``<g_b, h_b> / max(||g_b||_2 ||h_b||_2, eps)`` for every sample ``b`` (tensors flattened per sample).

    ``eps`` only guards a zero gradient or feature: then ``c = 0`` (no NaN); ``eps = 0`` is exact
    cosine (and NaN for a zero vector).
    """
    if g.shape != h.shape:
        raise ValueError(f"gradient and feature shapes differ: {tuple(g.shape)} vs {tuple(h.shape)}")
    g, h = g.flatten(1), h.flatten(1)
    dot = (g * h).sum(dim=1)
    norms = g.norm(dim=1) * h.norm(dim=1)
    return dot / norms.clamp_min(eps) if eps > 0 else dot / norms


def alignment_penalty(cos: Tensor, penalty: str = "abs") -> Tensor:
    """``phi(c)``, elementwise, each in [0, 2]:

    * ``"abs"``: ``1 - |c|``, sign-agnostic (ours, the default: gfa.md §(b));
    * ``"sq"``: ``1 - c^2``, sign-agnostic and smooth at ``c = 0`` (ours);
    * ``"pos"``: ``1 - c``, pushes the gradient *along* the feature (aligned);
    * ``"neg"``: ``1 + c``, pushes it *against* the feature (opposed).

    ``pos`` and ``neg`` are the two signed candidates for the paper's target: the authors' sister paper
    (arXiv 2511.11902) compares aligned (SAME) with opposed (DIFF) gradient-pattern alignment and finds
    the direction critical, so the GFA paper most likely uses a signed cosine (source: issue 14 / gfa.md
    §(i)); which sign is unknown.
    """
    if penalty == "abs":
        return 1 - cos.abs()
    if penalty == "sq":
        return 1 - cos.square()
    if penalty == "pos":
        return 1 - cos
    if penalty == "neg":
        return 1 + cos
    raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")


def guarded_mean(
    values: Tensor, grad_norm: Tensor | None, min_grad_norm: float = 0.0
) -> tuple[Tensor, Tensor]:
    """``(mean of values over the kept samples, fraction of samples dropped)``.

    A sample is kept when its tapped-gradient norm ``grad_norm`` is at least ``min_grad_norm``. With
    ``min_grad_norm = 0`` (off) or ``grad_norm = None`` this is exactly ``values.mean()`` and nothing is
    dropped. When no sample is kept the mean is 0 with a gradient of 0 (no NaN). When every sample is
    kept the result is bit for bit ``values.mean()``, and so are its gradients. On, it costs one host
    synchronization (the boolean selection).
    """
    if min_grad_norm <= 0 or grad_norm is None:
        return values.mean(), values.new_zeros(())
    keep = grad_norm.detach() >= min_grad_norm
    kept = values[keep]
    dropped = 1 - keep.to(values.dtype).mean()
    if kept.numel() == 0:
        return values.sum() * 0, dropped
    return kept.mean(), dropped


def per_sample_task_loss(logits: Tensor, y: Tensor, task_loss: str = "ce") -> Tensor:
    """Per-sample loss, shape ``(B,)``:

    * ``"ce"``: ``CE(z, y)`` (ours, GFA's default);
    * ``"mse"``: ``sum_k (softmax(z)_k - 1[k = y])^2``, the squared error of the probabilities;
    * ``"mse_logits"``: ``sum_k (z_k - 1[k = y])^2``, the squared error of the raw logits against the
      one-hot target, as the GFA authors' public code trains (MSE on the pre-activation outputs;
      source: issue 14 / gfa.md §(i)). Summed over the ``K`` classes per sample, the convention of
      ``"mse"``, so the two options differ only in what is compared; the batch term is the mean over
      samples. ``torch.nn.MSELoss``'s mean over classes is this divided by ``K``: a constant factor that
      rescales the task term (equivalently ``lam`` by ``K``) and never changes a cosine.
    """
    if task_loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if task_loss == "mse":
        onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return (logits.softmax(dim=1) - onehot).square().sum(dim=1)
    if task_loss == "mse_logits":
        onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return (logits - onehot).square().sum(dim=1)
    raise ValueError(f"task_loss must be one of {TASK_LOSSES}, got {task_loss!r}")


def gradient_feature_cosines(
    per_sample_loss: Tensor,
    wrt: Mapping[str, Tensor],
    features: Mapping[str, Tensor],
    eps: float = 1e-12,
    create_graph: bool = True,
) -> dict[str, Tensor]:
    """``{name: c_t}``, the per-sample cosine between ``d loss_b / d wrt[name]`` and ``features[name]``
    (the cosines of :func:`gradient_feature_alignment`)."""
    return gradient_feature_alignment(per_sample_loss, wrt, features, eps, create_graph)[0]


def gradient_feature_alignment(
    per_sample_loss: Tensor,
    wrt: Mapping[str, Tensor],
    features: Mapping[str, Tensor],
    eps: float = 1e-12,
    create_graph: bool = True,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``({name: c_t}, {name: ||g_t||})``: the per-sample cosine between ``g_t = d loss_b / d wrt[name]``
    and ``features[name]``, and the per-sample norm of ``g_t`` (detached, shape ``(B,)``).

    The gradients come from one ``autograd.grad`` of ``per_sample_loss.sum()``: samples do not
    interact, so row ``b`` of each gradient is the gradient of ``loss_b`` alone. ``wrt`` and
    ``features`` share their keys; they differ only where the feature is a shifted copy of the
    differentiated tensor (the network input ``x`` and ``h_in = x - c_in``). ``create_graph=True``
    keeps the graph for double backprop.
    """
    names = list(wrt)
    if set(names) != set(features):
        raise ValueError(f"wrt and features must have the same keys, got {names} and {list(features)}")
    for name in names:
        if not wrt[name].requires_grad:
            raise ValueError(f"tap {name!r} does not require grad, so no gradient reaches it")
    grads = torch.autograd.grad(
        per_sample_loss.sum(), [wrt[name] for name in names], create_graph=create_graph, allow_unused=True
    )
    cosines, norms = {}, {}
    for name, grad in zip(names, grads, strict=True):
        if grad is None:
            raise ValueError(f"tap {name!r} does not influence the loss (its module's output is unused)")
        cosines[name] = per_sample_cosine(grad, features[name], eps)
        norms[name] = grad.detach().flatten(1).norm(dim=1)
    return cosines, norms


def l1_over_l2(g: Tensor) -> Tensor:
    """Per-sample ``||g||_1 / ||g||_2`` of a batch of gradients, shape ``(B,)``; NaN where ``g = 0``.

    Dimensionless, between 1 (one nonzero coordinate) and ``sqrt(d)`` (every ``|g_i|`` equal; 28 for
    a 28x28 image). An Linf attacker's first-order gain is ``eps * ||g||_1``, so at a fixed ``||g||_2``
    a larger ratio is a weaker model: issue 14's derivation predicts that aligning the input gradient
    with near-binary MNIST pixels (FIRST) pushes the ratio towards ``sqrt(d)``.
    """
    flat = g.flatten(1)
    return flat.norm(p=1, dim=1) / flat.norm(dim=1)


def summarize_cosines(stage: str, cosines: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``<stage>/gfa_abs_cos/<tap>`` (mean ``|c|``) and ``<stage>/gfa_cos/<tap>`` (mean signed ``c``)."""
    metrics = {}
    for name, c in cosines.items():
        metrics[f"{stage}/gfa_abs_cos/{name}"] = c.abs().mean()
        metrics[f"{stage}/gfa_cos/{name}"] = c.mean()
    return metrics


def build_taps(network: nn.Module, taps: str | Sequence[str], tap_types: Sequence[str | type]) -> Taps:
    """The module taps of a GFA variant: none for ``"first"``, every ``tap_types`` module for
    ``"deep"``, or exactly the modules named in a list (the input tap is always added by the caller)."""
    if isinstance(taps, str):
        variant = taps.lower()
        if variant not in VARIANTS:
            raise ValueError(f"taps must be 'first', 'deep' or a list of module names, got {taps!r}")
        return Taps(network, names=[] if variant == "first" else None, types=tap_types)
    names = list(taps)
    if INPUT_TAP in names:
        raise ValueError(f"taps: {INPUT_TAP!r} is the network-input tap, always present; list modules only")
    return Taps(network, names=names, types=tap_types)


def measure_alignment(
    network: nn.Module,
    taps: Taps,
    x: Tensor,
    y: Tensor,
    task_loss: str = "ce",
    input_center: float = 0.5,
    eps_cos: float = 1e-12,
    create_graph: bool = True,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One recording forward of ``network`` on ``x`` (which must require grad), then the per-sample cosines.

    Returns ``(per-sample task loss (B,), logits, {tap name: c_t (B,)})``, the input tap first
    (``h_in = x - input_center``, ``input_center`` in pixel units; gradient ``d loss / d x``), then the
    module inputs in forward order, without those that are ``x`` itself or its leading ``Normalize`` /
    ``Flatten`` output. ``create_graph=True`` keeps the graph for double backprop (training).
    """
    if not x.requires_grad:
        raise ValueError("x must require grad (x.clone().requires_grad_(True)) to measure alignment")
    with taps.recording(x) as record:
        logits = network(x)
    per_sample = per_sample_task_loss(logits, y, task_loss)
    return per_sample, logits, recorded_cosines(record, x, per_sample, input_center, eps_cos, create_graph)


def recorded_cosines(
    record: Recording,
    x: Tensor,
    per_sample: Tensor,
    input_center: float = 0.5,
    eps_cos: float = 1e-12,
    create_graph: bool = True,
) -> dict[str, Tensor]:
    """``{tap name: c_t (B,)}`` of the per-sample loss ``per_sample`` computed from the forward that
    ``record`` recorded on ``x`` (see :func:`measure_alignment`, which is this after its forward)."""
    return recorded_alignment(record, x, per_sample, input_center, eps_cos, create_graph)[0]


def recorded_alignment(
    record: Recording,
    x: Tensor,
    per_sample: Tensor,
    input_center: float = 0.5,
    eps_cos: float = 1e-12,
    create_graph: bool = True,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """:func:`recorded_cosines` and, per tap, the per-sample norm ``||g_t||`` of the tapped gradient
    (detached; ``||d loss / d x||`` for the input tap): ``({tap: c_t}, {tap: ||g_t||})``."""
    module_inputs = record.module_inputs(dedup=True)
    if INPUT_TAP in module_inputs:
        raise ValueError(f"a tapped module is named {INPUT_TAP!r}, the name of the network-input tap")
    record.check_unmodified()
    wrt = {INPUT_TAP: x, **module_inputs}
    features = {INPUT_TAP: x - input_center, **module_inputs}
    try:
        return gradient_feature_alignment(per_sample, wrt, features, eps_cos, create_graph)
    except RuntimeError as error:
        if "inplace operation" not in str(error):
            raise
        raise ValueError(
            f"a tensor needed by the GFA gradients was modified in place ({error}); the taps are "
            f"{list(wrt)}: use inplace=False in the network's activations"
        ) from error
