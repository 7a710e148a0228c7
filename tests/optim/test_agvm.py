"""AGVM (Xue et al. 2022): each module's rate rescaled by sqrt(phi_ref / phi), phi = 1 - cos of two gradients, by
hand on known gradients; the measurement schedule; the groups split by module; bad settings; exact resume; two
data-parallel ranks agreeing."""

import math

import pytest
import torch
from torch import nn

from lifelong import OptimConfig, class_incremental, mlp, synthetic, train
from lifelong.errors import ConfigError
from lifelong.optim.agvm import AGVM, GRADIENT, MODULE, OUTSIDE, STATE
from lifelong.optim.decay import SOURCE_GROUP
from lifelong.optim.registry import build_optimizer
from lifelong.optim.setup import resolve
from lifelong.runner.sharding import check_sharding
from lifelong.strategies import STRATEGIES
from lifelong.world import World
from tests.runner.recorder import StepRecorder
from tests.runner.test_checkpoint_resume import resumed_and_reference
from tests.runner.test_distributed_training import spawn_two_ranks


class TwoModules(nn.Module):
    """A backbone and a head of one weight row of two each, with no bias: gradients set by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(2, 1, bias=False)
        self.head = nn.Linear(2, 1, bias=False)


def steps_with(gradients: list[tuple[list[float], list[float]]], settings: AGVM, lr: float = 0.1):
    """Plain SGD with AGVM over :class:`TwoModules`, one step per ``(backbone gradient, head gradient)``; the
    model, the optimizer and each step's weight changes ``(backbone, head)``."""
    model = TwoModules()
    optimizer = build_optimizer("sgd", model.parameters(), lr=lr, model=model, agvm=settings)
    changes = []
    for backbone, head in gradients:
        before = [model.backbone.weight.detach().clone(), model.head.weight.detach().clone()]
        model.backbone.weight.grad = torch.tensor([backbone])
        model.head.weight.grad = torch.tensor([head])
        optimizer.step()
        changes.append((model.backbone.weight.detach() - before[0], model.head.weight.detach() - before[1]))
    return model, optimizer, changes


BACKBONE = ([1.0, 0.0], [3.0, 4.0])
"""cos 3/5 = 0.6 between the two steps' gradients: phi = 0.4."""
HEAD = ([10.0, 0.0], [9.0, 10 * math.sqrt(0.19)])
"""cos 0.9: phi = 0.1, a quarter of the backbone's, at ten times the backbone's gradient norm (phi ignores scale)."""


def test_a_head_with_a_quarter_of_the_backbones_gradient_variance_steps_at_twice_its_rate_by_hand() -> None:
    _, optimizer, changes = steps_with(list(zip(BACKBONE, HEAD, strict=True)), AGVM(alpha=0.0, every_steps=1))
    factor = math.sqrt((0.4 + 1e-6) / (0.1 + 1e-6))  # sqrt(phi_ref / phi), eps 1e-6 on both
    assert factor == pytest.approx(2.0, rel=1e-5)
    first, second = changes
    assert torch.allclose(first[0], -0.1 * torch.tensor([BACKBONE[0]])) and torch.allclose(
        first[1], -0.1 * torch.tensor([HEAD[0]]))  # the first step has nothing to compare with: factor 1
    assert torch.allclose(second[0], -0.1 * torch.tensor([BACKBONE[1]]))  # the reference keeps its rate
    assert torch.allclose(second[1], -0.1 * factor * torch.tensor([HEAD[1]]), rtol=1e-6)
    assert optimizer.state[STATE]["factors"] == {"head": pytest.approx(factor, rel=1e-9)}
    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.1]  # restored after the step


def test_the_factor_is_a_moving_average_from_one_and_its_ratio_is_clamped() -> None:
    _, optimizer, _ = steps_with(list(zip(BACKBONE, HEAD, strict=True)), AGVM(every_steps=1))  # alpha 0.97
    assert optimizer.state[STATE]["factors"]["head"] == pytest.approx(0.97 + 0.03 * math.sqrt(0.400001 / 0.100001))
    # a head whose gradient turns by 90 degrees (phi 1) against the backbone's 0.4: 0.4 < 0.5, clamped to 0.5
    _, optimizer, _ = steps_with([(BACKBONE[0], [1.0, 0.0]), (BACKBONE[1], [0.0, 1.0])], AGVM(alpha=0.0, every_steps=1))
    assert optimizer.state[STATE]["factors"]["head"] == pytest.approx(math.sqrt(0.5))
    # and one that keeps its direction (phi 0): 0.4 / 1e-6 clamped to 10
    _, optimizer, _ = steps_with([(BACKBONE[0], [1.0, 0.0]), (BACKBONE[1], [2.0, 0.0])], AGVM(alpha=0.0, every_steps=1))
    assert optimizer.state[STATE]["factors"]["head"] == pytest.approx(math.sqrt(10.0))


