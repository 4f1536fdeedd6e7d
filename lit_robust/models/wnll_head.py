"""Chunked, transductive WNLL prediction of a :class:`~lit_robust.models.wnll_network.WNLLNetwork` against
a template bank (Wang et al., arXiv 1809.08516; spec ``shared/papers/wnll_tvm.md``).

* :class:`WNLLHead`: the graph settings, the template bank and its features (split into chunks), and the
  prediction ``log clamp(mean over chunks of U(h), 1e-12)`` with a chosen gradient; no Lightning needed;
* :class:`WNLLClassifier`: that prediction as an ``nn.Module``, the model an attack differentiates.

The graph solve is :func:`lit_robust.functional.wnll.wnll_scores`; the training schedule is
:mod:`lit_robust.defenses.wnll`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from lit_robust.functional.wnll import MU_RULES, WEIGHTS, WNLLResult, wnll_scores, wnll_straight_through
from lit_robust.models.modes import eval_mode
from lit_robust.models.wnll_network import TemplateBank, WNLLNetwork
from lit_robust.validation import check_choice, check_int, check_real

GRAD_MODES = ("surrogate", "exact")
SOLVE_DTYPES = {"float32": None, "float64": torch.float64}


class WNLLHead:
    """WNLL scores of queries against the templates of a :class:`TemplateBank`.

    At prediction the bank's templates are split into ``template_chunks`` chunks (the first
    ``active_chunks`` are used; ``None``: all) and the queries into graphs of ``query_batch_size``; each
    graph is solved once per chunk and the scores are averaged over the chunks. Template features are
    computed once (:meth:`refresh`, eval mode, no grad) and kept until :meth:`invalidate`.

    Args:
        num_classes: ``C``, >= 2.
        k, k_sigma, weight, mu, ridge, solve_dtype: the graph (see
            :func:`~lit_robust.functional.wnll.wnll_scores`): ``k`` >= 2 neighbours (spec 15); ``k_sigma``
            in [2, k], the neighbour setting ``σ`` (8); ``weight`` ``"paper"``/``"code"``; ``mu``
            ``"paper"``/``"code"`` or a finite number >= 0; ``ridge`` >= 0, relative (1e-6);
            ``"float32"`` / ``"float64"`` dense solve.
        template_chunks: chunks per query graph, >= 1.
        query_batch_size: queries per graph, >= 1 (official 1000).
    """

    def __init__(
        self,
        num_classes: int = 10,
        k: int = 15,
        k_sigma: int = 8,
        weight: Literal["paper", "code"] = "paper",
        mu: Literal["paper", "code"] | float = "paper",
        ridge: float = 1e-6,
        solve_dtype: Literal["float32", "float64"] = "float32",
        template_chunks: int = 10,
        query_batch_size: int = 1000,
    ):
        self.num_classes = check_int("num_classes", num_classes, 2)
        k = check_int("k", k, 2)  # the point itself is rank 1
        self.graph = dict(
            k=k,
            k_sigma=check_int("k_sigma", k_sigma, 2, k),  # rank 1 would give sigma = 0
            weight=check_choice("weight", weight, WEIGHTS),
            mu=check_choice("mu", mu, MU_RULES) if isinstance(mu, str) else check_real("mu", mu, 0),
            ridge=check_real("ridge", ridge, 0),
        )
        self.solve_dtype = SOLVE_DTYPES[check_choice("solve_dtype", solve_dtype, tuple(SOLVE_DTYPES))]
        self.template_chunks = check_int("template_chunks", template_chunks, 1)
        self.query_batch_size = check_int("query_batch_size", query_batch_size, 1)
        self.templates: TemplateBank | None = None  # CPU
        self.chunks: list[tuple[Tensor, Tensor]] | None = None  # template (features, labels) per chunk
        self.active_chunks: int | None = None  # None: all chunks
        self.last_isolated: Tensor | None = None

    def use_templates(self, bank: TemplateBank) -> None:
        """Predict against ``bank`` from now on (at least ``template_chunks`` templates)."""
        if len(bank) < self.template_chunks:
            raise ValueError(
                f"need at least template_chunks={self.template_chunks} templates, got {len(bank)}"
            )
        self.templates, self.chunks = bank, None

    def require_templates(self) -> TemplateBank:
        if self.templates is None:
            raise RuntimeError(
                "WNLL has no templates: call load_templates(datamodule or dataset) or "
                "set_templates(images, labels) before predicting outside a Trainer"
            )
        return self.templates

    def invalidate(self) -> None:
        """Forget the template features (the network's weights changed)."""
        self.chunks = None

    def refresh(self, network: WNLLNetwork, device: torch.device | str) -> None:
        """Template features ``h`` in eval mode, without grad, on ``device``, split into chunks."""
        bank = self.require_templates()
        with torch.inference_mode(False), torch.no_grad(), eval_mode(network):
            features = torch.cat(
                [network.features(batch.to(device)) for batch in bank.images.split(self.query_batch_size)]
            )
        labels = bank.labels.to(device).tensor_split(self.template_chunks)
        self.chunks = list(zip(features.tensor_split(self.template_chunks), labels, strict=True))

    def scores(self, template_h: Tensor, template_y: Tensor, query_h: Tensor) -> WNLLResult:
        """The WNLL scores of ``query_h`` given the templates' features and labels (one graph)."""
        features = torch.cat([template_h, query_h])
        return wnll_scores(features, template_y, self.num_classes, solve_dtype=self.solve_dtype, **self.graph)

    def log_scores(
        self,
        network: WNLLNetwork,
        x: Tensor,
        transform: Callable[[Tensor], Tensor] | None = None,
        grad_mode: Literal["surrogate", "exact"] = "surrogate",
    ) -> Tensor:
        """``log(clamp(mean over chunks of U, 1e-12))`` of the queries ``transform(x)``, shape ``(B, C)``.

        Gradient ``"surrogate"`` (the linear head's) or ``"exact"`` (autograd through the weights and the
        solve, kNN sets fixed). Sets ``last_isolated`` (per query, in how many chunks it had no path to a
        template). The template features are computed on ``x``'s device when there are none.
        """
        grad_mode = check_choice("grad_mode", grad_mode, GRAD_MODES)
        if self.chunks is None:
            self.refresh(network, x.device)
        chunks = self.chunks[: self.active_chunks]
        outputs, isolated = [], []
        for queries in x.split(self.query_batch_size):
            h = network.features(queries if transform is None else transform(queries))
            total, lonely = 0.0, torch.zeros(len(queries), device=x.device)
            for template_h, template_y in chunks:
                with torch.set_grad_enabled(grad_mode == "exact" and torch.is_grad_enabled()):
                    result = self.scores(template_h, template_y, h if grad_mode == "exact" else h.detach())
                total, lonely = total + result.scores, lonely + result.isolated
            log_scores = (total / len(chunks)).clamp_min(1e-12).log()
            if grad_mode == "surrogate":
                log_scores = wnll_straight_through(log_scores, network.head(h))
            outputs.append(log_scores)
            isolated.append(lonely)
        self.last_isolated = torch.cat(isolated).detach()
        return torch.cat(outputs)


class WNLLClassifier(nn.Module):
    """``head.log_scores(network, x, input_transform, grad_mode)`` as a module: ``"surrogate"`` (value: the
    log-scores; gradient: the linear head's, the BPDA the paper's attacks used) or ``"exact"`` (autograd
    through the weights and the solve, kNN sets fixed). Only the queries ``x`` (after the optional
    ``input_transform``) are perturbed; templates are fixed clean images."""

    def __init__(
        self,
        head: WNLLHead,
        network: WNLLNetwork,
        input_transform: nn.Module | None = None,
        grad_mode: Literal["surrogate", "exact"] = "surrogate",
    ):
        super().__init__()
        self.wnll_head, self.network, self.input_transform = head, network, input_transform
        self.grad_mode = check_choice("grad_mode", grad_mode, GRAD_MODES)

    def forward(self, x: Tensor) -> Tensor:
        return self.wnll_head.log_scores(self.network, x, self.input_transform, self.grad_mode)


__all__ = ["GRAD_MODES", "WNLLClassifier", "WNLLHead"]
