"""GFA (Lin et al. 2025, arXiv 2511.13749) against the formulas of shared/papers/gfa.md, section (h)."""

from __future__ import annotations

import copy
import pickle
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.cli import main
from lit_robust.defenses.gfa import GFA
from lit_robust.functional.alignment import alignment_penalty, per_sample_cosine
from lit_robust.models import Normalize, SmallCNN
from lit_robust.models.taps import Taps
from tests.helpers import (
    NUM_CLASSES,
    assert_every_parameter_has_a_gradient,
    config_args,
    logged_scalars,
    tiny_cnn,
    tiny_data,
)


def hook_count(network: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in network.modules())


def small_net(bias: bool = True) -> nn.Sequential:
    """Conv/ReLU/MaxPool/Linear in float64, no BN, no dropout: per-sample computations are independent."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1, bias=bias), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 6, bias=bias), nn.ReLU(), nn.Linear(6, 3, bias=bias),
    ).double()  # fmt: skip


def _reference_cosines(network, x, y, input_center, task_loss="ce"):
    """Naive loop from the formula: one sample at a time, its own hooks, its own autograd.grad."""
    modules = [(n, m) for n, m in network.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    rows = []
    for b in range(len(x)):
        xb = x[b : b + 1].clone().requires_grad_(True)
        stored = []
        handles = [
            m.register_forward_pre_hook(lambda m, i, n=n, s=stored: s.append((n, i[0]))) for n, m in modules
        ]
        z = network(xb)
        for handle in handles:
            handle.remove()
        stored = [(n, h) for n, h in stored if h is not xb]
        if task_loss == "ce":
            loss = -torch.log_softmax(z, 1)[0, y[b]]
        else:
            loss = sum((torch.softmax(z, 1)[0, k] - float(k == y[b])) ** 2 for k in range(z.shape[1]))
        grads = torch.autograd.grad(loss, [xb] + [h for _, h in stored])
        feats = [xb - input_center] + [h for _, h in stored]
        row = {}
        for name, g, h in zip(["input"] + [n for n, _ in stored], grads, feats, strict=True):
            g, h = g.flatten(), h.flatten()
            row[name] = float((torch.dot(g, h) / (g.norm() * h.norm())).detach())
        rows.append(row)
    return {name: torch.tensor([row[name] for row in rows], dtype=torch.float64) for name in rows[0]}


# ---------------------------------------------------------------------------------- (h) 1: the math
def test_cosine_and_penalties_on_hand_made_vectors():
    h = torch.tensor([[1.0, 2.0, -1.0]]).repeat(3, 1).double()
    g = torch.stack([3 * h[0], -2 * h[0], torch.tensor([2.0, -1.0, 0.0]).double()])
    c = per_sample_cosine(g, h)
    torch.testing.assert_close(c, torch.tensor([1.0, -1.0, 0.0]).double())
    torch.testing.assert_close(alignment_penalty(c, "abs"), torch.tensor([0.0, 0.0, 1.0]).double())
    torch.testing.assert_close(alignment_penalty(c, "sq"), torch.tensor([0.0, 0.0, 1.0]).double())
    torch.testing.assert_close(alignment_penalty(c, "pos"), torch.tensor([0.0, 2.0, 1.0]).double())
    zero = per_sample_cosine(torch.zeros(2, 3), torch.ones(2, 3))
    assert torch.equal(zero, torch.zeros(2))
    with pytest.raises(ValueError, match="penalty"):
        alignment_penalty(c, "cubic")


@pytest.mark.parametrize("task_loss", ["ce", "mse"])
def test_deep_cosines_equal_a_naive_per_sample_loop(task_loss):
    network = small_net()
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))
    model = GFA(network, num_classes=3, task_loss=task_loss, input_center=0.5)
    _, _, cosines = model.alignment(x, y)
    reference = _reference_cosines(network, x, y, 0.5, task_loss)
    assert list(cosines) == ["input", "3", "6", "8"]  # DEEP: exactly the input + the non-input layers
    assert list(cosines) == list(reference)
    for name in reference:
        torch.testing.assert_close(cosines[name], reference[name], rtol=1e-10, atol=1e-12)


def test_named_taps_are_exactly_the_requested_modules():
    model = GFA(small_net(), taps=["6"], num_classes=3)
    _, _, cosines = model.alignment(torch.rand(2, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1]))
    assert list(cosines) == ["input", "6"]
    with pytest.raises(ValueError, match="no module named"):
        GFA(small_net(), taps=["nope"], num_classes=3)


# ------------------------------------------------------------------------- (h) 2: FIRST, linear model
@pytest.mark.parametrize("center", [0.0, 0.5])
def test_first_on_a_linear_softmax_model(center):
    torch.manual_seed(0)
    linear = nn.Linear(6, 4).double()
    network = nn.Sequential(nn.Flatten(), linear)
    x = torch.rand(5, 1, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    model = GFA(network, taps=GFA.FIRST, input_center=center, num_classes=4)
    _, _, cosines = model.alignment(x, y)
    assert list(cosines) == ["input"]  # FIRST taps only the input, although the network has a Linear
    z = linear(x.flatten(1))
    g = (torch.softmax(z, 1) - F.one_hot(y, 4).double()) @ linear.weight  # W^T (p - e_y)
    expected = F.cosine_similarity(g, x.flatten(1) - center, dim=1, eps=0)
    torch.testing.assert_close(cosines["input"], expected.detach(), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------- (h) 3: [-1, 1] equivalence
def test_paper_inputs_in_minus_one_one_give_the_same_alignment():
    net = small_net()
    model_a = GFA(nn.Sequential(Normalize(0.5, 0.5).double(), net), num_classes=3, input_center=0.5)
    model_b = GFA(net, num_classes=3, input_center=0.0)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    _, _, cos_a = model_a.alignment(x, y)
    _, _, cos_b = model_b.alignment(2 * x - 1, y)
    assert len(cos_a) == len(cos_b) == 4
    for c_a, c_b in zip(cos_a.values(), cos_b.values(), strict=True):
        torch.testing.assert_close(c_a, c_b, rtol=1e-10, atol=1e-12)
    reg_a, reg_b = model_a.compute_loss(x, y)["gfa_reg"], model_b.compute_loss(2 * x - 1, y)["gfa_reg"]
    torch.testing.assert_close(reg_a, reg_b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------ (h) 4: homogeneity (Euler)
def test_homogeneity_identity_in_a_bias_free_relu_network():
    network = small_net(bias=False)
    x = torch.rand(8, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (8,))
    with Taps(network).recording(x) as record:
        z = network(x)
    loss = F.cross_entropy(z, y, reduction="none")
    taps = {"input": x, **record.module_inputs()}
    grads = torch.autograd.grad(loss.sum(), list(taps.values()))
    p = torch.softmax(z, 1)
    euler = ((p - F.one_hot(y, 3).double()) * z).sum(1)  # sum_k dl/dz_k z_k
    torch.testing.assert_close(euler, (p * z).sum(1) - z.gather(1, y[:, None])[:, 0], rtol=0, atol=1e-10)
    cosines = []
    for g, h in zip(grads, taps.values(), strict=True):
        torch.testing.assert_close((g * h).flatten(1).sum(1), euler.detach(), rtol=0, atol=1e-10)
        cosines.append(per_sample_cosine(g, h))
    signs = torch.stack([c.sign() for c in cosines])
    assert (signs == signs[0]).all()  # every tap shares the sign
    correct = z.argmax(1) == y
    assert correct.any()
    assert (torch.stack(cosines)[:, correct] <= 0).all()


# ---------------------------------------------------------------------- (h) 6: reduction irrelevant
def test_mean_or_sum_reduction_gives_the_same_cosines():
    network = small_net()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1])
    with Taps(network).recording(x) as record:
        z = network(x)
    taps = [x, *record.module_inputs().values()]
    loss = F.cross_entropy(z, y, reduction="none")
    by_sum = torch.autograd.grad(loss.sum(), taps, retain_graph=True)
    by_mean = torch.autograd.grad(loss.mean(), taps)
    for g_sum, g_mean, h in zip(by_sum, by_mean, taps, strict=True):
        torch.testing.assert_close(per_sample_cosine(g_sum, h, 0.0), per_sample_cosine(g_mean, h, 0.0))


# --------------------------------------------------------------------------- (h) 7: gradients reach
def test_every_parameter_gets_a_finite_nonzero_gradient_and_hooks_are_gone():
    network = SmallCNN(input_size=16, mean=0.5, std=0.5)
    nn.init.normal_(network.classifier[-1].weight, std=0.1)  # SmallCNN's last layer starts at zero
    model = GFA(network, num_classes=10)
    x, y = torch.rand(6, 1, 16, 16), torch.arange(6)
    terms = model.compute_loss(x, y)
    assert [k for k in terms if k.startswith("gfa_abs_cos/")] == [
        "gfa_abs_cos/input", *(f"gfa_abs_cos/{n}" for n in
                               ["features.2", "features.5", "features.7", "classifier.1", "classifier.4",
                                "classifier.6"])
    ]  # fmt: skip  # 1 + 6 taps
    assert hook_count(network) == 0  # the hooks are gone after the step
    terms["loss"].backward()
    assert_every_parameter_has_a_gradient(model)
    # the regularizer alone reaches the last Linear too, through its input tap (double backprop)
    model.zero_grad()
    model.compute_loss(x, y)["gfa_reg"].backward()
    assert network.classifier[-1].weight.grad.abs().sum() > 0


def test_lam_zero_gives_the_plain_task_loss_gradients():
    network = tiny_cnn()
    network.eval()  # dropout off: the same network in both forwards
    x, y = next(iter(tiny_data().train_dataloader()))
    GFA(network, lam=0.0, num_classes=NUM_CLASSES).compute_loss(x, y)["loss"].backward()
    gfa_grads = [p.grad.clone() for p in network.parameters()]
    network.zero_grad()
    F.cross_entropy(network(x), y).backward()
    for got, parameter in zip(gfa_grads, network.parameters(), strict=True):
        torch.testing.assert_close(got, parameter.grad)
    network.zero_grad()
    GFA(network, lam=1.0, num_classes=NUM_CLASSES).compute_loss(x, y)["loss"].backward()
    assert any(not torch.allclose(g, p.grad) for g, p in zip(gfa_grads, network.parameters(), strict=True))


# -------------------------------------------------------------------------------- (h) 8: gradcheck
class Reparametrized(nn.Module):
    """Runs ``net`` with the tensors in ``self.params`` (gradcheck's inputs) instead of its parameters."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.params: dict = {}

    def forward(self, x):
        return torch.func.functional_call(self.net, self.params, (x,))


@pytest.mark.parametrize("penalty", ["sq", "abs"])
def test_gradcheck_of_the_regularizer_on_a_tanh_mlp(penalty):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    wrapper = Reparametrized(net)
    model = GFA(wrapper, penalty=penalty, input_center=0.5, num_classes=3)
    x, y = torch.rand(3, 4, dtype=torch.float64), torch.tensor([0, 1, 2])
    names = [name for name, _ in net.named_parameters()]
    start = tuple(p.detach().clone().requires_grad_(True) for p in net.parameters())

    def reg(*params):
        wrapper.params = dict(zip(names, params, strict=True))
        return model.compute_loss(x, y)["gfa_reg"]

    wrapper.params = dict(zip(names, start, strict=True))
    _, _, cosines = model.alignment(x, y)
    assert list(cosines) == ["input", "net.2"]
    assert all(c.abs().min() > 0.05 for c in cosines.values())  # away from the kink of |c|
    assert torch.autograd.gradcheck(reg, start, eps=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------- (h) 9: MSE
def test_mse_option_is_the_squared_error_of_the_probabilities():
    network = tiny_cnn()
    network.eval()
    x, y = next(iter(tiny_data().train_dataloader()))
    terms = GFA(network, task_loss="mse", num_classes=NUM_CLASSES).compute_loss(x, y)
    assert "ce" not in terms
    expected = ((torch.softmax(network(x), 1) - F.one_hot(y, NUM_CLASSES)) ** 2).sum(1).mean()
    torch.testing.assert_close(terms["mse"], expected)
    torch.testing.assert_close(terms["loss"], expected + terms["gfa_reg"])


# ------------------------------------------------------------------------------- options and errors
def test_layer_weights_and_the_uniform_default():
    network = small_net()
    x, y = torch.rand(4, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    _, _, cosines = GFA(network, num_classes=3).alignment(x, y)
    phi = {name: (1 - c.abs()).mean() for name, c in cosines.items()}
    uniform = GFA(network, num_classes=3).compute_loss(x, y)["gfa_reg"]
    torch.testing.assert_close(uniform, torch.stack(list(phi.values())).mean())
    weights = {"input": 0.0, "8": 3.0}
    weighted = GFA(network, num_classes=3, layer_weights=weights).compute_loss(x, y)["gfa_reg"]
    torch.testing.assert_close(weighted, (phi["3"] + phi["6"] + 3 * phi["8"]) / 5)
    with pytest.raises(ValueError, match="do not exist"):
        GFA(network, num_classes=3, layer_weights={"9": 1.0}).compute_loss(x, y)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="lam"):
        GFA(tiny_cnn(), lam=-1.0)
    with pytest.raises(ValueError, match="penalty"):
        GFA(tiny_cnn(), penalty="cubic")
    with pytest.raises(ValueError, match="task_loss"):
        GFA(tiny_cnn(), task_loss="hinge")
    with pytest.raises(ValueError, match="taps"):
        GFA(tiny_cnn(), taps="middle")
    with pytest.raises(ValueError, match="layer_weights"):
        GFA(tiny_cnn(), layer_weights={"input": -1.0})


def test_in_place_activation_after_a_tap_is_a_clear_error():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            out = self.b(h)
            h.relu_()
            return out

    model = GFA(InPlace(), num_classes=2)
    with pytest.raises(ValueError, match="inplace=False"):
        model.compute_loss(torch.rand(2, 3), torch.tensor([0, 1]))
    assert hook_count(model.network) == 0


def test_copies_keep_their_own_taps():
    model = GFA(tiny_cnn(), num_classes=NUM_CLASSES)
    x, y = next(iter(tiny_data().train_dataloader()))
    model.compute_loss(x, y)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.layer_taps.network is clone.network
        assert "gfa_abs_cos/7" in clone.compute_loss(x, y)
        assert hook_count(clone.network) == 0


# ------------------------------------------------------------------------ (h) 10: fit + checkpoint
def test_checkpoint_round_trip_still_records_taps(tmp_path):
    model = GFA(tiny_cnn(), num_classes=NUM_CLASSES, penalty="sq", lam=0.5)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, inference_mode=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=tiny_data())
    assert "train/gfa_reg" in trainer.callback_metrics
    assert hook_count(model.network) == 0
    restored = GFA.load_from_checkpoint(trainer.checkpoint_callback.best_model_path, network=tiny_cnn(seed=1))
    assert (restored.penalty, restored.lam) == ("sq", 0.5)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value, msg=key)
    assert restored.layer_taps.network is restored.network
    x, y = next(iter(tiny_data().train_dataloader()))
    model.eval()
    restored.eval()
    terms, expected = restored.compute_loss(x, y), model.compute_loss(x, y)
    assert [k for k in terms if "/" in k] == ["gfa_abs_cos/input", "gfa_abs_cos/7"]
    torch.testing.assert_close(terms["gfa_reg"], expected["gfa_reg"])


