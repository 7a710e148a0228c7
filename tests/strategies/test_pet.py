"""LoRA, adapters and LAE on a frozen backbone (lifelong.strategies.parts.tuning, sequential_tuning, lae)."""

from __future__ import annotations

from copy import deepcopy

import pytest
import torch
from torch import nn

from lifelong import OptimConfig, class_incremental, mlp, train
from lifelong.config import Component, build, parameters
from lifelong.data import Batch
from lifelong.errors import ConfigError
from lifelong.models import MODELS
from lifelong.strategies import LAE, STRATEGIES, Adapter, LoRA
from lifelong.strategies.base import Strategy, StrategyContext
from lifelong.strategies.parts.tuning import (
    Tuning,
    inject,
    substituted,
    tuning_parameters,
)
from tests.runner.test_checkpoint_resume import resumed_and_reference


def one_layer_model() -> nn.Module:
    """Backbone: one 2 -> 2 linear layer with hand-set weights; head 2 -> 3."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model[0].bias.copy_(torch.tensor([0.5, -0.5]))
    return model


@pytest.mark.parametrize("kind", ["lora", "adapter"])
def test_injection_leaves_outputs_unchanged_then_adds_the_hand_computed_term(kind) -> None:
    torch.manual_seed(0)
    model = mlp((6,), 4, hidden=(5, 5))
    x = torch.randn(7, 6)
    before = model(x)
    inject(model, kind, rank=2, alpha=4.0, targets=("*",), seed=0)
    assert torch.equal(model(x), before)  # B (up) is zero: nothing added
    assert sorted(tuning_parameters(model)) == [f"backbone.{i}.tuning.{p}" for i in (1, 3) for p in ("down", "up")]

    model = one_layer_model()
    inject(model, kind, rank=1, alpha=2.0, targets=("0",), seed=0)  # scale alpha / rank = 2
    tuning = model[0].tuning
    with torch.no_grad():
        tuning.down.copy_(torch.tensor([[1.0, -1.0]]))
        tuning.up.copy_(torch.tensor([[1.0], [2.0]]))
    x = torch.tensor([[1.0, 0.0]])  # W x + b = (1.5, 2.5)
    expected = [1.5 + 2 * 1.0, 2.5 + 2 * 2.0] if kind == "lora" else [1.5, 2.5]  # down x = 1; down h = -1 -> ReLU 0
    assert model[0](x).tolist() == [expected]
    x = torch.tensor([[0.0, -1.0]])  # W x + b = (-1.5, -4.5): down x = 1 (lora); down h = 3 (adapter)
    expected = [-1.5 + 2.0, -4.5 + 4.0] if kind == "lora" else [-1.5 + 6.0, -4.5 + 12.0]
    assert model[0](x).tolist() == [expected]


class Block(nn.Module):
    """The linear layers of a transformer block, named as the library's ViT names them."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x + self.proj(self.qkv(x)[:, : x.shape[1]]))))


def test_targets_pick_layers_by_name() -> None:
    model = nn.Sequential(nn.Sequential(Block(4), Block(4)), nn.Linear(4, 3))
    inject(model, "lora", rank=2, alpha=2.0, targets=("*qkv", "0.1.fc1"), seed=0)
    assert sorted({name.rsplit(".tuning", 1)[0] for name in tuning_parameters(model)}) == \
        ["0.0.qkv", "0.1.fc1", "0.1.qkv"]
    assert model(torch.ones(2, 4)).shape == (2, 3)


def test_tuning_tensors_stay_out_of_the_model_state_dict_and_copies_use_their_own() -> None:
    model = one_layer_model()
    keys = list(model.state_dict())
    inject(model, "lora", rank=1, alpha=1.0, targets=("*",), seed=0)
    assert list(model.state_dict()) == keys  # a fresh model still loads a checkpoint strictly
    copy = deepcopy(model)
    with torch.no_grad():
        copy[0].tuning.up.fill_(1.0)
    x = torch.ones(1, 2)
    assert not torch.equal(copy(x), model(x))  # the copy's hook reads the copy's tuning module


