"""What TensorBoard opens on: the run's hyperparameters against its robust accuracy, and one chart of
clean, each robust and the worst-case accuracy (instead of Lightning's ``hp_metric = -1`` placeholder)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams

from lit_robust.metrics import ACC, ROBUST_ACC, SUBSET_ACC, WORST_CASE_ACC, metric

HPARAM_METRICS = (metric("val", WORST_CASE_ACC), metric("val", ACC), metric("test", WORST_CASE_ACC))
LAYOUT = {
    "robustness": {
        stage: [
            "Multiline",
            [
                metric(stage, ACC),
                metric(stage, SUBSET_ACC),
                f"{stage}/{ROBUST_ACC}/.*",
                f"{stage}/{WORST_CASE_ACC}.*",
            ],
        ]  # fmt: skip
        for stage in ("val", "test")
    },
    "training": {"loss terms": ["Multiline", ["train/.*"]]},
}


def disable_hp_metric(logger: Any) -> None:
    """Stop Lightning's TensorBoard logger from writing its ``hp_metric = -1`` placeholder."""
    if isinstance(logger, TensorBoardLogger):
        logger._default_hp_metric = False  # the public switch is a constructor argument configs rarely set


def flat_hparams(training: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The training settings that tell runs apart (defense, network, training attack and its eps,
    TRADES beta, the defense's plain hyperparameters) as the flat plain values the HPARAMS tab shows."""
    adversary = training.get("adversary") or {}
    flat: dict[str, Any] = {
        "defense": training.get("defense"),
        "network": training.get("network"),
        "adversary": adversary.get("name", "none"),
        "adversary_eps": adversary.get("eps"),
        "trades_beta": training.get("trades_beta"),
    }
    for key, value in training.get("hyperparameters", {}).items():
        if value is not None and not key.startswith("_") and key not in flat:  # lam, beta, taps, ...
            flat[key] = value
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}


def write_run_summary(logger: Any, training: Mapping[str, Any]) -> None:
    """Write the hyperparameters (compared against ``val/worst_case_acc``, ``val/acc`` and
    ``test/worst_case_acc`` in the HPARAMS tab) and the custom-scalars layout into ``logger``'s run."""
    if not isinstance(logger, TensorBoardLogger):
        return
    writer = logger.experiment
    experiment, start, end = hparams(flat_hparams(training), {name: 0.0 for name in HPARAM_METRICS})
    file_writer = writer._get_file_writer()
    for summary in (experiment, start, end):
        file_writer.add_summary(summary)
    writer.add_custom_scalars(LAYOUT)
