"""Objectives that gradient attacks maximize, by name. Sums over the batch, so each sample's
gradient is its own (batch-size independent)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from lit_robust.validation import check_choice

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy_sum(logits: Tensor, labels: Tensor) -> Tensor:
    """``sum_i CE(logits_i, y_i)``."""
    return F.cross_entropy(logits, labels, reduction="sum")


def kl_to_clean_sum(logits: Tensor, clean_probs: Tensor) -> Tensor:
    """``sum_i KL(p_clean_i || softmax(logits_i))``, the TRADES inner objective."""
    return F.kl_div(F.log_softmax(logits, dim=1), clean_probs, reduction="sum")


ATTACK_LOSSES: dict[str, LossFn] = {"ce": cross_entropy_sum, "kl": kl_to_clean_sum}


def check_loss_name(loss: str) -> str:
    """Validate an attack's ``loss`` argument: a key of :data:`ATTACK_LOSSES`."""
    return check_choice("loss", loss, ATTACK_LOSSES)
