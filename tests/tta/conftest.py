"""The source model every test-time adaptation test adapts: a small CNN with BatchNorm trained on the clean
digits (a fresh copy per test module; tests deep-copy it before adapting)."""

import pytest
import torch

from lifelong import OptimConfig, cnn
from lifelong.tta.loop import train_source


@pytest.fixture(scope="module")
def source_model(digits_data):
    torch.manual_seed(0)
    return train_source(digits_data, cnn(digits_data.input_shape, 10, channels=(8, 16)),
                        OptimConfig(epochs=4, lr=0.05), seed=0)
