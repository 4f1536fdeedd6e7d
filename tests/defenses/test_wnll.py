"""The WNLL defense (``lit_robust.defenses.wnll``): the stage schedule and what each stage may change (and its
state across a resume), the straight-through stage-B gradient, the template bank, chunked transductive
inference, the attackable gradient views, checkpoint round trips, the CLI, and, end to end on the MNIST
sample, WNLL vs softmax accuracy and the adaptive suite."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from lit_robust.attacks.apgd import APGDCE
from lit_robust.attacks.base import Attack, ThreatModel
from lit_robust.attacks.grad_mode import WithGradMode
from lit_robust.attacks.square import Square
from lit_robust.callbacks.robustness_evaluation import robust_flags
from lit_robust.cli import main
from lit_robust.data import MNISTSampleDataModule
from lit_robust.data.base import ImageDataModule, TransformedSubset
from lit_robust.defenses.wnll import WNLL, WNLLClassifier
from lit_robust.functional.wnll import wnll_scores
from lit_robust.models import Normalize, ResNet20, TemplateBank, WNLLNetwork
from lit_robust.models.small_cnn import SmallCNN
from tests.helpers import CONFIGS, NUM_CLASSES, quick_trainer, tiny_data

FEATURES = 16


def tiny_backbone(seed: int = 0) -> nn.Module:
    """Conv + BatchNorm + Linear to 16 features (BatchNorm: frozen parts must keep their statistics)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize(0.5, 0.3), nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 6 * 6, FEATURES),
    )  # fmt: skip


def tiny_network(seed: int = 0) -> WNLLNetwork:
    """The tiny backbone + one buffer block + head, all initialized from ``seed``."""
    return WNLLNetwork(tiny_backbone(seed), FEATURES, NUM_CLASSES)


def tiny_wnll(seed: int = 0, **overrides) -> WNLL:
    kwargs = dict(
        num_classes=NUM_CLASSES, k=5, k_sigma=3, num_templates=32, stage_b_templates=16,
        template_chunks=2, val_template_chunks=None, query_batch_size=16,
    )  # fmt: skip
    kwargs.update(overrides)
    return WNLL(tiny_network(seed), **kwargs)


# ---------------------------------------------------------------------------------- schedule
def test_stage_schedule_alternates_at_epoch_boundaries():
    schedule = tiny_wnll(stage_a_epochs=2, stage_b_epochs=1, cycles=2).schedule
    assert [schedule.stage_at(e) for e in range(8)] == ["softmax"] * 2 + ["wnll"] + ["softmax"] * 2 + [
        "wnll"
    ] * 3
    assert [schedule.round_at(e) for e in range(8)] == [1, 1, 1, 2, 2, 2, 2, 2]
    assert {tiny_wnll(stage_a_epochs=0).schedule.stage_at(e) for e in range(3)} == {"wnll"}
    assert {tiny_wnll(stage_b_epochs=0).schedule.stage_at(e) for e in range(3)} == {"softmax"}


@pytest.mark.parametrize(
    "overrides",
    [
        dict(stage_a_epochs=0, stage_b_epochs=0), dict(cycles=0), dict(k_sigma=1), dict(loss_rows="some"),
        dict(grad_mode="numeric"), dict(val_template_chunks=3), dict(solve_dtype="float16"), dict(mu=-1.0),
        dict(feature_dim=FEATURES + 1),  # disagrees with the WNLLNetwork's
    ],
)  # fmt: skip
def test_bad_arguments_are_clear_errors(overrides):
    with pytest.raises(ValueError):
        tiny_wnll(**overrides)


# ------------------------------------------------------------------------------------ stages
def test_stage_b_changes_only_the_buffer_block(tmp_path):
    """A stage-B epoch with SGD (momentum, weight decay) leaves backbone, head and BatchNorm statistics."""
    model = tiny_wnll(
        stage_a_epochs=0, stage_b_epochs=1,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4),
    )  # fmt: skip
    before = {key: value.clone() for key, value in model.state_dict().items()}
    quick_trainer(tmp_path, limit_train_batches=3).fit(model, tiny_data())
    changed = {key for key, value in model.state_dict().items() if not torch.equal(value, before[key])}
    assert changed and all(key.startswith("network.buffer.") for key in changed), changed
    assert {"network.buffer.0.weight", "network.buffer.0.bias"} <= changed
    assert all(p.requires_grad for p in model.parameters())  # restored after fit


