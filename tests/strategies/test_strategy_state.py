import copy
import io

import pytest
import torch

from lifelong import OptimConfig, class_incremental, mlp, train
from lifelong.strategies import STRATEGIES
from lifelong.strategies.base import StrategyContext

NEW = ["er_ace", "der", "derpp", "gdumb", "agem", "icarl", "si", "mas", "l2", "ncm", "slca", "fetril", "uer"]
SETTINGS = {"ncm": {"adapt_experiences": 1}, "slca": {"samples_per_class": 16}}


def same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("name", NEW)
def test_state_survives_torch_save_and_weights_only_load(name: str, small_data) -> None:
    stream = class_incremental(small_data, 3)
    torch.manual_seed(0)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,))
    strategy = STRATEGIES[name](**SETTINGS.get(name, {}))
    train(class_incremental(small_data, 3), model, strategy, OptimConfig(epochs=1), seed=0)
    file = io.BytesIO()
    torch.save(strategy.state_dict(), file)
    file.seek(0)
    state = torch.load(file, weights_only=True)
    restored = STRATEGIES[name](**SETTINGS.get(name, {}))
    restored.setup(StrategyContext(stream, 1))  # a different seed: everything learned must come from the state
    restored.load_state_dict(state, copy.deepcopy(model))
    assert same(restored.state_dict(), strategy.state_dict())
    test = stream[2].test
    assert torch.equal(restored.predict(model, test.x, test.task), strategy.predict(model, test.x, test.task))
    batch = stream[2].train.batch()
    assert restored.observe(model, batch).item() == pytest.approx(strategy.observe(model, batch).item())


# gdumb: 29 slots leave the classes uneven, so offering the experience again would change the memory
@pytest.mark.parametrize("name,settings", [("cumulative", {}), ("gdumb", {"buffer_size": 29}),
                                           ("ncm", {"adapt_experiences": 2})])
def test_training_set_after_restoring_a_checkpoint_taken_inside_the_experience(name, settings, small_data) -> None:
    """A run resumed inside an experience restores a state that already holds that experience's data;
    the training set built again from it must be the one the uninterrupted run trained on."""
    stream = class_incremental(small_data, 3)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,))
    strategy = STRATEGIES[name](**settings)
    strategy.setup(StrategyContext(stream, 0))
    strategy.before_experience(model, stream[0])
    strategy.training_set(stream[0])
    strategy.after_experience(model, stream[0])
    strategy.before_experience(model, stream[1])
    first = strategy.training_set(stream[1])
    state = copy.deepcopy(strategy.state_dict())  # what a checkpoint inside experience 1 holds

    resumed = STRATEGIES[name](**settings)
    resumed.setup(StrategyContext(stream, 0))
    resumed.load_state_dict(state, model)
    resumed.before_experience(model, stream[1])
    again = resumed.training_set(stream[1])
    assert torch.equal(again.x, first.x) and torch.equal(again.y, first.y)
    assert resumed.memory_size() == strategy.memory_size()
