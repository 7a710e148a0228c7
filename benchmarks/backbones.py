"""Cost of one training step of each built-in image model on the CPU: FLOPs and time per image.

    python benchmarks/backbones.py [--repeats 5] [--threads 1 2]

For the reduced ResNet-18 (``nf`` 20 and 64), the CIFAR ResNet-32 and, for scale, the default ``cnn``
and ``mlp``, on 1x28x28 (MNIST, Fashion-MNIST) and 3x32x32 (CIFAR) batches of 32 and 128 with 10
classes, in training mode: the FLOPs per image that ``torch.utils.flop_counter.FlopCounterMode``
counts (convolutions and matrix products; norms, activations and pooling are not counted) for the
forward pass and for forward plus backward, and the wall time per image of forward, cross-entropy
and backward with 1 and 2 threads: the minimum of ``--repeats`` timed steps after one warm-up step
(another process's load only ever adds time, so the minimum is the least disturbed estimate).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

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
SHAPES = ((1, 28, 28), (3, 32, 32))
BATCH_SIZES = (32, 128)


def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def flops_per_image(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs per image."""
    with FlopCounterMode(display=False) as forward:
        model(x)
    with FlopCounterMode(display=False) as both:
        step(model, x, y)
    return forward.get_total_flops() / len(x), both.get_total_flops() / len(x)


def seconds_per_image(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    step(model, x, y)  # warm-up: allocations and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(model, x, y)
        times.append(time.perf_counter() - start)
    return min(times) / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {args.repeats} timed steps (minimum), training mode, 10 classes\n")
    thread_columns = " | ".join(f"ms/image, batch {b}, {t} thread{'s' if t > 1 else ''}"
                                for t in args.threads for b in BATCH_SIZES)
    print(f"| model | input | parameters | MFLOPs/image forward | MFLOPs/image fwd+bwd | {thread_columns} |")
    print("|---|---|---|---|---|" + "---|" * (len(args.threads) * len(BATCH_SIZES)))
    for name, factory in MODELS.items():
        for shape in SHAPES:
            torch.manual_seed(0)
            model = factory(shape).train()
            x, y = torch.randn(BATCH_SIZES[0], *shape), torch.randint(0, 10, (BATCH_SIZES[0],))
            forward, both = flops_per_image(model, x, y)
            cells = []
            for threads in args.threads:
                torch.set_num_threads(threads)
                for batch_size in BATCH_SIZES:
                    x, y = torch.randn(batch_size, *shape), torch.randint(0, 10, (batch_size,))
                    cells.append(f"{1000 * seconds_per_image(model, x, y, args.repeats):.2f}")
            parameters = sum(p.numel() for p in model.parameters())
            print(f"| {name} | {'x'.join(map(str, shape))} | {parameters:,} | {forward / 1e6:.1f} | {both / 1e6:.1f} | "
                  + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
