"""Data-parallel training end to end: two gloo ranks on one machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lifelong import OptimConfig, ResultsStore, class_incremental, mlp, synthetic, train
from lifelong.config import load_config
from lifelong.errors import ConfigError
from lifelong.experiment import run_config
from lifelong.strategies import ER, EWC
from lifelong.world import World


def _train_rank(rank: int, init_file: str, results: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    world = World(rank, 2)
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(0.0)
    layer(torch.tensor([[1.0, 2.0]]) * (rank + 1)).sum().backward()  # rank 0: x = (1, 2); rank 1: (2, 4)
    world.average_gradients(layer.parameters())
    averaged = world.average({"f": torch.tensor([float(rank + 1)])}, weight=1 + 2 * rank)
    collectives = (layer.weight.grad.clone(), layer.bias.grad.clone(), averaged["f"].clone())
    stream = class_incremental(synthetic(n_classes=6, n_features=8, n_per_class=40, spread=0.5), 3)
    outcome = {}
    for name, strategy in (("er", ER(buffer_size=31)), ("ewc", EWC(lam=10.0))):
        torch.manual_seed(0)
        model = mlp((8,), 6, hidden=(16,))
        result = train(stream, model, strategy, OptimConfig(epochs=2, batch_size=8), seed=0, world=World(rank, 2))
        outcome[name] = {"matrix": result.matrix, "params": [p.detach().clone() for p in model.parameters()]}
        if name == "er":
            outcome[name]["buffer"] = {k: v.clone() for k, v in strategy.buffer.contents().items()}
        else:
            outcome[name]["fisher"] = {k: v.clone() for k, v in strategy.importance.items()}
    results[rank] = {**outcome, "collectives": collectives}
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    results = mp.Manager().dict()
    mp.spawn(_train_rank, args=(str(tmp_path_factory.mktemp("dist") / "init"), results), nprocs=2, join=True)
    return dict(results)


def test_gradients_and_estimates_are_averaged_over_ranks(two_ranks) -> None:
    for rank in (0, 1):
        weight_grad, bias_grad, estimate = two_ranks[rank]["collectives"]
        assert torch.allclose(weight_grad, torch.tensor([[1.5, 3.0]]))  # mean of (1, 2) and (2, 4)
        assert torch.allclose(bias_grad, torch.tensor([1.0]))
        assert torch.allclose(estimate, torch.tensor([(1 * 1 + 2 * 3) / 4]))  # weighted by shard sizes 1 and 3


def test_ranks_hold_identical_models_fisher_and_matrices(two_ranks) -> None:
    for name in ("er", "ewc"):
        assert (two_ranks[0][name]["matrix"] == two_ranks[1][name]["matrix"]).all()
        for a, b in zip(two_ranks[0][name]["params"], two_ranks[1][name]["params"], strict=True):
            assert torch.equal(a, b)
    fisher = [two_ranks[r]["ewc"]["fisher"] for r in (0, 1)]
    assert fisher[0].keys() == fisher[1].keys()
    assert all(torch.equal(fisher[0][k], fisher[1][k]) and fisher[0][k].abs().sum() > 0 for k in fisher[0])


def test_buffer_union_has_the_configured_size_and_covers_every_experience(two_ranks) -> None:
    buffers = [two_ranks[r]["er"]["buffer"] for r in (0, 1)]
    assert [len(b["y"]) for b in buffers] == [16, 15]  # 31 split over two ranks
    union_tasks = torch.cat([b["task"] for b in buffers])
    assert set(union_tasks.tolist()) == {0, 1, 2}
    # each rank replays from its own shard: the two memories hold different samples
    assert not torch.equal(buffers[0]["x"][:15], buffers[1]["x"])


def test_strategy_without_distributed_support_is_refused() -> None:
    from lifelong.strategies.base import Strategy

    class Local(Strategy):
        def observe(self, model, batch):  # pragma: no cover - refused before training
            raise AssertionError

    stream = class_incremental(synthetic(n_classes=4, n_features=4, n_per_class=10), 2)
    with pytest.raises(ConfigError, match="cannot run data-parallel"):
        train(stream, mlp((4,), 4), Local(), world=World(0, 2))


def single_process_reference(tmp_path, strategy: str, extra: list[str]) -> float:
    """The same job in this process, with the global batch in one process (the default 16)."""
    config = load_config(None, ["run.progress=false", "run.checkpoint=false", f"strategy.name={strategy}",
                                *[e for e in extra if e != "--set"]])
    return run_config(config, store=ResultsStore(tmp_path / "single.db")).metrics["final_accuracy"]


def _torchrun(tmp_path, strategy: str, extra: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "lifelong", "run", "--db", str(tmp_path / "runs.db"), "--no-checkpoint",
               "--set", f"strategy.name={strategy}", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


@pytest.mark.parametrize("strategy", ["naive", "er"])
def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tmp_path, strategy) -> None:
    # The default global batch of 16: 8 per rank on two ranks against 16 in one process. (At a global
    # batch of 32 naive sits on a tipping point: 45 steps barely pull the head off the old classes, and
    # the last experience's accuracy jumps between ~0.5 and ~0.9 with any change in float summation
    # order, distributed or not.)
    extra = [] if strategy == "naive" else ["--set", "strategy.buffer_size=200"]
    done = _torchrun(tmp_path, strategy, ["--set", "optim.batch_size=8", "--set", "optim.base_batch_size=16",
                                          *extra])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("accuracy matrix") == 1  # rank 0 alone prints
    runs = ResultsStore(tmp_path / "runs.db").runs()
    assert len(runs) == 1 and runs[0].status == "finished" and runs[0].metrics["world_size"] == 2
    reference = single_process_reference(tmp_path, strategy, extra)
    assert abs(runs[0].metrics["final_accuracy"] - reference) <= 0.05
    assert runs[0].metrics["effective_lr"] == pytest.approx(0.03)  # lr given at the global batch of 16
