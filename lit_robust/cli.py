"""``lit-robust fit|validate|test|predict --config ...``: a LightningCLI over every defense and DataModule;
``lit-robust compare RUN...`` writes a leaderboard of finished runs (:mod:`lit_robust.leaderboard`).

* The model is any :class:`RobustClassifier` subclass and the data any :class:`ImageDataModule`
  subclass, chosen by ``class_path`` in YAML; the CLI's class lookup is the registry.
* ``data.num_classes`` is linked to ``model.num_classes``. The network gets the rest of what the data
  fixes from the DataModule too: every argument of ``model.init_args.network`` among ``num_classes``,
  ``in_channels``, ``input_size``, ``input_shape``, ``mean`` and ``std`` that is unset (``null``, the
  networks' default) is filled from the DataModule before anything is built
  (:func:`fill_network_arguments`); a value written in YAML or on the command line wins. The filled
  values are in the saved ``config.yaml`` and in the checkpoint's hyperparameters, so
  ``Defense.load_from_checkpoint(path)`` rebuilds the same network.
* ``robustness:`` configures the :class:`RobustnessEvaluation` callback and ``checkpoint:`` the
  :class:`ModelCheckpoint` (best ``val/worst_case_acc``); both are always present, so config
  groups compose without overwriting each other's callback lists.
* Defaults: TensorBoard logger under ``runs/``, ``inference_mode: false`` (attacks need grad),
  fp32, seed 0.
* ``fit`` with ``test_after_fit: true`` tests the best checkpoint, then prints the results with the
  paths of the logs and the checkpoint.
* Resuming is one command: ``lit-robust fit --config <run>/config.yaml --ckpt_path last`` finds the
  newest ``<save_dir>/<name>/version_*/checkpoints/last.ckpt`` of the configured logger and goes on
  in that same folder (logs, checkpoints, report); a ``--ckpt_path`` inside such a folder does too.
  ``last.ckpt`` always holds the last completed epoch (:class:`RunCheckpoint`). Nothing to resume
  is an error, never a silent fresh start.
* A run that fails or is terminated exits non-zero (SIGTERM: 143) and says so; its log folder gets
  a report that says it did not complete, or is removed when the run made it and nothing was trained
  or measured in it. A value the project refuses is one line naming its config key (exit code 2;
  ``LIT_ROBUST_DEBUG=1`` shows the traceback). Checkpoints are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import importlib
import pickle
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_robust.callbacks.checkpoint import RunCheckpoint
from lit_robust.callbacks.robustness_evaluation import RobustnessEvaluation
from lit_robust.cli_errors import DEBUG_VARIABLE, debugging, one_line, remember_config_key
from lit_robust.cli_parser import BriefArgumentParser
from lit_robust.data.base import ImageDataModule
from lit_robust.defenses.base import RobustClassifier
from lit_robust.leaderboard import main as compare_runs
from lit_robust.loading import refusal
from lit_robust.metrics import ACC, ROBUST_ACC, SUBSET_ACC, WORST_CASE_ACC, metric, per_attack
from lit_robust.report import (
    training_settings,
    worst_case_rows,
    worst_cases,
    write_incomplete_report,
    write_report,
)
from lit_robust.tensorboard import disable_hp_metric, write_run_summary

# The model arguments that hold the network, and the network arguments the data fixes: each one a network
# has and leaves unset (None) is filled from the data.
NETWORK_SLOTS = ("network",)
DATA_FACTS = ("num_classes", "in_channels", "input_size", "input_shape", "mean", "std")

SIGTERM_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process killed by it
USAGE_EXIT_CODE = 2  # a mistake in the command or config, as argparse exits

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
        self._resumed_version = None  # the logger's init_args whose version a resume set
        self._new_folder: Path | None = None  # the outermost folder of the log dir this run made
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("parser_class", BriefArgumentParser)
        kwargs.setdefault("parser_kwargs", {"prog": "lit-robust"})  # the name in messages, however started
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
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        # The monitored robust accuracy exists only on the epochs the callback evaluates.
        parser.link_arguments("robustness.every_n_epochs", "checkpoint.every_n_epochs")
        parser.set_defaults(
            {
                "checkpoint.monitor": metric("val", WORST_CASE_ACC),
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

    def instantiate_classes(self) -> None:
        """Lightning's, once the network's unset arguments are filled from the data
        (:func:`fill_network_arguments`). A class that refuses its arguments gets its config key
        attached to the error, for :func:`main`'s one-line message."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        fill_network_arguments(config)
        try:
            super().instantiate_classes()
        except Exception as error:
            remember_config_key(error, config.as_dict())
            raise

    # ------------------------------------------------------------------------------- resuming
    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path last``; then Lightning's own step (it merges the checkpoint's
        hyperparameters into the config), with a clear error for a file that needs code to load."""
        config = self.config.get(self.config.get("subcommand") or "", None)
        if config is None or not config.get("ckpt_path"):
            return
        if config["ckpt_path"] == "last":
            config["ckpt_path"] = str(latest_last_checkpoint(logger_folder(config)))
        if not Path(config["ckpt_path"]).is_file():
            raise FileNotFoundError(
                f"--ckpt_path: no checkpoint at {config['ckpt_path']!r} (a --config file's 'ckpt_path:' "
                "counts too, e.g. a resumed fit's config.yaml; --ckpt_path=null scores init_from instead)"
            )
        try:
            super()._parse_ckpt_path()
        except pickle.UnpicklingError as error:
            raise refusal(config["ckpt_path"], "checkpoint", error) from None

    def before_instantiate_classes(self) -> None:
        """``fit`` from a checkpoint inside a run folder of the configured logger goes on in it."""
        config = self.config.get(self.subcommand or "", None)
        if self.subcommand != "fit" or not config.get("ckpt_path"):
            return
        folder, logger = logger_folder(config), config["trainer"]["logger"]
        run = Path(config["ckpt_path"]).resolve().parent.parent
        if folder is not None and run.parent == folder.resolve() and logger.init_args.get("version") is None:
            logger.init_args.version = run.name
            self._resumed_version = logger.init_args

    def after_instantiate_classes(self) -> None:
        """The logger now writes into the resumed folder; the config saved there keeps ``version``
        unset, so reusing it for a new run (``--config <run>/config.yaml``) starts a new folder."""
        super().after_instantiate_classes()
        if self._resumed_version is not None:
            self._resumed_version.version = None

    # --------------------------------------------------------------------- running and failing
    def _run_subcommand(self, subcommand: str) -> None:
        """Lightning's, plus: a failed or terminated run says so, on the terminal and in its report,
        and exits non-zero (Lightning's ``SIGTERMException`` would exit with 0)."""
        try:
            super()._run_subcommand(subcommand)
        except SIGTERMException:
            self._stopped(subcommand, "terminated by SIGTERM")
            raise SystemExit(SIGTERM_EXIT_CODE) from None
        except Exception as error:
            status = f"failed with {type(error).__name__}: {str(error).splitlines()[0]}"
            below = one_line(error) is not None and not debugging()  # main prints it as one line
            self._stopped(subcommand, status, shown="failed (the error is below)" if below else status)
            raise

    def _stopped(self, subcommand: str, status: str, shown: str | None = None) -> None:
        """Say on the terminal (``shown``, default ``status``) and in the report (``status``) that
        the run did not complete; remove its folder when it left nothing (:meth:`_left_nothing`)."""
        trainer = self.trainer
        where = f" at epoch {trainer.current_epoch}, step {trainer.global_step}"
        where = where if subcommand == "fit" else ""
        lines = [f"lit-robust {subcommand}: {shown or status}{where}; the run did not complete."]
        log_dir = trainer.log_dir
        if self._left_nothing(log_dir) and trainer.is_global_zero:
            shutil.rmtree(self._new_folder)
            lines.append(f"Nothing was trained or measured, so the folder it made ({log_dir}) was removed.")
        elif log_dir and Path(log_dir).is_dir() and trainer.is_global_zero:
            checkpoint = self.config[subcommand].get("ckpt_path")
            write_incomplete_report(log_dir, subcommand, status + where, checkpoint)
            lines.append(f"Its report ({log_dir}/report.md) says so and holds no results.")
            last = Path(log_dir) / "checkpoints" / "last.ckpt"
            if subcommand == "fit" and last.is_file():
                lines.append(f"The last completed epoch is in {last}; resume with")
                lines.append(f"  lit-robust fit --config {log_dir}/config.yaml --ckpt_path last")
        print("\n".join(lines), file=sys.stderr)

    # ------------------------------------------------------------------------------ TensorBoard
    def before_fit(self) -> None:
        self._summarize_run()

    def before_validate(self) -> None:
        self._summarize_run()

    def before_test(self) -> None:
        self._summarize_run()

    def _left_nothing(self, log_dir: str | None) -> bool:
        """Whether a failed run's folder is its own (made by this run) and holds nothing worth
        keeping: no checkpoint, and no metric was logged (it failed before training or evaluating
        anything, e.g. in its data's setup)."""
        if self._new_folder is None or not log_dir or not Path(log_dir).is_dir():
            return False
        return not self.trainer.callback_metrics and not any(Path(log_dir).rglob("*.ckpt"))

    def _summarize_run(self) -> None:
        """No ``hp_metric`` placeholder; the run's hyperparameters against its robust accuracy and one
        chart of every accuracy in TensorBoard (:mod:`lit_robust.tensorboard`). Notes first whether
        the run's log folder is new (a failure before anything ran removes it)."""
        log_dir = self.trainer.log_dir
        self._new_folder = first_new_folder(Path(log_dir)) if log_dir else None
        disable_hp_metric(self.trainer.logger)
        if self.trainer.is_global_zero:
            write_run_summary(self.trainer.logger, training_settings(self.model))

    # ---------------------------------------------------------------------------- the results
    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit"):
            print(fit_summary(self.trainer))
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        self._report(best, "fit")

    def after_test(self) -> None:
        self._report(self.config[self.subcommand].get("ckpt_path"), "test")

    def _report(self, checkpoint: str | None, command: str) -> None:
        """Print the summary table; write report.json and report.md next to the logs."""
        log_dir = self.trainer.log_dir
        lines = [format_summary(self.trainer.callback_metrics, log_dir, checkpoint or "")]
        if log_dir and self.trainer.is_global_zero:
            seed = self.config[self.subcommand].get("seed_everything")
            json_path, markdown_path = write_report(self.trainer, checkpoint, log_dir, seed, command)
            lines.append(f"Report:           {markdown_path} and {json_path.name}")
        print("\n".join(lines))


def data_facts(datamodule: Any) -> dict[str, Any]:
    """The network arguments a DataModule fixes, from its ``num_classes``, ``input_shape`` ``(C, H, W)``,
    ``mean`` and ``std`` (pixel units): ``num_classes``, ``in_channels`` (C), ``input_size`` (H, for
    square images only), ``input_shape`` and per-channel ``mean`` / ``std`` lists. A fact the
    DataModule does not have is left out."""
    facts: dict[str, Any] = {}
    if getattr(datamodule, "num_classes", None) is not None:
        facts["num_classes"] = int(datamodule.num_classes)
    for name in ("mean", "std"):
        value = getattr(datamodule, name, None)
        if value is not None:
            facts[name] = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    shape = getattr(datamodule, "input_shape", None)
    if shape is not None:
        channels, height, width = (int(size) for size in shape)
        facts.update(in_channels=channels, input_shape=[channels, height, width])
        if height == width:  # a non-square image leaves input_size unset: the network then says what it takes
            facts["input_size"] = height
    return facts


def build_datamodule(data: Namespace) -> Any:
    """The DataModule a parsed ``data:`` config (``class_path``, ``init_args``) describes.

    :func:`fill_network_arguments` builds one to read its facts, before the CLI builds its own: the
    lit_robust DataModules load nothing in ``__init__`` (``ImageNetDataModule`` counts its class folders).
    """
    module_name, _, class_name = data["class_path"].rpartition(".")
    data_class = getattr(importlib.import_module(module_name), class_name)
    init_args = data.get("init_args")
    kwargs = init_args.as_dict() if isinstance(init_args, Namespace) else dict(init_args or {})
    return data_class(**kwargs, **dict(data.get("dict_kwargs") or {}))


def fill_network_arguments(config: Namespace) -> dict[str, Any]:
    """Fill the network's unset arguments from the data, in the parsed ``config``, in place.

    For the network of the model (``model.init_args.network``), every argument in :data:`DATA_FACTS`
    that the network has and that is ``None`` gets the DataModule's value (:func:`data_facts`); values
    given in YAML or on the command line are kept. This runs before the model is built, so the saved
    ``config.yaml`` and the checkpoint's hyperparameters hold the values used. A network that still
    cannot take the data fails at setup, naming itself and the data's shape.

    Returns:
        ``{"network.in_channels": 3, ...}``: what was filled (empty when nothing was unset).
    """
    model, data = config.get("model"), config.get("data")
    model_args = getattr(model, "init_args", None)
    if not isinstance(model_args, Namespace) or not isinstance(data, Namespace) or "class_path" not in data:
        return {}
    facts: dict[str, Any] | None = None
    filled: dict[str, Any] = {}
    for slot in NETWORK_SLOTS:
        network = model_args.get(slot)
        network_args = network.get("init_args") if isinstance(network, Namespace) else None
        if not isinstance(network_args, Namespace):
            continue
        unset = [key for key in DATA_FACTS if key in network_args and network_args[key] is None]
        if unset and facts is None:
            facts = data_facts(build_datamodule(data))
        for key in unset:
            if key in facts:
                network_args[key] = facts[key]
                filled[f"{slot}.{key}"] = facts[key]
    return filled


def first_new_folder(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist yet (what making ``path``
    creates), or None when ``path`` exists."""
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def logger_folder(config: Any) -> Path | None:
    """``<save_dir>/<name>`` of the configured logger (the folder holding ``version_*``), or ``None``
    when the logger has no such folder (no logger, or one without ``save_dir``)."""
    logger = config["trainer"].get("logger")
    init_args = getattr(logger, "init_args", None)
    if init_args is None or init_args.get("save_dir") is None:
        return None
    return Path(init_args["save_dir"]) / (init_args.get("name") or "")


def latest_last_checkpoint(folder: Path | None) -> Path:
    """``<folder>/version_<N>/checkpoints/last.ckpt`` of the highest ``N`` that has one.

    Raises:
        FileNotFoundError: there is none (nothing to resume), saying where it looked.
    """
    if folder is None:
        raise FileNotFoundError(
            "--ckpt_path last looks for <save_dir>/<name>/version_*/checkpoints/last.ckpt of the "
            "configured logger, and this config has no logger with a save_dir: give the checkpoint's path"
        )
    found = [
        (int(match.group(1)), path)
        for path in folder.glob("version_*/checkpoints/last.ckpt")
        if (match := re.fullmatch(r"version_(\d+)", path.parent.parent.name))
    ]
    if not found:
        raise FileNotFoundError(
            f"--ckpt_path last: no run to resume, no {folder}/version_*/checkpoints/last.ckpt "
            f"(absolute: {folder.resolve()}); drop --ckpt_path to start a new run"
        )
    return max(found)[1]


def fit_summary(trainer: L.Trainer) -> str:
    """What ``fit`` without ``test_after_fit`` leaves: the last validation numbers, how far it
    trained, where the weights are, and the command that tests them."""
    log_dir = trainer.log_dir or "."
    last = Path(log_dir) / "checkpoints" / "last.ckpt"
    lines = results_table(trainer.callback_metrics, "val", "Last validation")
    lines += ["", f"lit-robust fit: trained {trainer.current_epoch} epoch(s), {trainer.global_step} steps."]
    if last.is_file():
        lines.append(f"Last checkpoint:  {last}")
        lines.append(f"Test it:          lit-robust test --config {log_dir}/config.yaml --ckpt_path {last}")
    lines.append(f"TensorBoard logs: {log_dir}   (tensorboard --logdir {log_dir})")
    return "\n".join(lines)


def results_table(metrics: Mapping[str, object], stage: str, title: str) -> list[str]:
    """The ``stage``'s clean, robust and worst-case accuracies in ``metrics`` as a small table
    (no lines when there are none)."""
    split = {"test": "test split", "val": "validation split"}[stage]
    rows = [(f"clean accuracy ({split})", metrics.get(metric(stage, ACC)))]
    rows.append(("clean accuracy (attacked subset)", metrics.get(metric(stage, SUBSET_ACC))))
    for attack, value in sorted(per_attack(metrics, stage, ROBUST_ACC).items()):
        rows.append((f"robust accuracy, {attack}", value))
    worst = worst_case_rows(worst_cases(metrics, stage))
    rows += [(label.replace("`", ""), value) for label, value in worst]
    rows = [(label, value) for label, value in rows if value is not None]
    if not rows:
        return []
    width = max(len(label) for label, _ in rows)
    lines = ["", title, "-" * (width + 10)]
    lines += [f"{label:<{width}}  {float(value):7.2%}" for label, value in rows]
    return [*lines, "-" * (width + 10)]


def format_summary(metrics: Mapping[str, object], log_dir: str | None = None, checkpoint: str = "") -> str:
    """A small table of the test metrics, then where the TensorBoard logs and the checkpoint are."""
    lines = results_table(metrics, "test", "Results")
    if log_dir:
        lines.append(f"TensorBoard logs: {log_dir}   (tensorboard --logdir {log_dir})")
    if checkpoint:
        lines.append(f"Checkpoint:       {checkpoint}")
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lit-robust`` console script; ``args`` defaults to ``sys.argv[1:]``.
    ``lit-robust compare RUN...`` compares finished runs (:mod:`lit_robust.leaderboard`); every other
    subcommand is Lightning's (``fit``, ``validate``, ``test``, ``predict``). A value the project
    refuses ends in one line naming its config key and exit code 2 (:mod:`lit_robust.cli_errors`)."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["compare"]:
        raise SystemExit(compare_runs(argv[1:]))
    try:
        LitRobustCLI(args=args)
    except Exception as error:
        line = None if debugging() else one_line(error)
        if line is None:  # not a refused value: a bug's traceback stays whole
            raise
        print(f"lit-robust: error: {line}\n(set {DEBUG_VARIABLE}=1 for the traceback)", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None


if __name__ == "__main__":
    main()
