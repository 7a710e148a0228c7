"""Gradient communication overlapping backward (bucketed all-reduce from post-accumulate-grad hooks) and
FSDP2 sharding, on two gloo ranks against one process at the same global batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from lifelong import OptimConfig, class_incremental, mlp, synthetic, train
from lifelong.errors import ConfigError
from lifelong.runner.distributed import Parallelism
from lifelong.runner.gradsync import AllReduceAfter, Backward, OverlappedAllReduce, gradient_sync
from lifelong.runner.observers import Observer, TrainState
from lifelong.runner.sharding import blocks, full_state_dict
from lifelong.strategies import STRATEGIES
from lifelong.world import World
from tests.runner.test_distributed_training import spawn_two_ranks
from tests.runner.test_text_runs import stream as text_stream
from tests.runner.test_text_runs import tiny_gpt

OPTIM = {"epochs": 2, "batch_size": 8, "base_batch_size": 16, "momentum": 0.9}
"""8 samples per rank; the one-process reference trains on batches of 16 (the same samples per step)."""
TINY = 1e-6
"""``bucket_mb`` under any parameter's size: every parameter is a bucket of its own."""


class Losses(Observer):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_step(self, state: TrainState) -> None:
        self.values.append(state.loss)


class Net(nn.Module):
    """Three layers, a layer never used and one parameter that only rank 0's loss uses (both registered
    first, so that their buckets come last in the reverse order and do not hold the others back)."""

    def __init__(self) -> None:
        super().__init__()
        self.rank_zero_only = nn.Parameter(torch.ones(2))
        self.unused = nn.Linear(6, 6)
        self.first, self.second, self.last = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 2)

    def forward(self, x: torch.Tensor, rank: int) -> torch.Tensor:
        out = self.last(torch.relu(self.second(torch.relu(self.first(x)))))
        return (out * self.rank_zero_only).sum() if rank == 0 else out.sum()


def _stream():
    return class_incremental(synthetic(n_classes=6, n_features=8, n_per_class=40, spread=0.5), 3)


def _run(strategy: str, parallel: Parallelism | None, world: World | None, batch_size: int = 8) -> dict:
    """A run's accuracy matrix, its loss at every step and its trained weights (gathered when sharded)."""
    losses = Losses()
    torch.manual_seed(0)
    model = mlp((8,), 6, hidden=(32, 32))
    settings = {"buffer_size": 20} if strategy == "er" else {}
    result = train(_stream(), model, STRATEGIES[strategy](**settings),
                   OptimConfig(**{**OPTIM, "batch_size": batch_size}), seed=0, world=world, parallel=parallel,
                   observers=[losses])
    state = {k: v.clone() for k, v in full_state_dict(model).items()}
    return {"matrix": result.matrix, "losses": losses.values, "state": state}


def _text_run(parallel: Parallelism | None, world: World | None, batch_size: int = 8) -> dict:
    """A two-domain text run of a small GPT (naive): its loss matrix and its loss at every step."""
    losses = Losses()
    text = text_stream()
    torch.manual_seed(0)
    result = train(text, tiny_gpt(text), STRATEGIES["naive"](),
                   OptimConfig(name="adam", lr=0.01, epochs=1, batch_size=batch_size, base_batch_size=16), seed=0,
                   world=world, parallel=parallel, observers=[losses])
    return {"matrix": result.matrix, "losses": losses.values}


def _hooks(rank: int) -> dict:
    """The overlapped sync on a hand-made model against the plain all-reduce, and the order of events."""
    world = World(rank, 2)
    x = torch.arange(8.0).view(2, 4) * (rank + 1) / 8
    torch.manual_seed(0)
    net = Net()
    reference = Net()
    reference.load_state_dict(net.state_dict())
    params = list(net.parameters())
    names = {id(p): name for name, p in net.named_parameters()}
    events: list[str] = []
    launch = dist.all_reduce

    def recorded(tensor, *args, **kwargs):
        events.append(f"launch {tensor.numel()}")
        return launch(tensor, *args, **kwargs)

    sync = OverlappedAllReduce(world, net, TINY)
    dist.all_reduce = recorded
    try:
        sync(net(x, rank), params)  # builds the buckets and registers their hooks
        launched = len(events)
        net.zero_grad(set_to_none=True)
        net(x, rank).backward()  # a backward of a strategy's own, outside the runner's: never communicated
        local = net.rank_zero_only.grad  # None on rank 1
        strategy_launches = len(events) - launched
        for p in params:
            p.register_post_accumulate_grad_hook(lambda p: events.append(f"grad {names[id(p)]}"))
        events.clear()
        net.zero_grad(set_to_none=True)
        sync(net(x, rank), params)
        order = list(events)
    finally:
        dist.all_reduce = launch
    reference(x, rank).backward()
    world.average_gradients(reference.parameters())
    averaged = {name: (p.grad.clone(), q.grad.clone()) for (name, p), q in
                zip(net.named_parameters(), reference.parameters(), strict=True)}
    net.first.weight.requires_grad_(False)  # a strategy freezes a part: the buckets are rebuilt without it
    net.zero_grad(set_to_none=True)
    sync(net(x, rank), params)
    rebuilt = (len(sync.buckets), net.first.weight.grad)
    sync.close()
    return {"averaged": averaged, "launched": launched, "strategy_launches": strategy_launches, "local": local,
            "events": order, "rebuilt": rebuilt}


