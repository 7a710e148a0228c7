"""Model FLOPs utilization (:mod:`lifelong.metrics.utilization`): PaLM's FLOPs per token of our GPT counted by
hand, MFU = model FLOPs / seconds / peak, in a run's costs, ``lifelong show``'s rows and ``run.peak_flops``."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from lifelong import OptimConfig, mlp, train
from lifelong.cli.tables import cost_rows
from lifelong.config import RunSettings
from lifelong.metrics.compute import ExperienceCost
from lifelong.metrics.utilization import lm_flops_per_token, measured_peak, mfu
from lifelong.models.gpt import gpt
from lifelong.strategies import STRATEGIES
from tests.runner.test_text_runs import stream, tiny_gpt


def test_flops_per_token_of_a_tiny_gpt_by_hand() -> None:
    """Vocabulary 257, context 16, width 32, one layer, MLP 128 wide. Parameters in matrix products: the
    tied embedding 257 * 32 = 8224; two LayerNorms 128; qkv 32 * 96 + 96 = 3168; projection 1056; MLP
    32 * 128 + 128 = 4224 and 128 * 32 + 32 = 4128; the final LayerNorm 64: N = 20,992 (the position
    embedding's 512 left out). 6 N + 12 L d T = 125,952 + 12 * 1 * 32 * 16 = 132,096."""
    model = gpt((17,), 1, 257, d_model=32, n_layers=1, n_heads=2)
    assert lm_flops_per_token(model) == 132_096
    assert lm_flops_per_token(mlp((4,), 2)) is None  # not a transformer language model


def test_mfu_is_model_flops_over_seconds_over_the_peak() -> None:
    assert mfu(6e9, 2.0, 1e10) == pytest.approx(0.3)  # 3e9 FLOP/s of 1e10
    assert mfu(6e9, 2.0, None) is None and mfu(6e9, 2.0, 0.0) is None and mfu(0.0, 2.0, 1e10) is None
    cost = ExperienceCost(seconds=4.0, model_flops=2e9, peak_flops=1e9)
    assert cost.mfu == pytest.approx(0.5) and cost.as_dict()["mfu"] == pytest.approx(0.5)
    assert ExperienceCost(seconds=4.0, model_flops=2e9).mfu is None  # no peak: n/a, not guessed
    rows = dict(cost_rows([cost.as_dict(), ExperienceCost(seconds=6.0, model_flops=3e9, peak_flops=1e9).as_dict()]))
    assert rows["mfu"] == "50.00%"  # 5e9 FLOPs in 10 s of a 1e9 FLOP/s device
    assert dict(cost_rows([ExperienceCost(seconds=1.0, model_flops=1e9).as_dict()]))["mfu"] == "n/a (no run.peak_flops)"
    assert "mfu" not in dict(cost_rows([{k: v for k, v in cost.as_dict().items() if k != "model_flops"}]))


def test_a_text_run_records_model_flops_and_its_mfu_against_the_given_peak() -> None:
    text = stream()
    for peak in (2e9, None, "measure"):
        torch.manual_seed(0)
        result = train(text, tiny_gpt(text), STRATEGIES["naive"](), OptimConfig(name="adam", lr=0.01, epochs=1),
                       seed=0, device="cpu", peak_flops=peak)
        for cost in result.costs:
            assert cost.model_flops == 132_096 * cost.tokens and cost.tokens == 1600
            if peak is None:
                assert cost.peak_flops == 0.0 and cost.mfu is None
            elif peak == "measure":
                assert cost.peak_flops > 1e8 and 0 < cost.mfu < 1  # a timed matrix product on this CPU
            else:
                assert cost.mfu == pytest.approx(cost.model_flops / cost.seconds / 2e9)


def test_measured_peak_and_the_setting() -> None:
    assert measured_peak(size=64, repeats=2) > 0
    assert RunSettings(peak_flops=989e12).peak_flops == 989e12 and RunSettings(peak_flops="measure").peak_flops
    for bad in (-1.0, 0.0, "fast"):
        with pytest.raises(ValidationError):
            RunSettings(peak_flops=bad)
