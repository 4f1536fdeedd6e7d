"""TRADES (Zhang et al., ICML 2019) against its formula."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lit_robust.attacks import PGD
from lit_robust.defenses import TRADES
from tests.helpers import tiny_cnn, tiny_data


def test_kl_is_zero_at_eps_zero_and_positive_otherwise():
    x, y = next(iter(tiny_data().train_dataloader()))
    network = tiny_cnn()
    network[6].p = 0.0  # no dropout: clean and adversarial forwards see the same network
    zero = TRADES(network=network, attack=PGD(0.0, loss="kl"), num_classes=4).compute_loss(x, y)
    assert zero["kl"].abs() < 1e-7
    torch.testing.assert_close(zero["loss"], zero["ce"])
    some = TRADES(network=network, attack=PGD(0.2, steps=3, loss="kl"), num_classes=4).compute_loss(x, y)
    assert some["kl"] > 1e-4


def test_loss_is_clean_ce_plus_beta_kl():
    x, y = next(iter(tiny_data().train_dataloader()))
    network = tiny_cnn()
    network[6].p = 0.0
    network[2] = torch.nn.Identity()  # BatchNorm statistics would change between the two attack calls
    model = TRADES(network=network, attack=PGD(0.2, steps=2, loss="kl", random_start="none"), beta=3.0)
    model.train()
    terms = model.compute_loss(x, y)
    x_adv = model.attack(model, x, y)
    p_clean = F.softmax(network(x), dim=1)
    kl = (p_clean * (p_clean.log() - F.log_softmax(network(x_adv), dim=1))).sum(1).mean()
    torch.testing.assert_close(terms["kl"], kl, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(terms["loss"], F.cross_entropy(network(x), y) + 3.0 * kl, atol=1e-6, rtol=1e-5)
