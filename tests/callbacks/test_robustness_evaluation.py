"""RobustnessEvaluation: worst-case bookkeeping, seeded subsets, modes, and all three entry points."""

from __future__ import annotations

import time

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from lit_robust.attacks import FGSM, PGD, Attack, ThreatModel
from lit_robust.callbacks import RobustnessEvaluation, robust_flags, seeded_subset
from lit_robust.defenses import StandardTraining
from tests.helpers import NUM_CLASSES, quick_trainer, tiny_cnn, tiny_data


class PixelClassifier(nn.Module):
    """Predicts the class written in pixel (0, 0): ``round(10 * x[:, 0, 0, 0])``."""

    def forward(self, x: Tensor) -> Tensor:
        label = (x[:, 0, 0, 0] * 10).round().long().clamp(0, 9)
        return nn.functional.one_hot(label, 10).float() * 10 + 0 * x.flatten(1)[:, :1]


class BreakGroup(Attack):
    """Fools the pixel classifier on the samples whose marker pixel (0, 1) equals ``marker``."""

    threat_model = ThreatModel.UNBOUNDED
    short_name = "break"

    def __init__(self, marker: float, name: str):
        super().__init__(name=name)
        self.marker = marker
        self.calls: list[int] = []

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        self.calls.append(len(x))
        hit = (x[:, 0, 0, 1] - self.marker).abs() < 1e-6
        x = x.clone()
        x[hit, 0, 0, 0] = ((y[hit] + 1) % 10).float() / 10
        return x


def pixel_batch() -> tuple[Tensor, Tensor, Tensor]:
    """12 samples: 2 misclassified, markers A on 4 (1 of them misclassified), B on 4, none on 4."""
    y = torch.arange(12) % 10
    x = torch.zeros(12, 1, 2, 2)
    x[:, 0, 0, 0] = y.float() / 10
    wrong = torch.tensor([0, 11])
    x[wrong, 0, 0, 0] = ((y[wrong] + 3) % 10).float() / 10
    x[[0, 1, 2, 3], 0, 0, 1] = 0.25
    x[[4, 5, 6, 7], 0, 0, 1] = 0.75
    return x, y, wrong


def test_worst_case_is_clean_correct_minus_the_union_of_breaks():
    x, y, wrong = pixel_batch()
    attack_a, attack_b = BreakGroup(0.25, "a"), BreakGroup(0.75, "b")
    flags = robust_flags(PixelClassifier(), x, y, [attack_a, attack_b])
    clean = torch.ones(12, dtype=torch.bool)
    clean[wrong] = False
    assert torch.equal(flags["clean"], clean)
    expected_a = clean.clone()
    expected_a[[0, 1, 2, 3]] = False
    expected_b = clean.clone()
    expected_b[[4, 5, 6, 7]] = False
    assert torch.equal(flags["a"], expected_a)
    assert torch.equal(flags["b"], expected_b)
    assert torch.equal(flags["worst_case"], expected_a & expected_b)
    assert flags["worst_case"].sum() == 12 - 2 - 3 - 4
    assert attack_a.calls == [10] and attack_b.calls == [10]  # only clean-correct points are attacked


def test_ensemble_mode_attacks_only_the_points_still_robust():
    x, y, _ = pixel_batch()
    attack_a, attack_b = BreakGroup(0.25, "a"), BreakGroup(0.75, "b")
    individual = robust_flags(PixelClassifier(), x, y, [BreakGroup(0.25, "a"), BreakGroup(0.75, "b")])
    ensemble = robust_flags(PixelClassifier(), x, y, [attack_a, attack_b], individual=False)
    assert set(ensemble) == {"clean", "worst_case"}
    assert torch.equal(ensemble["worst_case"], individual["worst_case"])
    assert attack_a.calls == [10] and attack_b.calls == [7]  # B never sees what A already broke


def test_seeded_subset_is_deterministic_and_bounded():
    first = seeded_subset(100, 10, seed=3)
    assert torch.equal(first, seeded_subset(100, 10, seed=3))
    assert not torch.equal(first, seeded_subset(100, 10, seed=4))
    assert len(first.unique()) == 10 and first.max() < 100
    assert torch.equal(seeded_subset(5, 10, seed=0), torch.arange(5))


def trainer(tmp_path, callback, **kwargs) -> L.Trainer:
    settings = dict(
        limit_val_batches=1.0, enable_checkpointing=False, inference_mode=False, callbacks=[callback]
    )
    return quick_trainer(tmp_path, **{**settings, **kwargs})


ATTACKS = [FGSM(0.2), PGD(0.2, steps=3, random_start="none")]


def expected_metrics(model: nn.Module, dataset, stage: str, num_samples: int, seed: int) -> dict[str, float]:
    """What the callback must log, computed by hand on the same seeded subset."""
    x, y = dataset.tensors
    idx = seeded_subset(len(x), num_samples, seed)
    flags = robust_flags(model, x[idx], y[idx], ATTACKS)
    names = {"clean": "subset_acc", "worst_case": "worst_case_acc"}
    return {f"{stage}/{names.get(k, 'robust_acc/' + k)}": v.float().mean().item() for k, v in flags.items()}