def test_stage_a_trains_everything_and_attacks_the_softmax_network(tmp_path):
    seen: list[nn.Module] = []

    class Recorder(Attack):
        threat_model = ThreatModel.LINF
        short_name = "recorder"

        def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
            seen.append(model)
            return x + self.eps * torch.randn_like(x).sign()

    model = tiny_wnll(adversary=Recorder(eps=0.1), stage_b_epochs=0)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    quick_trainer(tmp_path).fit(model, tiny_data())
    assert seen and all(m is model.network for m in seen)
    changed = {key for key, value in model.state_dict().items() if not torch.equal(value, before[key])}
    assert any(key.startswith("network.backbone.") for key in changed)
    assert any(key.startswith("network.head.") for key in changed)


def test_stage_b_learning_rate_per_round_and_restored_for_stage_a(tmp_path):
    seen: list[float] = []

    class LearningRates(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    model = tiny_wnll(cycles=2, stage_b_lr=0.05, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    quick_trainer(tmp_path, max_epochs=4, limit_val_batches=0, callbacks=[LearningRates()]).fit(
        model, tiny_data()
    )
    assert seen == pytest.approx([0.1, 0.05, 0.1, 0.025])


class EpochLearningRates(L.Callback):
    """The first parameter group's learning rate at each epoch's first training batch."""

    def __init__(self):
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_resuming_inside_stage_b_keeps_stage_b_rates_and_restores_stage_a_rates(tmp_path):
    """Rounds of 1 stage-A and 2 stage-B epochs; a run stopped after the first stage-B epoch and resumed from
    its checkpoint sees the rates the uninterrupted run saw (stage B at 0.05, then stage A back at 0.1)."""

    def run(max_epochs: int, folder: str, ckpt_path: str | None = None) -> tuple[list[float], L.Trainer]:
        rates = EpochLearningRates()
        model = tiny_wnll(
            stage_a_epochs=1, stage_b_epochs=2, cycles=2, stage_b_lr=0.05,
            optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        )  # fmt: skip
        trainer = quick_trainer(
            tmp_path / folder, max_epochs=max_epochs, limit_val_batches=0, limit_train_batches=2,
            callbacks=[rates], enable_checkpointing=True,
        )  # fmt: skip
        trainer.fit(model, tiny_data(), ckpt_path=ckpt_path)
        return rates.seen, trainer

    straight, _ = run(5, "straight")
    assert straight == pytest.approx([0.1, 0.05, 0.05, 0.1, 0.025])
    first, trainer = run(2, "interrupted")
    assert first == pytest.approx(straight[:2])
    checkpoint = trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path
    assert torch.load(checkpoint, weights_only=True)["wnll_schedule"] == {"stage_a_lrs": [0.1]}
    resumed, _ = run(5, "resumed", ckpt_path=checkpoint)
    assert resumed == pytest.approx(straight[2:])


def test_stage_b_loss_is_the_straight_through_wnll_cross_entropy():
    """Value: CE of the WNLL scores used as logits; gradient: that of ``Σ_i (softmax(s_i) - e_y)·z_i / n``
    (the linear head's); nothing reaches the backbone or the head."""
    data = tiny_data()
    x, y = data.train_set.tensors
    templates, queries = (x[:24], y[:24]), (x[24:40], y[24:40])
    model = tiny_wnll()
    model.set_stage("wnll")
    terms = model.wnll_stage_loss(*queries, templates=templates)
    terms["loss"].backward()
    for module in (model.network.backbone, model.network.head):
        assert all(p.grad is None for p in module.parameters())
    got = [p.grad.clone() for p in model.network.buffer.parameters()]
    model.zero_grad()

    net = model.network
    with torch.no_grad():
        h_t = net.features(templates[0])
    h = net.features(queries[0])
    scores = wnll_scores(torch.cat([h_t, h.detach()]), templates[1], NUM_CLASSES, k=5, k_sigma=3).scores
    assert torch.allclose(terms["loss"], F.cross_entropy(scores, queries[1]), atol=1e-6)
    coefficient = (F.softmax(scores, dim=1) - F.one_hot(queries[1], NUM_CLASSES)) / len(h)
    (net.head(h) * coefficient).sum().backward()
    for mine, reference in zip(got, net.buffer.parameters(), strict=True):
        assert torch.allclose(mine, reference.grad, atol=1e-6)
    assert terms["wnll_acc"] == (scores.argmax(dim=1) == queries[1]).float().mean()


def test_stage_b_misclassified_rows_only():
    data = tiny_data()
    x, y = data.train_set.tensors
    model = tiny_wnll(loss_rows="misclassified")
    model.set_stage("wnll")
    terms = model.wnll_stage_loss(x[24:40], y[24:40], templates=(x[:24], y[:24]))
    assert torch.isfinite(terms["loss"])


# --------------------------------------------------------------------------------- inference
def test_chunked_inference_averages_the_chunk_scores():
    data = tiny_data()
    x, y = data.train_set.tensors
    model = tiny_wnll(template_chunks=3).eval()
    model.set_templates(x[:30], y[:30])
    queries = data.test_set.tensors[0][:20]  # two graphs of 16 and 4 queries
    with torch.no_grad():
        logits = model(queries)
        h_t, h_q = model.network.features(x[:30]), model.network.features(queries)
        expected = []
        for graph in h_q.split(16):
            total = sum(
                wnll_scores(
                    torch.cat([h_t[i : i + 10], graph]), y[i : i + 10], NUM_CLASSES, k=5, k_sigma=3
                ).scores
                for i in (0, 10, 20)
            )
            expected.append((total / 3).log())
    assert torch.allclose(logits, torch.cat(expected), atol=1e-5)


def test_gradient_views_surrogate_exact_and_softmax():
    data = tiny_data()
    x, y = data.train_set.tensors
    model = tiny_wnll().eval()
    model.set_templates(x[:32], y[:32])
    queries = data.test_set.tensors[0][:8].clone().requires_grad_(True)
    weights = torch.randn(8, NUM_CLASSES)
    surrogate = model.gradient_view("surrogate")
    assert isinstance(surrogate, WNLLClassifier) and model.gradient_view("softmax") is model.network
    (grad_surrogate,) = torch.autograd.grad((surrogate(queries) * weights).sum(), queries)
    (grad_head,) = torch.autograd.grad((model.network(queries) * weights).sum(), queries)
    assert torch.allclose(grad_surrogate, grad_head)
    exact = model.gradient_view("exact")
    assert torch.allclose(exact(queries), surrogate(queries), atol=1e-6)  # same value, other gradient
    (grad_exact,) = torch.autograd.grad((exact(queries) * weights).sum(), queries)
    assert torch.isfinite(grad_exact).all() and not torch.allclose(grad_exact, grad_head)


def test_with_grad_mode_names_and_errors():
    inner = APGDCE(eps=8 / 255, steps=2)
    assert WithGradMode(inner, "surrogate").name == "apgd_ce_linf_8_255_surrogate"
    assert WithGradMode(inner, "exact").name == "apgd_ce_linf_8_255_exact"
    assert WithGradMode(inner, "softmax").name == "apgd_ce_linf_8_255_transfer"
    with pytest.raises(ValueError, match="grad_mode"):
        WithGradMode(inner, "numeric")
    with pytest.raises(TypeError, match="gradient_view"):
        WithGradMode(inner, "exact")(nn.Linear(3, 2), torch.rand(2, 3), torch.zeros(2, dtype=torch.long))


class Flip(nn.Module):
    """A deterministic stand-in for an input transform: mirror the image."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flip(-1)


def test_input_transform_acts_on_the_queries_only():
    data = tiny_data()
    x, y = data.train_set.tensors
    queries = data.test_set.tensors[0][:8]
    plain, flipped = tiny_wnll().eval(), tiny_wnll(input_transform=Flip()).eval()  # same weights
    for model in (plain, flipped):
        model.set_templates(x[:32], y[:32])
    with torch.no_grad():
        assert torch.allclose(flipped(queries), plain(queries.flip(-1)), atol=1e-6)
        assert torch.allclose(flipped.gradient_view("softmax")(queries), plain.network(queries.flip(-1)))


def test_tvm_in_front_attacked_with_bpda_and_eot():
    from lit_robust.models.transforms import TotalVariationMinimization

    data = tiny_data()
    x, y = data.train_set.tensors
    model = tiny_wnll(input_transform=TotalVariationMinimization(iterations=5, seed=0)).eval()
    model.set_templates(x[:32], y[:32])
    queries, labels = (t[:8] for t in data.test_set.tensors)
    attack = WithGradMode(APGDCE(eps=0.1, steps=2), "surrogate", eot_samples=2, name="apgd_surrogate_tvm")
    x_adv = attack(model, queries, labels)
    assert attack.name == "apgd_surrogate_tvm" and x_adv.shape == queries.shape
    assert (x_adv - queries).abs().max() <= 0.1 + 1e-6 and not torch.equal(x_adv, queries)


def test_checkpoint_round_trip_predicts_identically(tmp_path):
    data = tiny_data()
    model = tiny_wnll(template_seed=3)
    trainer = quick_trainer(tmp_path, max_epochs=2, enable_checkpointing=True)
    trainer.fit(model, data)
    path = trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    queries = data.test_set.tensors[0]
    model.eval()
    with torch.no_grad():
        expected = model(queries)
    restored = WNLL.load_from_checkpoint(path, network=tiny_network(seed=9))
    assert restored.template_seed == 3 and restored.num_templates == 32 and restored.wnll_head.graph["k"] == 5
    restored.load_templates(data)  # the same templates, re-drawn from the seed
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(queries), expected)
    predicted = torch.cat(quick_trainer(tmp_path).predict(restored, data.test_dataloader()))
    assert torch.equal(predicted, expected.argmax(dim=1))


def test_template_bank_is_seeded_and_reads_items_under_its_own_seed():
    images, labels = torch.rand(40, 1, 12, 12), torch.arange(40) % NUM_CLASSES
    noisy = TransformedSubset(
        TensorDataset(images, labels), range(40), lambda image: image + torch.rand_like(image)
    )
    first, second = TemplateBank(noisy, 12, seed=5), TemplateBank(noisy, 12, seed=5)
    chosen = torch.randperm(40, generator=torch.Generator().manual_seed(5))[:12]
    assert torch.equal(first.labels, labels[chosen]) and torch.equal(second.images, first.images)
    assert not torch.equal(TemplateBank(noisy, 12, seed=6).labels, first.labels)
    state = torch.random.get_rng_state()
    TemplateBank(noisy, 12, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream is untouched
    assert len(TemplateBank(noisy, 100, seed=0)) == 40  # capped at the dataset
    draw = first.draw(5, step=7)
    assert torch.equal(draw[0], first.draw(5, step=7)[0]) and not torch.equal(
        draw[0], first.draw(5, step=8)[0]
    )


def test_templates_come_from_the_clean_train_split_of_the_datamodule():
    images, labels = torch.rand(40, 1, 12, 12), torch.arange(40) % NUM_CLASSES
    base = TensorDataset(images, labels)

    class Augmented(ImageDataModule):
        def setup(self, stage: str | None = None) -> None:
            self.train_set = TransformedSubset(base, range(30), lambda image: image + torch.rand_like(image))
            self.val_set = TransformedSubset(base, range(30, 40), lambda image: image)

    model = tiny_wnll(num_templates=12)
    model.load_templates(Augmented())  # set up on demand
    chosen = torch.randperm(30, generator=torch.Generator().manual_seed(0))[:12]
    assert torch.equal(model.templates.images, images[chosen])  # the validation transform: no augmentation
    assert torch.equal(model.templates.labels, labels[chosen])
    dataset_model = tiny_wnll(num_templates=12)
    dataset_model.load_templates(
        TransformedSubset(base, range(30), lambda image: image)
    )  # a Dataset works too
    assert torch.equal(dataset_model.templates.images, model.templates.images)


def test_evaluation_logs_the_wnll_forward_and_the_softmax_head(tmp_path):
    """``test/acc`` is the accuracy of ``forward`` (the WNLL head); ``test/acc_softmax`` the linear head's."""
    data = tiny_data()
    model = tiny_wnll(stage_b_epochs=0)
    trainer = quick_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, data)
    metrics = trainer.test(model, data, verbose=False)[0]
    x, y = data.test_set.tensors
    model.eval()
    with torch.no_grad():
        wnll = (model(x).argmax(dim=1) == y).float().mean().item()
        softmax = (model.network(x).argmax(dim=1) == y).float().mean().item()
    assert metrics["test/acc"] == pytest.approx(wnll) and metrics["test/acc_softmax"] == pytest.approx(
        softmax
    )
    assert 0 <= metrics["test/wnll_isolated"] <= 1


def test_the_network_is_a_wnll_network_or_a_backbone_wrapped_in_one():
    assert WNLLNetwork(SmallCNN()).feature_dim == 200 and WNLLNetwork(ResNet20()).feature_dim == 64
    assert WNLLNetwork(nn.Sequential(nn.Flatten(), nn.Linear(9, 7))).feature_dim == 7  # used whole
    with pytest.raises(ValueError, match="feature_dim"):
        WNLLNetwork(nn.Flatten())
    wrapped = WNLL(tiny_backbone(), num_classes=NUM_CLASSES)
    assert isinstance(wrapped.network, WNLLNetwork) and wrapped.network.feature_dim == FEATURES
    assert wrapped.network.head.out_features == NUM_CLASSES
    explicit = WNLL(tiny_backbone(), feature_dim=FEATURES, num_classes=NUM_CLASSES)
    assert explicit.network.state_dict().keys() == wrapped.network.state_dict().keys()
    flat = WNLL(nn.Flatten(), feature_dim=144, num_classes=NUM_CLASSES)  # no nn.Linear: feature_dim needed
    assert flat.network.feature_dim == 144 and flat.network.buffer[0].in_features == 144
    with pytest.raises(TypeError, match="backbone"):
        WNLL(backbone=tiny_backbone())  # the old spelling is gone


def test_predicting_without_templates_is_a_clear_error():
    with pytest.raises(RuntimeError, match="load_templates"):
        tiny_wnll().eval()(torch.rand(2, 1, 12, 12))


# ------------------------------------------------------------------------------- end to end
def test_cli_fit_of_the_mnist_sample_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit", "--config", str(CONFIGS / "experiments" / "mnist_sample_wnll_smallcnn.yaml"),
            "--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false",
            "--model.init_args.stage_a_epochs=1", "--model.init_args.num_templates=200",
            "--model.init_args.stage_b_templates=100", "--robustness.num_samples=8",
            "--robustness.every_n_epochs=1",
        ]
    )  # fmt: skip
    assert list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