def test_no_matching_linear_layer_is_refused_in_one_line() -> None:
    model = MODELS["resnet18"]((3, 8, 8), 4, nf=4)
    with pytest.raises(ConfigError, match="strategy.targets") as error:
        inject(model, "lora", rank=2, alpha=2.0, targets=("*",), seed=0)
    assert "\n" not in str(error.value)
    for bad in ({"rank": 0}, {"alpha": 0.0}, {"targets": ()}):
        with pytest.raises(ConfigError, match=f"strategy.{next(iter(bad))}"):
            LoRA(**bad)
    with pytest.raises(ConfigError, match="strategy.module"):
        LAE(module="prefix")


@pytest.mark.parametrize("make", [LoRA, Adapter, LAE])
def test_only_tuning_parameters_and_the_head_change(small_data, make) -> None:
    stream = class_incremental(small_data, 3)
    torch.manual_seed(0)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16, 16))
    backbone_before = {name: p.detach().clone() for name, p in model.backbone.named_parameters()}
    head_before = model.head.weight.detach().clone()
    strategy = make(rank=2)
    train(stream, model, strategy, OptimConfig(lr=0.1, epochs=1, batch_size=16), seed=0)
    tuned = tuning_parameters(model)
    for name, p in model.backbone.named_parameters():
        if f"backbone.{name}" not in tuned:
            assert torch.equal(p, backbone_before[name]), name  # frozen: bit-identical
    assert all(tuned[f"backbone.{i}.tuning.up"].abs().sum() > 0 for i in (1, 3))  # B left zero: they trained
    assert not torch.equal(model.head.weight, head_before)
    groups = strategy.parameter_groups(model)
    in_groups = {id(p) for group in groups for p in group["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}  # the groups are what trains
    # LoRA: A (2, in) + B (out, 2) per layer, 8 -> 16 and 16 -> 16; adapter: down (2, 16) + up (16, 2) per layer
    assert sum(p.numel() for p in groups[0]["params"]) == {LoRA: 48 + 64, Adapter: 128, LAE: 128}[make]


def test_lae_offline_modules_follow_the_online_ones_by_ema_after_each_step(small_data) -> None:
    stream = class_incremental(small_data, 2)
    torch.manual_seed(0)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(4,))
    strategy = LAE(module="lora", rank=1, ema_decay=0.5, later_lr_scale=0.25)
    strategy.setup(StrategyContext(stream, 0))
    assert strategy.plan(stream.experiences, 0).lr_scales == (1.0, 1.0)
    assert strategy.plan(stream.experiences, 1).lr_scales == (0.25, 1.0)
    strategy.before_experience(model, stream[0])
    up = strategy.tuning.parameters["backbone.1.tuning.up"]  # (4, 1)
    with torch.no_grad():
        up.fill_(2.0)
    strategy.after_experience(model, stream[0])
    assert torch.equal(strategy.offline["backbone.1.tuning.up"], torch.full((4, 1), 2.0))  # a copy at the end
    strategy.before_experience(model, stream[1])
    batch = Batch(stream[1].train.x[:4], stream[1].train.y[:4], torch.zeros(4, dtype=torch.long))
    for value in (6.0, 10.0):  # two "optimizer steps" setting the online weights by hand
        strategy.observe(model, batch).backward()
        strategy.after_backward(model)
        with torch.no_grad():
            up.fill_(value)
    strategy.after_experience(model, stream[1])
    # offline = 0.5 * (0.5 * 2 + 0.5 * 6) + 0.5 * 10 = 7
    assert torch.equal(strategy.offline["backbone.1.tuning.up"], torch.full((4, 1), 7.0))
    state = strategy.state_dict()
    other = LAE(module="lora", rank=1, ema_decay=0.5)
    other.setup(StrategyContext(stream, 0))
    fresh = mlp(stream.input_shape, stream.n_classes, hidden=(4,))
    fresh.load_state_dict(model.state_dict())
    other.load_state_dict(state, fresh)
    x, task = stream[0].test.x, stream[0].test.task
    assert torch.equal(other.predict(fresh, x, task), strategy.predict(model, x, task))
    assert torch.equal(fresh.backbone[1].tuning.up, up)


def test_lae_ensemble_takes_the_more_confident_expert_per_class(small_data) -> None:
    stream = class_incremental(small_data, 2)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(4,), seed=0)
    strategy = LAE(module="lora", rank=1)
    strategy.setup(StrategyContext(stream, 0))
    strategy.before_experience(model, stream[0])
    strategy.after_experience(model, stream[0])
    strategy.remember_classes(stream[1])
    x, task = stream[1].test.x, stream[1].test.task
    online = strategy.probabilities(model, x, task)
    strategy.offline = {name: torch.randn_like(p) for name, p in strategy.tuning.parameters.items()}
    with substituted(strategy.tuning.parameters, strategy.offline):
        offline = strategy.probabilities(model, x, task)
    assert torch.equal(strategy.probabilities(model, x, task), online)  # the online modules are back
    assert not torch.equal(offline, online)
    assert torch.equal(strategy.predict(model, x, task), torch.maximum(online, offline).argmax(dim=1))


