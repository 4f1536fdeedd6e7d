"""``lit-robust fit|validate|test|predict --config ...``: a LightningCLI over every defense and DataModule.

* The model is any :class:`RobustClassifier` subclass and the data any :class:`ImageDataModule`
  subclass, chosen by ``class_path`` in YAML; the CLI's class lookup is the registry.
* ``data.num_classes`` is linked to ``model.num_classes``.
* ``robustness:`` configures the :class:`RobustnessEvaluation` callback and ``checkpoint:`` the
  :class:`ModelCheckpoint` (best ``val/worst_case_acc``); both are always present, so config
  groups compose without overwriting each other's callback lists.
* Defaults: TensorBoard logger under ``runs/``, ``inference_mode: false`` (attacks need grad),
  fp32, seed 0.
* ``fit`` with ``test_after_fit: true`` tests the best checkpoint, then prints the results with the
  paths of the logs and the checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lit_robust.callbacks.robustness_evaluation import RobustnessEvaluation
from lit_robust.data.base import ImageDataModule
from lit_robust.defenses.base import RobustClassifier
from lit_robust.report import write_report

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "lit_robust"},
    },
    "inference_mode": False,
    "precision": "32-true",
}


class LitRobustCLI(LightningCLI):
    """LightningCLI with lit_robust's links, callbacks and defaults (see the module docstring)."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs):
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            RobustClassifier,
            ImageDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(RobustnessEvaluation, "robustness")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # The monitored robust accuracy exists only on the epochs the callback evaluates.
        parser.link_arguments("robustness.every_n_epochs", "checkpoint.every_n_epochs")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/worst_case_acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}",
            }
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, test the best checkpoint and print clean and robust accuracy.",
        )

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit"):
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        self._report(best)

    def after_test(self) -> None:
        self._report(self.config[self.subcommand].get("ckpt_path"))

    def _report(self, checkpoint: str | None) -> None:
        """Print the summary table; write report.json and report.md next to the logs."""
        log_dir = self.trainer.log_dir
        lines = [format_summary(self.trainer.callback_metrics, log_dir, checkpoint or "")]
        if log_dir and self.trainer.is_global_zero:
            seed = self.config[self.subcommand].get("seed_everything")
            json_path, markdown_path = write_report(self.trainer, checkpoint, log_dir, seed)
            lines.append(f"Report:           {markdown_path} and {json_path.name}")
        print("\n".join(lines))


def format_summary(metrics: Mapping[str, object], log_dir: str | None = None, checkpoint: str = "") -> str:
    """A small table of the test metrics, then where the TensorBoard logs and the checkpoint are."""
    rows = [("clean accuracy (test split)", metrics.get("test/acc"))]
    rows.append(("clean accuracy (attacked subset)", metrics.get("test/subset_acc")))
    for key in sorted(k for k in metrics if k.startswith("test/robust_acc/")):
        rows.append((f"robust accuracy, {key.removeprefix('test/robust_acc/')}", metrics[key]))
    rows.append(("worst case over all attacks", metrics.get("test/worst_case_acc")))
    width = max(len(label) for label, _ in rows)
    lines = ["", "Results", "-" * (width + 10)]
    lines += [f"{label:<{width}}  {float(value):7.2%}" for label, value in rows if value is not None]
    lines.append("-" * (width + 10))
    if log_dir:
        lines.append(f"TensorBoard logs: {log_dir}   (tensorboard --logdir {log_dir})")
    if checkpoint:
        lines.append(f"Checkpoint:       {checkpoint}")
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lit-robust`` console script; ``args`` defaults to ``sys.argv[1:]``."""
    LitRobustCLI(args=args)


if __name__ == "__main__":
    main()
