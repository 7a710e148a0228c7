"""The two cooldowns of an experience's end, run by the runner: the branch-off (``optim.branch_decay``,
Hägele et al. 2024), which leaves the run exactly as a run without branches, and WSD-S
(``optim.wsd_s_decay``, Wen et al. 2024), which decays the run itself and adds no step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lifelong import OptimConfig, class_incremental, train
from lifelong.errors import ConfigError
from lifelong.strategies import STRATEGIES
from tests.runner.recorder import StepRecorder

OPTIM = OptimConfig(lr=0.05, epochs=2, batch_size=16)


def dropout_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 6))


def test_a_branch_off_leaves_a_model_with_dropout_as_a_run_without_branches(small_data) -> None:
    """Dropout draws from torch's global generator: the branch's steps draw too, and the run after it must
    draw as if they never happened. The final weights equal a run without branches bit for bit, while the
    rows of the matrix are the decayed branches' and the costs count their steps."""
    stream = class_incremental(small_data, 3)
    models, results = [], []
    for branch in (None, 0.5):
        models.append(dropout_mlp())
        optim = OPTIM.model_copy(update={"branch_decay": branch})
        results.append(train(stream, models[-1], STRATEGIES["naive"](), optim, seed=0, device="cpu"))
    plain, branched = results
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [c.steps for c in branched.costs] == [s + round(0.5 * s) for s in (c.steps for c in plain.costs)]
    assert not np.array_equal(branched.matrix, plain.matrix)


def test_a_run_leaves_the_callers_global_random_state_as_it_found_it(small_data) -> None:
    """The run's dropout draws start from its seed, whatever the caller drew before; the caller's
    generator is where it was after the run."""
    stream = class_incremental(small_data, 2)
    ends = []
    for caller_seed in (1, 2):
        model = dropout_mlp()
        torch.manual_seed(caller_seed)
        before = torch.get_rng_state()
        train(stream, model, STRATEGIES["naive"](), OPTIM, seed=0, device="cpu")
        assert torch.equal(torch.get_rng_state(), before)
        ends.append(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ends[0].values(), ends[1].values(), strict=True))


def test_wsd_s_decays_the_end_of_every_experience_in_the_run_itself(small_data) -> None:
    """Each experience's 8 planned steps (60 samples in batches of 16 and 12, 2 epochs) run and no more,
    the last quarter (2 steps) at the cooldown's rates 0.5 and 0; the next experience starts at the full
    rate again, from the decayed weights."""
    stream = class_incremental(small_data, 3)
    recorder = StepRecorder()
    result = train(stream, dropout_mlp(), STRATEGIES["naive"](), OPTIM.model_copy(update={"wsd_s_decay": 0.25}),
                   seed=0, device="cpu", observers=[recorder])
    assert [plan["steps"] for plan in result.extra["plan"]] == [c.steps for c in result.costs] == [8, 8, 8]
    for index in range(3):
        assert [s["lr"] / OPTIM.lr for s in recorder.of(index)] == pytest.approx([1, 1, 1, 1, 1, 1, 0.5, 0])


def test_wsd_s_and_a_branch_off_are_refused_together(small_data) -> None:
    with pytest.raises(ConfigError, match="set one of them"):
        train(class_incremental(small_data, 2), dropout_mlp(), STRATEGIES["naive"](),
              OPTIM.model_copy(update={"branch_decay": 0.5, "wsd_s_decay": 0.5}), device="cpu")
