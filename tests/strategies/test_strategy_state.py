import copy
import io

import pytest
import torch

from lifelong import OptimConfig, class_incremental, mlp, train
from lifelong.strategies import STRATEGIES

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
    restored.setup(stream, seed=1)  # a different seed: everything learned must come from the state
    restored.load_state_dict(state, copy.deepcopy(model))
    assert same(restored.state_dict(), strategy.state_dict())
    test = stream[2].test
    assert torch.equal(restored.predict(model, test.x, test.task), strategy.predict(model, test.x, test.task))
    batch = stream[2].train.batch()
    assert restored.observe(model, batch).item() == pytest.approx(strategy.observe(model, batch).item())
