"""The one place lit_robust imports pyautoattack, with the glue its classes need inside a library.

pyautoattack 0.2.0 packages the official AutoAttack code (Croce & Hein, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks", ICML 2020). Called
directly, it has side effects that :func:`pyautoattack_call` undoes:

* **Seeds.** Every ``perturb`` calls ``torch.manual_seed(seed)`` (and the CUDA one) on the *global*
  generators, which would reset a training loop's randomness at every batch. The call runs inside
  ``torch.random.fork_rng``: results are those of a direct call, the caller's RNG state is untouched.
* **Messages.** AutoAttack reports its sanity checks (randomized or probability outputs, a dynamic
  forward, zero gradients, Square stronger than the white-box attacks) through
  ``logging.getLogger("auto-attack").warning`` only, and a standalone APGD through a bare
  ``warnings.warn(Warning(...))``. Both are re-emitted as ``base.GradientMaskingWarning``. Its
  progress messages go to stderr only with ``verbose``.
* **Tracing.** ``checks.check_dynamic`` calls ``sys.settrace(None)``, switching off coverage or a
  debugger, and never resets its call counters, so one dynamic model flags every later model. Both
  are undone.

Also: the classes fix their ``device`` at construction (AutoAttack's default, ``"cpu"``, moves the
inputs there), so our attacks build them at call time with ``device=x.device``; and ``APGDAttack``
derives its step-size checkpoints from ``n_iter`` in ``__init__`` (:func:`set_apgd_steps`).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from pyautoattack import AutoAttack as PyAutoAttack
from pyautoattack import checks
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from pyautoattack.fab_pt import FABAttack_PT
from pyautoattack.square import SquareAttack
from torch import Tensor

from lit_robust.attacks.base import Attack, GradientMaskingWarning, ThreatModel
from lit_robust.validation import check_choice, check_int, check_optional_int

__all__ = [
    "LOGGER",
    "NORMS",
    "APGDAttack",
    "APGDAttack_targeted",
    "FABAttack_PT",
    "PyAutoAttack",
    "SquareAttack",
    "check_norm",
    "check_seed",
    "pyautoattack_call",
    "resolve_seed",
    "set_apgd_steps",
]

LOGGER = logging.getLogger("auto-attack")  # the logger pyautoattack's AutoAttack writes to
NORMS = {"linf": ("Linf", ThreatModel.LINF), "l2": ("L2", ThreatModel.L2), "l1": ("L1", ThreatModel.L1)}
MAX_SEED = 2**64 - 1  # torch.manual_seed takes [0, 2**64 - 1] (and negatives, which we refuse)
FLAGS_DOC = "https://github.com/fra31/auto-attack/blob/master/flags_doc.md"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def pyautoattack_call(x: Tensor, verbose: bool = False) -> Iterator[None]:
    """Run pyautoattack code without its side effects (module docstring); re-emit its flags as warnings."""
    collect = _Collect()
    progress = logging.StreamHandler(sys.stderr)
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    progress.setFormatter(logging.Formatter("auto-attack: %(message)s"))
    handlers = [collect, progress] if verbose else [collect]
    saved = LOGGER.level, LOGGER.propagate, sys.gettrace()
    for handler in handlers:
        LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.DEBUG if verbose else logging.WARNING)
    LOGGER.propagate = False
    checks.funcs.update(dict.fromkeys(checks.funcs, 0))
    devices = list(range(torch.cuda.device_count())) if x.is_cuda else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        for handler in handlers:
            LOGGER.removeHandler(handler)
        LOGGER.setLevel(saved[0])
        LOGGER.propagate = saved[1]
        sys.settrace(saved[2])
    for check, message in dict.fromkeys((r.funcName, r.getMessage()) for r in collect.records):
        # check_n_classes is about the configuration, every other check about the model
        category = UserWarning if check == "check_n_classes" else GradientMaskingWarning
        message = message.replace("See flags_doc.md", f"See {FLAGS_DOC}")
        warnings.warn(f"AutoAttack: {message}", category, stacklevel=3)


def check_norm(norm: str) -> tuple[str, ThreatModel]:
    """pyautoattack's spelling of ``norm`` (``"linf"``, ``"l2"`` or ``"l1"``) and its threat model."""
    return NORMS[check_choice("norm", norm, NORMS)]


def check_seed(seed: int | None) -> int | None:
    """An attack's ``seed``: an integer in ``[0, 2**64 - 1]`` (what ``torch.manual_seed`` takes), or
    ``None`` (see :func:`resolve_seed`)."""
    return check_optional_int("seed", seed, 0, MAX_SEED)


def resolve_seed(seed: int | None) -> int:
    """``seed``, or with ``None`` a seed drawn from torch's global generator (new at every call)."""
    return int(torch.randint(2**31 - 1, ())) if seed is None else seed


def set_apgd_steps(apgd: APGDAttack, steps: int) -> None:
    """Set ``n_iter`` and the checkpoints ``APGDAttack.__init__`` derives from it (0.22, 0.06, 0.03 n)."""
    apgd.n_iter = apgd.n_iter_orig = steps
    apgd.n_iter_2 = max(int(0.22 * steps), 1)
    apgd.n_iter_min = max(int(0.06 * steps), 1)
    apgd.size_decr = max(int(0.03 * steps), 1)


class RestartedAttack(Attack):
    """The settings pyautoattack's iterative attacks share (APGD, FAB-T), validated once.

    Args: ``eps`` (pixel units), ``norm`` (``"linf"``, ``"l2"`` or ``"l1"``), ``steps`` and ``restarts``
    (integers >= 1), ``seed`` (an integer >= 0; ``None``: drawn from torch's generator at each call),
    ``verbose``, ``name``; see
    the subclasses for their meaning in each attack.
    """

    def __init__(
        self,
        eps: float,
        norm: Literal["linf", "l2", "l1"] = "linf",
        steps: int = 100,
        restarts: int = 1,
        seed: int | None = 0,
        verbose: bool = False,
        name: str | None = None,
    ):
        self._norm, threat_model = check_norm(norm)
        super().__init__(eps, name, threat_model=threat_model)
        self.norm = norm
        self.steps = check_int("steps", steps, low=1)
        self.restarts = check_int("restarts", restarts, low=1)
        self.seed = check_seed(seed)
        self.verbose = verbose
