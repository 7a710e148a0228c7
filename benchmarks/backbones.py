"""Cost of one training step of each built-in image model on the CPU: FLOPs and time per image.

    python benchmarks/backbones.py [--rounds 14]

For the reduced ResNet-18 (``nf`` 20 and 64), the CIFAR ResNet-32 and, for scale, the default ``cnn``
and ``mlp``, on 1x28x28 (MNIST, Fashion-MNIST) and 3x32x32 (CIFAR) batches of 32 and 128 with 10
classes, in training mode: the FLOPs per image that ``torch.utils.flop_counter.FlopCounterMode``
counts (convolutions and matrix products; norms, activations and pooling are not counted) for the
forward pass and for forward plus backward, and the time per image of one step (forward,
cross-entropy, backward) with 1 and 2 threads. A second table times the ResNets on 1x28x28 batches
of 128 with one thread in the four combinations of memory format (contiguous, ``channels_last``) and
precision (fp32, bf16 autocast).

On a shared machine another process's load only ever adds time, so each figure is the minimum over
``--rounds`` timed steps, and the rounds go over every configuration in turn (after one untimed
warm-up round) so that a busy spell hits one step of each rather than every step of one. With one
thread all the work runs on the calling thread, whose CPU time (``time.thread_time``) does not count
the time the operating system gave to other processes; both it and the wall time are printed.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lifelong.models import cnn, mlp, resnet18, resnet32

MODELS: dict[str, Callable[[tuple[int, ...]], nn.Module]] = {
    "resnet18 nf=20": lambda shape: resnet18(shape, 10, nf=20),
    "resnet18 nf=64": lambda shape: resnet18(shape, 10, nf=64),
    "resnet32": lambda shape: resnet32(shape, 10),
    "cnn (32, 64)": lambda shape: cnn(shape, 10),
    "mlp 256-256": lambda shape: mlp(shape, 10),
}
RESNETS = ("resnet18 nf=20", "resnet18 nf=64", "resnet32")
SHAPES = ((1, 28, 28), (3, 32, 32))
BATCH_SIZES = (32, 128)
THREADS = (1, 2)


@dataclass
class Timing:
    """One configuration's step and the least wall and thread-CPU seconds per image seen so far."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    threads: int
    bf16: bool = False
    wall: float = float("inf")
    cpu: float = float("inf")

    def measure(self) -> None:
        torch.set_num_threads(self.threads)
        wall, cpu = time.perf_counter(), time.thread_time()
        step(self.model, self.x, self.y, self.bf16)
        self.cpu = min(self.cpu, (time.thread_time() - cpu) / len(self.x))
        self.wall = min(self.wall, (time.perf_counter() - wall) / len(self.x))


def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool = False) -> None:
    model.zero_grad(set_to_none=True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x), y)
    loss.backward()


def flops_per_image(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs per image."""
    with FlopCounterMode(display=False) as forward:
        model(x)
    with FlopCounterMode(display=False) as both:
        step(model, x, y)
    return forward.get_total_flops() / len(x), both.get_total_flops() / len(x)


def batch(shape: tuple[int, ...], size: int, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(size, *shape)
    return x.to(memory_format=torch.channels_last) if channels_last else x, torch.randint(0, 10, (size,))


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=14)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows, timings = {}, {}
    for name, factory in MODELS.items():
        for shape in SHAPES:
            model = factory(shape).train()
            rows[name, shape] = (sum(p.numel() for p in model.parameters()), *flops_per_image(model, *batch(shape, 32)))
            for threads in THREADS:
                for size in BATCH_SIZES:
                    timings[name, shape, threads, size] = Timing(model, *batch(shape, size), threads)
            if name in RESNETS and shape == SHAPES[0]:
                last = copy.deepcopy(model).to(memory_format=torch.channels_last)
                for bf16 in (False, True):
                    timings[name, "contiguous", bf16] = Timing(model, *batch(shape, 128), 1, bf16)
                    timings[name, "channels_last", bf16] = Timing(last, *batch(shape, 128, True), 1, bf16)
    load = os.getloadavg()[0]
    for round_index in range(args.rounds + 1):  # round 0 warms up: allocations and kernel selection
        for timing in timings.values():
            timing.measure()
        if round_index == 0:
            for timing in timings.values():
                timing.wall = timing.cpu = float("inf")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, training mode, 10 classes, minimum of {args.rounds} "
          f"rounds; load average {load:.1f} before and {os.getloadavg()[0]:.1f} after\n")
    print("| model | input | parameters | MFLOPs/image forward | MFLOPs/image fwd+bwd "
          "| ms/image 1 thread CPU, batch 32 | 128 | 1 thread wall, batch 32 | 128 | 2 threads wall, batch 32 | 128 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (name, shape), (parameters, forward, both) in rows.items():
        one = [timings[name, shape, 1, size] for size in BATCH_SIZES]
        two = [timings[name, shape, 2, size] for size in BATCH_SIZES]
        cells = [ms(t.cpu) for t in one] + [ms(t.wall) for t in one] + [ms(t.wall) for t in two]
        print(f"| {name} | {'x'.join(map(str, shape))} | {parameters:,} | {forward / 1e6:.1f} | {both / 1e6:.1f} | "
              + " | ".join(cells) + " |")
    print("\n1x28x28, batch 128, 1 thread: ms/image of thread CPU time (wall time)\n")
    print("| model | fp32 | fp32 channels_last | bf16 autocast | bf16 autocast channels_last |")
    print("|---|---|---|---|---|")
    for name in RESNETS:
        cells = [timings[name, layout, bf16] for bf16 in (False, True) for layout in ("contiguous", "channels_last")]
        print(f"| {name} | " + " | ".join(f"{ms(t.cpu)} ({ms(t.wall)})" for t in cells) + " |")


if __name__ == "__main__":
    main()
