"""The evaluation's progress line: attack-samples counted per attack, the attack named, Lightning's
finished bar closed while attacks run, and nothing printed on other ranks than zero."""

from __future__ import annotations

import lightning as L
import pytest

from lit_robust.attacks import FGSM, PGD
from lit_robust.callbacks import RobustnessEvaluation
from lit_robust.callbacks.progress import EvaluationProgress
from lit_robust.defenses import StandardTraining
from tests.helpers import NUM_CLASSES, quick_trainer, tiny_cnn, tiny_data


def test_a_single_batch_of_several_attacks_advances_attack_by_attack():
    progress = EvaluationProgress("eval", num_samples=200, attacks_per_sample=4, enabled=True)
    progress.start_batch(0, 200)
    seen = []
    for name in ["a", "b", "c", "d"]:
        progress.start_attack(name)
        seen.append((progress.bar.n, progress.bar.postfix))
    progress.end_batch()
    assert seen == [
        (0, "attack 1/4: a"),
        (200, "attack 2/4: b"),
        (400, "attack 3/4: c"),
        (600, "attack 4/4: d"),
    ]
    assert progress.bar.n == progress.bar.total == 800
    progress.close()


def test_later_batches_count_the_attacks_of_earlier_ones():
    progress = EvaluationProgress("eval", num_samples=300, attacks_per_sample=2, enabled=True)
    progress.start_batch(0, 250)
    progress.end_batch()
    progress.start_batch(250, 50)
    progress.start_attack("a")
    progress.start_attack("b")
    assert progress.bar.n == 2 * 250 + 50
    progress.end_batch()
    assert progress.bar.n == 600
    progress.close()


class RecordLightningBar(RobustnessEvaluation):
    """Records whether Lightning's test bar was still open when the attacks ran."""

    def per_sample(self, model, x, y):
        self.lightning_bar_open = not self.trainer.progress_bar_callback.test_progress_bar.disable
        return super().per_sample(model, x, y)


def test_a_test_run_names_each_attack_and_closes_lightnings_finished_bar(tmp_path, capsys):
    callback = RecordLightningBar([FGSM(0.1), PGD(0.1, steps=2)], num_samples=8)
    model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
    trainer = quick_trainer(tmp_path, callbacks=[callback], inference_mode=False, enable_progress_bar=True)
    trainer.test(model, tiny_data(), verbose=False)
    err = capsys.readouterr().err
    assert "RecordLightningBar on 8 test samples" in err
    assert "attack 1/2: fgsm_linf_0.1" in err and "attack 2/2: pgd_linf_0.1" in err
    assert " 8/16 " in err  # the first attack's samples are done while the second runs
    assert callback.lightning_bar_open is False


def test_only_rank_zero_prints_the_progress_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(L.Trainer, "is_global_zero", property(lambda self: False))
    callback = RobustnessEvaluation([FGSM(0.1)], num_samples=8)
    model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
    trainer = quick_trainer(tmp_path, callbacks=[callback], inference_mode=False, enable_progress_bar=True)
    trainer.test(model, tiny_data(), verbose=False)
    assert "RobustnessEvaluation" not in capsys.readouterr().err


@pytest.mark.parametrize("named", [False, True])
def test_a_named_evaluation_says_which_it_is(tmp_path, capsys, named):
    callback = RobustnessEvaluation([FGSM(0.1)], num_samples=8, name="budgets" if named else None)
    model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
    trainer = quick_trainer(tmp_path, callbacks=[callback], inference_mode=False, enable_progress_bar=True)
    trainer.test(model, tiny_data(), verbose=False)
    assert ("RobustnessEvaluation 'budgets' on 8" in capsys.readouterr().err) is named