@pytest.mark.parametrize("name", ["lora", "adapter", "lae"])
def test_resume_after_sigkill_equals_uninterrupted_run(small_data, tmp_path, name) -> None:
    stream = class_incremental(small_data, 3)
    _, resumed_model, _, reference_model = resumed_and_reference(stream, name, tmp_path, {name: {"rank": 2}})
    for (key, a), (_, b) in zip(tuning_parameters(resumed_model).items(), tuning_parameters(reference_model).items(),
                                strict=True):
        assert torch.equal(a, b), key
    assert isinstance(resumed_model.backbone[1].tuning, Tuning)


def test_memory_counts_the_offline_copy_not_the_models_own_tuning_modules(small_data) -> None:
    stream = class_incremental(small_data, 2)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)
    for strategy, expected in ((LoRA(rank=2), 0), (LAE(module="lora", rank=2), 4 * (2 * 8 + 16 * 2))):
        strategy.setup(StrategyContext(stream, 0))
        strategy.before_experience(model, stream[0])
        strategy.after_experience(model, stream[0])
        assert strategy.memory_bytes() == expected  # LAE: the offline A (2, 8) and B (16, 2) in float32


def test_a_model_tuned_otherwise_is_refused() -> None:
    model = one_layer_model()
    inject(model, "adapter", rank=2, alpha=2.0, targets=("*",), seed=0)
    inject(model, "adapter", rank=2, alpha=2.0, targets=("*",), seed=1)  # the same kind: kept as it is
    with pytest.raises(ConfigError, match="already carries a rank-2 adapter module"):
        inject(model, "lora", rank=2, alpha=2.0, targets=("*",), seed=0)


def test_lora_and_adapter_are_one_definition_registered_twice(small_data) -> None:
    assert LoRA.__bases__ == Adapter.__bases__ == LAE.__bases__ == (Strategy,)
    assert STRATEGIES["lora"] is LoRA and STRATEGIES["adapter"] is Adapter
    assert all(getattr(LoRA, hook).__code__ is getattr(Adapter, hook).__code__
               for hook in ("setup", "before_experience", "parameter_groups", "observe", "state_dict"))
    lora, adapter = parameters(LoRA), parameters(Adapter)
    assert {k: p.default for k, p in lora.items() if k != "module"} == \
        {k: p.default for k, p in adapter.items() if k != "module"}
    assert (lora["module"].default, adapter["module"].default) == ("lora", "adapter")
    built = build("strategy", STRATEGIES, Component(name="adapter", rank=2))
    assert (type(built).__name__, built.module, built.rank) == ("Adapter", "adapter", 2)
    assert repr(LoRA(rank=2)) == "LoRA(rank=2, alpha=4.0, targets=('*',), module='lora')"
    # the module alone makes the difference: a LoRA given adapters trains exactly the adapter's tensors
    stream = class_incremental(small_data, 2)
    sizes = []
    for strategy in (LoRA(rank=2, module="adapter"), Adapter(rank=2)):
        model = mlp(stream.input_shape, stream.n_classes, hidden=(16, 16), seed=0)
        strategy.setup(StrategyContext(stream, 0))
        strategy.before_experience(model, stream[0])
        sizes.append(sum(p.numel() for p in strategy.parameter_groups(model)[0]["params"]))
    assert sizes == [128, 128]  # down (2, 16) + up (16, 2) per layer
