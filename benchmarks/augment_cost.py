"""Cost of batched augmentation against the training step it feeds.

    OMP_NUM_THREADS=1 python benchmarks/augment_cost.py [--repeats 200]

For a batch of 128 CIFAR-sized (3x32x32) and 128 Fashion-MNIST-sized (1x28x28) images, times the
preset's crop and flip (``Augment.__call__``), its normalisation, both together, and one forward and
backward pass of the library's small CNN (``cnn``: two 3x3 convolutions of 32 and 64 channels with batch
norm, cross-entropy) on the same batch, on one CPU thread. Each figure is the minimum over rounds of
the mean over ``--repeats`` calls: noise from a shared machine only ever adds time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lifelong.data.augment import PRESETS
from lifelong.models.nets import cnn


def milliseconds(work: Callable[[], object], repeats: int, rounds: int = 7) -> float:
    """The least mean time of ``work`` over ``rounds`` rounds of ``repeats`` calls, in milliseconds."""
    work()
    means = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            work()
        means.append((time.perf_counter() - start) / repeats)
    return min(means) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| preset | batch | crop + flip (ms) | normalise (ms) | both (ms) | CNN forward + backward (ms) "
          "| augmentation / step |")
    print("|---|---|---|---|---|---|---|")
    for preset, shape in (("cifar10", (3, 32, 32)), ("fashion_mnist", (1, 28, 28))):
        augment = PRESETS[preset]
        x = torch.rand(128, *shape, generator=torch.Generator().manual_seed(0))
        y = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(1))
        generator = torch.Generator().manual_seed(2)
        model = cnn(shape, 10)

        def step() -> None:
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()

        crop_flip = milliseconds(lambda: augment(x, generator), args.repeats)
        normalise = milliseconds(lambda: augment.normalize(x), args.repeats)
        both = milliseconds(lambda: augment.normalize(augment(x, generator)), args.repeats)
        training = milliseconds(step, max(1, args.repeats // 10))
        print(f"| {preset} | 128 x {'x'.join(map(str, shape))} | {crop_flip:.3f} | {normalise:.3f} | {both:.3f} "
              f"| {training:.1f} | {both / training:.1%} |")


if __name__ == "__main__":
    main()