@pytest.mark.parametrize("inference_mode", [False, True])
def test_validate_and_test_log_what_they_claim(tmp_path, trained_tiny, inference_mode):
    network, _, _ = trained_tiny
    model = StandardTraining(network=network, num_classes=NUM_CLASSES)
    datamodule = tiny_data()
    callback = RobustnessEvaluation(attacks=ATTACKS, num_samples=20, seed=5, batch_size=7)
    run = trainer(tmp_path, callback, inference_mode=inference_mode)
    for stage, dataset, entry in (
        ("val", datamodule.val_set, run.validate),
        ("test", datamodule.test_set, run.test),
    ):
        logged = entry(model, datamodule=datamodule, verbose=False)[0]
        for key, value in expected_metrics(network, dataset, stage, 20, 5).items():
            assert logged[key] == pytest.approx(value), key
        assert logged[f"{stage}/robust_acc/fgsm_linf_0.2"] < logged[f"{stage}/subset_acc"]  # an attack
        assert logged[f"{stage}/worst_case_acc"] <= min(
            logged[f"{stage}/robust_acc/{a.name}"] for a in ATTACKS
        )


def test_fit_logs_every_n_epochs_and_leaves_the_model_untouched(tmp_path):
    model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
    calls = []

    class Spy(RobustnessEvaluation):
        def evaluate(self, trainer, pl_module, stage, dataloaders):
            modes = {n: m.training for n, m in pl_module.named_modules()}
            state = {k: v.clone() for k, v in pl_module.state_dict().items()}
            rng = torch.get_rng_state()
            super().evaluate(trainer, pl_module, stage, dataloaders)
            assert {n: m.training for n, m in pl_module.named_modules()} == modes
            assert all(torch.equal(v, state[k]) for k, v in pl_module.state_dict().items())
            assert torch.equal(torch.get_rng_state(), rng)
            calls.append(trainer.current_epoch)

    callback = Spy(attacks=ATTACKS, num_samples=16, every_n_epochs=2)
    run = trainer(tmp_path, callback, max_epochs=3)
    run.fit(model, datamodule=tiny_data())
    assert calls == [1, 2]  # epochs 2 and 3 (the last), not during the sanity check
    assert {"val/worst_case_acc", "val/robust_acc/pgd_linf_0.2", "val/subset_acc"} <= set(
        run.callback_metrics
    )


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="distinct names"):
        RobustnessEvaluation(attacks=[FGSM(0.1), FGSM(0.1)])
    with pytest.raises(ValueError, match="num_samples"):
        RobustnessEvaluation(num_samples=0)
    with pytest.raises(ValueError, match="every_n_epochs"):
        RobustnessEvaluation(every_n_epochs=0)


def test_checkpoint_on_epochs_without_robust_accuracy_is_an_early_error(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    callback = RobustnessEvaluation(attacks=ATTACKS, num_samples=8, every_n_epochs=2)
    checkpoint = ModelCheckpoint(monitor="val/worst_case_acc", mode="max")
    run = trainer(tmp_path, callback, enable_checkpointing=True, callbacks=[callback, checkpoint])
    with pytest.raises(ValueError, match="every_n_epochs=2"):
        run.fit(StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES), datamodule=tiny_data())


def test_eps_sweep_is_logged_as_scalars_and_a_curve(tmp_path, trained_tiny):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    network, _, _ = trained_tiny
    sweep = [FGSM(eps) for eps in (0.05, 0.1, 0.3)]
    callback = RobustnessEvaluation(attacks=[*sweep, PGD(0.1, steps=2)], num_samples=16)
    logger = TensorBoardLogger(tmp_path, name="sweep")
    run = trainer(tmp_path, callback, logger=logger)
    logged = run.test(StandardTraining(network=network, num_classes=NUM_CLASSES), datamodule=tiny_data())[0]
    curve = [logged[f"test/robust_acc/{attack.name}"] for attack in sweep]
    assert curve == sorted(curve, reverse=True) and curve[0] > curve[-1]
    events = EventAccumulator(str(logger.log_dir))
    events.Reload()
    assert events.Tags()["images"] == ["test/robust_acc_vs_eps/fgsm_linf"]  # PGD has one eps: no curve


def test_a_named_evaluation_logs_its_own_subset_and_worst_case_beside_the_main_one(tmp_path):
    """Two evaluations of one run (the leaderboard's 500-digit headline and 200-digit budgets) must
    not overwrite each other's subset and worst-case accuracies; attack names stay their own."""
    main = RobustnessEvaluation([FGSM(0.1)], num_samples=32)
    budgets = RobustnessEvaluation([FGSM(0.3), PGD(0.3, steps=2)], num_samples=8, name="budgets")
    model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
    trainer = quick_trainer(tmp_path, callbacks=[main, budgets], inference_mode=False)
    trainer.test(model, datamodule=tiny_data(), verbose=False)
    logged = trainer.callback_metrics
    worst = {"test/worst_case_acc", "test/worst_case_acc/budgets"}
    assert worst | {"test/subset_acc", "test/subset_acc/budgets"} <= set(logged)
    # each worst case is over its own attacks on its own subset: at most its hardest attack's accuracy
    assert logged["test/worst_case_acc/budgets"] <= logged["test/robust_acc/pgd_linf_0.3"]
    assert logged["test/worst_case_acc"] == logged["test/robust_acc/fgsm_linf_0.1"]
    assert budgets.metric_names("val") == {
        "val/subset_acc/budgets", "val/worst_case_acc/budgets",
        "val/robust_acc/fgsm_linf_0.3", "val/robust_acc/pgd_linf_0.3",
    }  # fmt: skip


