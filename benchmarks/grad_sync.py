"""One data-parallel training step with the gradient all-reduce after backward against overlapping it.

    OMP_NUM_THREADS=1 python benchmarks/grad_sync.py [--steps 30] [--hidden 1024 --layers 3 --batch 64]

Two gloo processes on this machine train the same MLP (784 -> hidden x layers -> 10, about 2.9 M
parameters, 11 MB of gradients at the defaults) on random data; each step is forward, backward with
the gradient averaging of :mod:`lifelong.runner.gradsync`, and an SGD step. The variants run in turn,
step by step (so a busy moment of a shared machine hits them alike): ``after`` (one all-reduce after
backward), ``overlap-25MB`` (the default bucket, here one bucket: no overlap possible) and
``overlap-1MB`` (a bucket per layer and a half, started as each is ready). Prints rank 0's median and
minimum step milliseconds of each and checks that every variant leaves the same weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lifelong.runner.gradsync import AllReduceAfter, Backward, OverlappedAllReduce
from lifelong.world import World


def _model(hidden: int, layers: int) -> nn.Module:
    torch.manual_seed(0)
    widths = [784, *[hidden] * layers]
    blocks = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*blocks, nn.Linear(hidden, 10))


def _rank(rank: int, init: str, args: argparse.Namespace, out: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2)
    world = World(rank, 2)
    variants: dict[str, tuple[nn.Module, Backward]] = {}
    for name, bucket in (("after", None), ("overlap-25MB", 25.0), ("overlap-1MB", 1.0)):
        model = _model(args.hidden, args.layers)
        variants[name] = (model, AllReduceAfter(world) if bucket is None else OverlappedAllReduce(world, model, bucket))
    optimizers = {name: torch.optim.SGD(model.parameters(), lr=0.01) for name, (model, _) in variants.items()}
    generator = torch.Generator().manual_seed(rank)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for step in range(args.steps + 3):
        x = torch.randn(args.batch, 784, generator=generator)
        y = torch.randint(0, 10, (args.batch,), generator=generator)
        for name, (model, backward) in variants.items():
            dist.barrier()
            started = time.perf_counter()
            optimizers[name].zero_grad(set_to_none=True)
            backward(nn.functional.cross_entropy(model(x), y), list(model.parameters()))
            optimizers[name].step()
            if step >= 3:  # warm-up steps left out
                times[name].append(time.perf_counter() - started)
    reference = list(variants["after"][0].parameters())
    same = all(torch.equal(p, q) for model, _ in variants.values() for p, q in zip(model.parameters(), reference))
    if rank == 0:
        out.update({name: (statistics.median(t) * 1e3, min(t) * 1e3) for name, t in times.items()}, same=same,
                   buckets={name: len(b.buckets) for name, (_, b) in variants.items()
                            if isinstance(b, OverlappedAllReduce)})
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    out = mp.Manager().dict()
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_rank, args=(os.path.join(folder, "init"), args, out), nprocs=2, join=True)
    print(f"buckets: {out['buckets']}; same weights after every variant: {out['same']}")
    base = out["after"][0]
    for name in ("after", "overlap-25MB", "overlap-1MB"):
        median, low = out[name]
        print(f"{name:14s} median {median:7.2f} ms  min {low:7.2f} ms  ({median / base - 1:+.1%} vs after)")


if __name__ == "__main__":
    main()
