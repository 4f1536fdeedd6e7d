"""Standard training: empirical risk minimization, the undefended baseline."""

from __future__ import annotations

from lit_robust.defenses.base import RobustClassifier


class StandardTraining(RobustClassifier):
    """Empirical risk minimization: ``L = (1/B) sum_i CE(f(x_i), y_i)``. No defense at all.

    Every robustness number is read against this one: an attack that does not break a standard
    network is too weak to judge a defense with. Arguments as :class:`RobustClassifier`.
    """
