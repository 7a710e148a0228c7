import io

import pytest
import torch

from lifelong import OptimConfig, train
from lifelong.data import class_incremental, domain_incremental, task_incremental
from lifelong.errors import ConfigError, LifelongError
from lifelong.models import mlp
from lifelong.strategies import Hypernetwork, Naive, Strategy
from lifelong.strategies.base import StrategyContext
from tests.runner.test_checkpoint_resume import resumed_and_reference

TINY = {"hidden": (8,), "chunk_size": 16, "embedding_dim": 4, "chunk_embedding_dim": 4}


def prepared(stream, experiences: int, **settings) -> tuple[Hypernetwork, torch.nn.Module]:
    """A hypernetwork strategy set up on ``stream`` with ``experiences`` experiences begun (no training)."""
    torch.manual_seed(0)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(8,))
    strategy = Hypernetwork(**{**TINY, **settings})
    strategy.setup(StrategyContext(stream, 0))
    for index in range(experiences):
        strategy.before_experience(model, stream[index])
    return strategy, model


def kept_entries(strategy: Hypernetwork) -> int:
    """Entries of the state's hypernetwork (chunk embeddings included), task embeddings and floating-point
    buffers of the begun tasks (running statistics; integer batch counters left out)."""
    state = strategy.state_dict()
    buffers = [b for kept in state["task_buffers"].values() for b in kept.values() if b.is_floating_point()]
    return sum(t.numel() for t in [*state["generator_net"].values(), *state["embeddings"].values(), *buffers])


def test_regularizer_is_zero_for_unchanged_outputs_and_matches_a_hand_computation(small_data) -> None:
    stream = task_incremental(small_data, 3)
    strategy, model = prepared(stream, 3, beta=0.5)
    assert strategy.target_tasks == [0, 1]
    assert strategy.regularizer().item() == 0.0
    n_weights = sum(p.numel() for p in model.parameters())  # 8 * 8 + 8 + 8 * 6 + 6 = 126
    assert n_weights == 126
    with torch.no_grad():  # every generated weight of every task moves by 0.1
        strategy.generator_net.mlp[-1].bias += 0.1
    # beta / T_old * sum over the 2 old tasks of 126 * 0.1² = 0.5 / 2 * 2 * 1.26
    assert strategy.regularizer().item() == pytest.approx(0.5 * 1.26, rel=1e-5)


def test_first_task_has_no_regularizer(small_data) -> None:
    strategy, _ = prepared(task_incremental(small_data, 3), 1)
    assert strategy.regularizer() is None


@pytest.mark.parametrize("settings", [{}, {"residual": False}, {"chunk_size": 0}, {"chunk_size": 1000}])
def test_generated_weights_have_the_model_shapes(small_data, settings) -> None:
    strategy, model = prepared(task_incremental(small_data, 3), 1, **settings)
    generated = strategy.generate([0])
    assert generated.shape == (1, 126)
    weights = strategy.weights(model, generated[0])
    assert {name: w.shape for name, w in weights.items()} == {name: p.shape for name, p in model.named_parameters()}


def test_residual_generation_starts_at_the_model_weights(small_data) -> None:
    stream = task_incremental(small_data, 3)
    strategy, model = prepared(stream, 1)
    x, task = stream[0].test.x, stream[0].test.task
    assert torch.equal(strategy.logits(model, x, task), Strategy.logits(strategy, model, x, task))


def test_the_state_keeps_the_hypernetwork_and_one_embedding_per_task(small_data) -> None:
    stream = task_incremental(small_data, 3)
    strategy, _ = prepared(stream, 1)
    # 126 weights in chunks of 16: 8 chunk embeddings of 4; MLP (4 + 4) -> 8 -> 16; 3 task embeddings of 4
    assert kept_entries(strategy) == 8 * 4 + (8 * 8 + 8) + (8 * 16 + 16) + 3 * 4
    unbuilt = Hypernetwork(**TINY)
    unbuilt.setup(StrategyContext(stream, 0))
    assert unbuilt.state_dict()["generator_net"] is None and unbuilt.memory_bytes() == 0