def test_a_gradient_is_kept_only_from_the_step_before_each_measurement() -> None:
    model = TwoModules()
    optimizer = build_optimizer("sgd", model.parameters(), lr=0.1, model=model, agvm=AGVM(every_steps=5,
                                                                                          start_step=2))
    kept, factors = [], []
    for step in range(13):
        for index, p in enumerate(model.parameters()):
            p.grad = torch.randn(1, 2, generator=torch.Generator().manual_seed(2 * step + index))
        optimizer.step()
        kept.append(GRADIENT in optimizer.state[model.head.weight])
        factors.append(optimizer.state[STATE]["factors"].get("head"))
    assert [step for step, k in enumerate(kept) if k] == [6, 11]  # stored after steps 6 and 11 ...
    changed = [step for step in range(13) if factors[step] != (factors[step - 1] if step else None)]
    assert changed == [7, 12]  # ... and compared at steps 2 + 5 and 2 + 10, the measurements
    assert optimizer.state[STATE]["steps"] == 13


def test_groups_are_split_by_module_and_keep_the_group_they_came_from() -> None:
    model = mlp((4,), 3, hidden=(5,))
    outside = nn.Parameter(torch.zeros(2))  # a strategy's own parameter, not the model's
    groups = [{"params": [*model.backbone.parameters(), outside], "lr_scale": 0.5},
              {"params": list(model.head.parameters())}]
    split = AGVM().split(groups, model)
    assert [(g[MODULE], g[SOURCE_GROUP], g.get("lr_scale"), len(g["params"])) for g in split] == [
        ("backbone", 0, 0.5, 2), (OUTSIDE, 0, 0.5, 1), ("head", 1, None, 2)]


@pytest.mark.parametrize("optim, message", [
    (OptimConfig(agvm=True, agvm_params={"alpha": 1.0}), "optim.agvm_params.alpha must be in \\[0, 1\\), got 1.0"),
    (OptimConfig(agvm=True, agvm_params={"every_steps": 0}), "optim.agvm_params.every_steps must be >= 1"),
    (OptimConfig(agvm=True, agvm_params={"min_ratio": 2.0, "max_ratio": 1.0}),
     "optim.agvm_params.max_ratio must be >= min_ratio \\(2.0\\)"),
    (OptimConfig(agvm=True, agvm_params={"momentum": 0.9}), "optim.agvm_params.momentum: unknown field"),
    (OptimConfig(agvm_params={"alpha": 0.9}), "optim.agvm_params is set .* but optim.agvm is false; set optim.agvm=true"),
])
def test_bad_settings_name_the_field(optim, message) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(optim)


def test_a_model_without_the_reference_module_and_a_sharded_run_are_refused(small_data) -> None:
    stream = class_incremental(small_data, 3)
    optim = OptimConfig(agvm=True, agvm_params={"reference": "encoder"}, epochs=1)
    with pytest.raises(ConfigError, match="optim.agvm_params.reference must be a top-level module of the model with "
                                          "parameters, one of \\['backbone', 'head'\\], got 'encoder'"):
        train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(8,)), STRATEGIES["naive"](), optim)
    with pytest.raises(ConfigError, match="run.shard='fsdp' cannot run optim.agvm"):
        check_sharding(False, False, agvm=True)


AGVM_OPTIM = OptimConfig(lr=0.05, momentum=0.9, epochs=2, batch_size=16, reset_per_experience=False, agvm=True,
                         agvm_params={"every_steps": 3})
"""Measured every 3 steps: the checkpoint after step 21 of the resume test holds the gradient step 21 compares with."""


def test_a_run_killed_with_sigkill_resumes_bit_for_bit(small_data, tmp_path) -> None:
    stream = class_incremental(small_data, 3)
    recorder = StepRecorder()
    torch.manual_seed(0)
    train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,)), STRATEGIES["naive"](), AGVM_OPTIM,
          seed=2, observers=[recorder])
    factor = recorder.optimizer.state[STATE]["factors"]["head"]
    assert factor != 1.0 and 0.5 ** 0.5 <= factor <= 10 ** 0.5  # the head's rate was moved, within the clamp
    resumed_and_reference(stream, "naive", tmp_path, {"naive": {}}, optim=AGVM_OPTIM)


def _train_rank(rank: int, init_file: str, results: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    stream = class_incremental(synthetic(n_classes=6, n_features=8, n_per_class=40, spread=0.5), 3)
    recorder = StepRecorder()
    torch.manual_seed(0)
    model = mlp((8,), 6, hidden=(16,))
    optim = OptimConfig(**{**AGVM_OPTIM.model_dump(), "batch_size": 8, "base_batch_size": 16})
    train(stream, model, STRATEGIES["naive"](), optim, seed=0, world=World(rank, 2), observers=[recorder])
    results[rank] = {"params": [p.detach().clone() for p in model.parameters()],
                     "factors": dict(recorder.optimizer.state[STATE]["factors"])}
    dist.destroy_process_group()


def test_data_parallel_ranks_measure_the_same_factors_from_the_averaged_gradients(tmp_path) -> None:
    ranks = spawn_two_ranks(_train_rank, tmp_path)
    assert ranks[0]["factors"] == ranks[1]["factors"] and ranks[0]["factors"]["head"] != 1.0
    for a, b in zip(ranks[0]["params"], ranks[1]["params"], strict=True):
        assert torch.equal(a, b)
