"""Shared fixtures: tiny networks and data that make every test fast on two CPU cores.

Plain helpers (tiny_cnn, tiny_data, quick_trainer, ...) live in ``tests/helpers.py``; import them from there.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from tests.helpers import tiny_cnn, tiny_data

torch.set_num_threads(1)  # tiny models: threads cost more than they give on two cores


@pytest.fixture
def all_cores():
    """For SmallCNN-sized work, where every core helps; tiny tests run on one thread."""
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def trained_tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny CNN trained to ~100% on the synthetic task (eval mode), and a batch of its test data."""
    datamodule = tiny_data(num_train=256)
    model = tiny_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    images, labels = datamodule.train_set.tensors
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for parameter in model.parameters():
        parameter.grad = None
    x, y = datamodule.test_set.tensors
    return model, x, y