def test_cli_fit_on_the_mnist_sample_logs_the_regularizer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", *config_args("data/mnist_sample", "model/gfa", "trainer/debug", "eval/smoke")])
    tags = logged_scalars(tmp_path / "runs").keys()
    assert {"train/gfa_reg", "train/ce", "train/gfa_abs_cos/input", "train/gfa_abs_cos/classifier.6"} <= tags


def test_minimizing_the_regularizer_raises_the_alignment_on_a_fixed_batch():
    """The penalty does what it says: optimizer steps on L = CE + lam R raise the mean |cos|."""
    model = GFA(network=tiny_cnn(), lam=100.0, num_classes=NUM_CLASSES)
    model.eval()  # no dropout noise: the same objective every step
    x, y = next(iter(tiny_data().train_dataloader()))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = model.compute_loss(x, y)["gfa_abs_cos"]
    for _ in range(30):
        optimizer.zero_grad()
        model.compute_loss(x, y)["loss"].backward()
        optimizer.step()
    after = model.compute_loss(x, y)["gfa_abs_cos"]
    assert after > before + 0.3, (before, after)


def test_a_zero_initialized_head_is_warned_about_at_the_first_step():
    """A zero last layer makes every tap's gradient zero: the warning names the cause and the fix."""
    x, y = next(iter(tiny_data().train_dataloader()))
    network = tiny_cnn()
    torch.nn.init.zeros_(network[-1].weight)
    model = GFA(network=network, lam=1.0, num_classes=NUM_CLASSES)
    model.train()
    with pytest.warns(UserWarning, match="zero_init_head=False"):
        model.compute_loss(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GFA(network=tiny_cnn(), lam=1.0, num_classes=NUM_CLASSES).train().compute_loss(x, y)
