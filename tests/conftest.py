"""Shared fixtures. Tests run torch on one thread: the models are small, and two test processes on
two cores with two threads each spin against each other."""

from __future__ import annotations

import pytest
import torch

from lifelong.data import Dataset, digits, synthetic

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_data() -> Dataset:
    return digits()


@pytest.fixture(scope="session")
def small_data() -> Dataset:
    """Six well-separated Gaussian classes in 8 dimensions: a stream that trains in milliseconds."""
    return synthetic(n_classes=6, n_features=8, n_per_class=40, spread=0.5, seed=0)