def test_only_the_hypernetwork_is_trained_and_each_task_gets_its_weights(small_data) -> None:
    stream = task_incremental(small_data, 3)
    torch.manual_seed(0)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(8,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strategy = Hypernetwork(**TINY)
    result = train(stream, model, strategy, OptimConfig(lr=0.05, epochs=2, batch_size=16), seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.matrix[-1].min() > 0.6
    embeddings = strategy.embeddings
    assert not torch.equal(embeddings["0"], embeddings["1"])


def test_state_dict_round_trip_restores_predictions_in_place(small_data) -> None:
    stream = task_incremental(small_data, 3)
    torch.manual_seed(0)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(8,))
    strategy = Hypernetwork(**TINY)
    train(stream, model, strategy, OptimConfig(lr=0.05, epochs=1, batch_size=16), seed=0)
    buffer = io.BytesIO()
    torch.save(strategy.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    x = torch.cat([e.test.x for e in stream])
    task = torch.cat([e.test.task for e in stream])
    fresh, _ = prepared(stream, 1)
    kept = [*fresh.generator_net.parameters(), *fresh.embeddings.values()]
    fresh.load_state_dict(state, model)
    assert all(a is b for a, b in zip(kept, [*fresh.generator_net.parameters(), *fresh.embeddings.values()],
                                      strict=True))
    assert fresh.parameter_groups(model)[0]["params"][-1] is fresh.embeddings["2"]  # the task in training
    assert fresh.tasks == strategy.tasks == [0, 1, 2] and fresh.target_tasks == [0, 1]
    assert torch.equal(fresh.logits(model, x, task), strategy.logits(model, x, task))
    assert torch.equal(fresh.targets, strategy.targets)
    unbuilt = Hypernetwork(**TINY)
    unbuilt.setup(StrategyContext(stream, 0))
    unbuilt.load_state_dict(state, model)
    assert torch.equal(unbuilt.predict(model, x, task), strategy.predict(model, x, task))


def test_a_stream_without_task_ids_is_refused(small_data) -> None:
    model = mlp((8,), 6, hidden=(8,))
    for stream in (class_incremental(small_data, 3), domain_incremental(small_data, 2)):
        with pytest.raises(LifelongError) as error:
            train(stream, model, Hypernetwork(**TINY), OptimConfig(epochs=1), seed=0)
        assert "\n" not in str(error.value)


def test_bad_settings_name_the_field() -> None:
    for settings, name in (({"beta": -1.0}, "beta"), ({"embedding_dim": 0}, "embedding_dim"),
                           ({"hidden": (8, 0)}, "hidden"), ({"chunk_size": -1}, "chunk_size"),
                           ({"chunk_embedding_dim": 0}, "chunk_embedding_dim")):
        with pytest.raises(ConfigError, match=f"strategy.{name} must be"):
            Hypernetwork(**settings)


def test_forgets_clearly_less_than_naive_on_permuted_digits(digits_data) -> None:
    """Four permutations of the digits, task ids given: naive fine-tuning overwrites the shared MLP,
    the hypernetwork keeps each task's weights (measured: forgetting 0.61 for naive, 0.19 here)."""
    naive, ours = beside_naive(digits_data, Hypernetwork(hidden=(32,), chunk_size=500, embedding_dim=8,
                                                         chunk_embedding_dim=8),
                               OptimConfig(lr=0.05, momentum=0.9, batch_size=32, epochs=3))
    assert naive["forgetting"] > 0.4
    assert ours["forgetting"] < naive["forgetting"] - 0.25
    assert ours["final_accuracy"] > naive["final_accuracy"] + 0.15


def beside_naive(digits_data, strategy: Hypernetwork, optim: OptimConfig) -> tuple[dict, dict]:
    """The metrics of naive fine-tuning and of ``strategy`` on four permutations of the digits with task
    ids, each from the same seeded MLP."""
    stream = domain_incremental(digits_data, 4, transform="permutation", task_aware=True, seed=1)
    results = []
    for method in (Naive(), strategy):
        torch.manual_seed(0)
        results.append(train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(32,)), method, optim,
                             seed=0).metrics)
    return results[0], results[1]


def test_resume_after_sigkill_equals_uninterrupted_run(small_data, tmp_path) -> None:
    """Killed inside the third experience and resumed from its checkpoint: the same accuracy matrix, bit
    for bit (the hypernetwork, the embeddings, the old tasks' targets and the optimizer kept across
    experiences, which must still step the restored parameters)."""
    stream = task_incremental(small_data, 3)
    _, _, reference, _ = resumed_and_reference(stream, "hypernetwork", tmp_path, {"hypernetwork": TINY})
    assert reference.matrix.diagonal().min() > 0.9  # each task learned through its generated weights


def test_each_task_keeps_its_own_normalisation_statistics(small_data) -> None:
    stream = task_incremental(small_data, 3)
    torch.manual_seed(0)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(8,), norm="batch")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    strategy = Hypernetwork(**TINY)
    result = train(stream, model, strategy, OptimConfig(lr=0.05, epochs=1, batch_size=16), seed=0)
    assert all(torch.equal(initial[k], v) for k, v in model.state_dict().items())
    means = [strategy.task_buffers[t]["backbone.2.running_mean"] for t in (0, 1, 2)]
    assert not torch.equal(means[0], means[1]) and not torch.equal(means[1], means[2])
    assert [int(strategy.task_buffers[t]["backbone.2.num_batches_tracked"]) for t in (0, 1, 2)] == \
        [cost.steps for cost in result.costs]
    # 8 + 8 + (8 * 8 + 8) + 8 * 6 + 6 = 142 weights: 9 chunks of 16; per task: 8 + 8 running statistics
    assert kept_entries(strategy) == 9 * 4 + (8 * 8 + 8) + (8 * 16 + 16) + 3 * 4 + 3 * 16