def test_sample_wnll_matches_its_softmax_head_and_the_adaptive_suite_runs(tmp_path, all_cores):
    torch.manual_seed(0)
    data = MNISTSampleDataModule(batch_size=128)
    model = WNLL(
        SmallCNN(in_channels=1, input_size=28, mean=[0.1307], std=[0.3081]), feature_dim=200,
        stage_a_epochs=2, stage_b_epochs=1, stage_b_templates=500, stage_b_lr=1e-4, num_templates=1000,
        template_chunks=1, query_batch_size=1000, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
    )  # fmt: skip
    trainer = quick_trainer(tmp_path, max_epochs=3, limit_train_batches=None, limit_val_batches=0)
    trainer.fit(model, data)
    metrics = trainer.test(model, data, verbose=False)[0]
    print(f"test/acc {metrics['test/acc']:.4f} test/acc_softmax {metrics['test/acc_softmax']:.4f}")
    assert metrics["test/acc_softmax"] > 0.85
    assert metrics["test/acc"] >= metrics["test/acc_softmax"] - 0.03  # WNLL loses at most 3 points

    x, y = (t[:16] for t in data.test_set.tensors)
    attacks = [
        WithGradMode(APGDCE(eps=0.3, steps=5), "surrogate"),
        WithGradMode(APGDCE(eps=0.3, steps=5), "exact"),
        WithGradMode(APGDCE(eps=0.3, steps=5), "softmax"),
        Square(eps=0.3, n_queries=20),
    ]
    model.eval()
    flags = robust_flags(model, x, y, attacks)
    accuracies = {key: float(value.float().mean()) for key, value in flags.items()}
    print(accuracies)
    assert set(accuracies) == {"clean", "worst_case", *(attack.name for attack in attacks)}
    assert all(accuracies[key] <= accuracies["clean"] for key in accuracies)
    assert accuracies["worst_case"] < accuracies["clean"]  # eps 0.3 breaks a standard-trained net