@pytest.mark.parametrize("name", ["", "a/b", 3])
def test_an_evaluation_name_must_be_a_plain_word(name):
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        RobustnessEvaluation([FGSM(0.1)], name=name)


def test_the_progress_line_names_each_attack_as_it_starts(tmp_path):
    callback = RobustnessEvaluation([FGSM(0.1), PGD(0.1, steps=2)], num_samples=8)
    shown = []
    callback.show_attack = lambda attack: shown.append(attack.name)
    model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
    quick_trainer(tmp_path, callbacks=[callback], inference_mode=False).test(
        model, tiny_data(), verbose=False
    )
    assert shown == ["fgsm_linf_0.1", "pgd_linf_0.1"]


class BoundedBreak(BreakGroup):
    """BreakGroup as an Linf attack of a given eps (the budget is all the test needs)."""

    threat_model = ThreatModel.LINF

    def __init__(self, marker: float, eps: float, name: str):
        Attack.__init__(self, eps=eps, name=name)
        self.marker = marker
        self.calls = []


def test_an_eps_sweep_logs_each_budgets_own_worst_case_beside_the_mixed_one():
    """With attacks at two budgets, the worst case over all of them is the larger budget's; each
    budget gets its own (robust to every attack of that budget)."""
    x, y, _ = pixel_batch()
    attacks = [
        BoundedBreak(0.25, 0.1, "a_0.1"),
        BoundedBreak(0.75, 0.1, "b_0.1"),
        BoundedBreak(0.25, 0.3, "a_0.3"),
    ]
    callback = RobustnessEvaluation(attacks)
    assert callback.budgets() == {"linf_0.1": ["a_0.1", "b_0.1"], "linf_0.3": ["a_0.3"]}
    flags = callback.per_sample(PixelClassifier(), x, y)
    metrics = callback.summarize("test", {key: value.float() for key, value in flags.items()})  # as gathered
    assert metrics["test/worst_case_acc_at/linf_0.1"] == (flags["a_0.1"] & flags["b_0.1"]).float().mean()
    assert metrics["test/worst_case_acc_at/linf_0.3"] == flags["a_0.3"].float().mean() == 7 / 12
    assert metrics["test/worst_case_acc"] == 3 / 12
    assert metrics["test/worst_case_acc_at/linf_0.1"] == 3 / 12


def test_one_budget_or_the_ensemble_has_no_per_budget_worst_case():
    assert RobustnessEvaluation([FGSM(0.1), PGD(0.1, steps=2)]).budgets() == {}
    assert RobustnessEvaluation([FGSM(0.1), PGD(0.3, steps=2)], individual=False).budgets() == {}
    named = RobustnessEvaluation([FGSM(0.1), PGD(0.3, steps=2)], name="sweep")
    assert named.metric_names("val") >= {
        "val/worst_case_acc_at/sweep/linf_0.1",
        "val/worst_case_acc_at/sweep/linf_0.3",
    }


class SlowIdentity(Attack):
    """Returns its input unchanged after ``seconds`` of sleep: an attack whose cost is known."""

    threat_model = ThreatModel.UNBOUNDED
    short_name = "slow"

    def __init__(self, seconds: float, name: str):
        super().__init__(name=name)
        self.seconds = seconds

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        time.sleep(self.seconds)
        return x


def test_each_attack_logs_the_seconds_it_ran_summed_over_batches(tmp_path, trained_tiny):
    network, _, _ = trained_tiny
    slow, quick = SlowIdentity(0.2, "slow"), SlowIdentity(0.0, "quick")
    evaluation = RobustnessEvaluation([slow, quick], num_samples=8, batch_size=4)  # two batches
    trainer = quick_trainer(tmp_path, callbacks=[evaluation], inference_mode=False)
    trainer.test(
        StandardTraining(network=network, num_classes=NUM_CLASSES), datamodule=tiny_data(), verbose=False
    )
    logged = trainer.callback_metrics
    assert logged["test/subset_acc"] > 0  # so at least one batch has a digit to attack
    slow_seconds, quick_seconds = (float(logged[f"test/attack_seconds/{a}"]) for a in ("slow", "quick"))
    assert slow_seconds >= 0.2 and quick_seconds >= 0  # one or both batches slept 0.2 s
    assert slow_seconds - quick_seconds >= 0.15  # the sleep is the slow attack's, not the next one's
    assert "test/attack_seconds/slow" not in evaluation.metric_names("test")  # not a monitorable accuracy
