"""Every random stream a training step draws from, as checkpoint-safe data, and back.

A resumed run must continue the random streams where the interrupted one left them (random
starts of training attacks, dropout, augmentation): ``seed_everything`` at start-up would replay
the first epoch's draws instead. The states are tensors, tuples and numbers only, so checkpoints
still load with ``weights_only=True`` (:mod:`lit_robust.loading`).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_states() -> dict[str, Any]:
    """The states of torch (CPU and every visible CUDA device), NumPy's global and Python's ``random``."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set every stream :func:`capture_rng_states` recorded (CUDA only where it was recorded)."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])