def _rank(rank: int, init_file: str, results: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    world = World(rank, 2)
    out = {"hooks": _hooks(rank)}
    out["overlap"] = _run("naive", Parallelism(bucket_mb=TINY), world)
    out["after"] = _run("naive", Parallelism(overlap_grad_sync=False), world)
    out["fsdp"] = _run("naive", Parallelism(shard="fsdp"), world)
    out["er"] = _run("er", None, world)
    out["fsdp_er"] = _run("er", Parallelism(shard="fsdp"), world)
    out["text"] = _text_run(None, world)
    out["fsdp_text"] = _text_run(Parallelism(shard="fsdp"), world)
    try:
        train(_stream(), mlp((8,), 6), STRATEGIES["ewc"](), world=world, parallel=Parallelism(shard="fsdp"))
    except ConfigError as error:
        out["refused"] = str(error)
    results[rank] = out
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    return spawn_two_ranks(_rank, tmp_path_factory.mktemp("overlap"))


@pytest.fixture(scope="module")
def one_process() -> dict:
    return _run("naive", None, None, batch_size=16)


def test_bucketed_hooks_give_exactly_the_averaged_gradients(two_ranks) -> None:
    for rank in (0, 1):
        hooks = two_ranks[rank]["hooks"]
        for name, (overlapped, plain) in hooks["averaged"].items():
            assert torch.equal(overlapped, plain), name
        averaged = {name: grads[0] for name, grads in hooks["averaged"].items()}
        # d(sum of outputs)/d(last.bias) is the batch size, 2, on each rank (rank 0 weighs the outputs by
        # rank_zero_only, ones): the average is 2
        assert averaged["last.bias"].tolist() == [2.0, 2.0]
        assert torch.equal(averaged["unused.weight"], torch.zeros(6, 6))  # zero on both ranks
        # rank 1 never uses rank_zero_only: the average is half of rank 0's own gradient
        assert torch.equal(averaged["rank_zero_only"], two_ranks[0]["hooks"]["local"] / 2)
        assert averaged["rank_zero_only"].abs().sum() > 0


def test_communication_starts_before_backward_ends(two_ranks) -> None:
    for rank in (0, 1):
        hooks = two_ranks[rank]["hooks"]
        assert hooks["launched"] == 9  # one bucket per parameter (4 layers x 2 + rank_zero_only), one launch each
        assert hooks["strategy_launches"] == 0  # the hooks are armed only around the runner's backward
        events = hooks["events"]
        launches = [i for i, e in enumerate(events) if e.startswith("launch")]
        assert len(launches) == 9
        # buckets in reverse registration order: the last layer's launched while the first layer's
        # gradients are still to come
        assert launches[0] < events.index("grad last.weight") + 1 < events.index("grad first.weight")
        assert launches[4] < events.index("grad first.weight")
        assert "grad unused.weight" not in events  # never arrives; reduced as zero when backward ends
        assert launches[-3:] == [len(events) - 3, len(events) - 2, len(events) - 1]  # unused's 2, rank_zero_only's


def test_buckets_are_rebuilt_when_a_parameter_is_frozen(two_ranks) -> None:
    count, grad = two_ranks[0]["hooks"]["rebuilt"]
    assert count == 8 and grad is None


def test_overlap_matches_the_single_all_reduce_and_one_process(two_ranks, one_process) -> None:
    for rank in (0, 1):
        after = two_ranks[rank]["after"]
        run = two_ranks[rank]["overlap"]
        assert np.array_equal(run["matrix"], after["matrix"])
        assert run["losses"] == after["losses"]
        assert all(torch.equal(run["state"][k], after["state"][k]) for k in after["state"])
    single = one_process
    mean = (np.asarray(two_ranks[0]["overlap"]["losses"]) + np.asarray(two_ranks[1]["overlap"]["losses"])) / 2
    assert len(mean) == len(single["losses"]) == 3 * 2 * 4  # 3 experiences of 2 epochs of 4 steps
    np.testing.assert_allclose(mean, single["losses"], atol=1e-5)
    np.testing.assert_allclose(two_ranks[0]["overlap"]["matrix"], single["matrix"], atol=1e-5)


def test_fsdp_matches_one_process(two_ranks, one_process) -> None:
    runs = two_ranks[0]["fsdp"], two_ranks[1]["fsdp"]
    mean = (np.asarray(runs[0]["losses"]) + np.asarray(runs[1]["losses"])) / 2
    np.testing.assert_allclose(mean, one_process["losses"], atol=1e-5)
    np.testing.assert_allclose(runs[0]["matrix"], one_process["matrix"], atol=1e-5)
    for k, value in one_process["state"].items():  # the gathered full weights, the same on both ranks
        torch.testing.assert_close(runs[0]["state"][k], value, atol=1e-5, rtol=0)
        assert torch.equal(runs[0]["state"][k], runs[1]["state"][k])


def test_fsdp_replay_matches_the_unsharded_data_parallel_run(two_ranks) -> None:
    # ER draws from each rank's own half of the memory, so it is compared with the same two ranks unsharded
    for rank in (0, 1):
        sharded, plain = two_ranks[rank]["fsdp_er"], two_ranks[rank]["er"]
        np.testing.assert_allclose(sharded["losses"], plain["losses"], atol=1e-5)
        np.testing.assert_allclose(sharded["matrix"], plain["matrix"], atol=1e-5)
        assert sharded["matrix"][-1].mean() > 0.5  # it learned


def test_fsdp_refuses_strategies_that_read_whole_parameters(two_ranks) -> None:
    message = two_ranks[0]["refused"]
    assert "run.shard='fsdp'" in message and "'EWC'" in message and "\n" not in message


def test_sync_choice_and_settings() -> None:
    model = nn.Linear(2, 2)
    assert type(gradient_sync(World(), model, Parallelism())) is Backward
    assert type(gradient_sync(World(0, 2), model, Parallelism(shard="fsdp"))) is Backward  # FSDP reduces itself
    assert type(gradient_sync(World(0, 2), model, Parallelism(overlap_grad_sync=False))) is AllReduceAfter
    assert type(gradient_sync(World(0, 2), model, Parallelism())) is OverlappedAllReduce
    with pytest.raises(ConfigError, match="run.bucket_mb"):
        Parallelism(bucket_mb=0)
    with pytest.raises(ConfigError, match="run.shard"):
        Parallelism(shard="zero")


def test_fsdp_blocks_policy() -> None:
    model = mlp((8,), 6, hidden=(16, 16))
    # the backbone's layers with parameters; the head stays with the root
    assert [type(b).__name__ for b in blocks(model)] == ["Linear", "Linear"]
    stack = nn.Sequential(nn.Embedding(5, 4), nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)]), nn.ReLU())
    assert [type(b).__name__ for b in blocks(stack)] == ["Embedding", "Linear", "Linear"]


def test_a_text_run_on_two_ranks_matches_one_process(two_ranks) -> None:
    """A language model under data parallelism (overlapped gradient sync) and sharded with FSDP2: the
    loss matrix, whose validation losses are summed over the ranks' shards of every test set, and the
    training losses (each rank's mean over its half of the batch) within 1e-5 of one process at the same
    global batch of 16 windows."""
    reference = _text_run(None, None, batch_size=16)
    for key in ("text", "fsdp_text"):
        runs = [two_ranks[rank][key] for rank in (0, 1)]
        assert np.allclose(runs[0]["matrix"], reference["matrix"], atol=1e-5), key
        assert np.array_equal(runs[0]["matrix"], runs[1]["matrix"])
        mean = (np.asarray(runs[0]["losses"]) + np.asarray(runs[1]["losses"])) / 2
        assert np.allclose(mean, reference["losses"], atol=1e-5), key
    assert reference["matrix"][1, 0] > reference["matrix"][0, 0]  # the first domain forgotten, as in one process
