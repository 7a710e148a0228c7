"""``benchmarks/pretrained.py``: its rows give a pretrained backbone the papers' settings, and its count of
trained parameters covers every tensor the run trained (issue 25)."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lifelong import OptimConfig, train
from lifelong.strategies import STRATEGIES, DualPrompt
from tests.strategies.test_prompts import TINY, images, tiny_vit

BENCHMARK = Path(__file__).parents[2] / "benchmarks" / "pretrained.py"


@pytest.fixture(scope="module")
def benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pretrained_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_no_row_adapts_the_pretrained_backbone_at_the_full_rate(benchmark) -> None:
    # SLCA's default adapt_experiences=1 trained the pretrained backbone at the full rate on experience 0.
    for row in benchmark.ROWS:
        fields = {f.name for f in dataclasses.fields(STRATEGIES[row.strategy])}
        if "adapt_experiences" in fields:
            assert dict(row.settings).get("adapt_experiences") == 0, row.label


def test_trained_parameters_count_every_task_prompts(benchmark, small_data) -> None:
    # The count read parameter_groups at the end of the run: the last task's prompts alone.
    stream = images(small_data)
    model, strategy = tiny_vit(), DualPrompt(**TINY["dualprompt"])
    diagnostics = benchmark.Diagnostics()
    train(stream, model, strategy, OptimConfig(name="adam", lr=0.01, epochs=1), seed=0, observers=[diagnostics])
    prompts = sum(p.numel() for p in strategy.prompts.tensors.values())  # G-prompt, every task's E-prompt and key
    head = sum(p.numel() for p in model.head.parameters())
    assert diagnostics.trained() == prompts + head
    assert 0 <= diagnostics.measured["identified"] <= 1 and len(diagnostics.measured["key_per_task"]) == 3
