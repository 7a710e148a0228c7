"""The reference benchmark on a GPU: data, augmentation and training on the device, bf16 and torch.compile
on and off, throughput and the runner's cost against a hand-written loop.

    apt-get install -y dataset-fashion-mnist
    python benchmarks/gpu_check.py > docs/results/gpu.md

Where no CUDA device is present it says so and exits. Otherwise, on Split Fashion-MNIST (5 x 2 classes,
the full training set, moved to the GPU once), a reduced ResNet-18 (nf=20) with the ``fashion_mnist``
augmentation applied on the GPU, SGD batch 128 for one epoch per experience:

* training samples per second of naive and ER (memory 500) in fp32 and bf16, without and with
  ``torch.compile`` (its warm-up reported apart);
* the runner against a hand-written loop doing naive's work (the same batches, augmentation, model
  and optimizer) as interleaved pairs: median time ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lifelong import OptimConfig, train
from lifelong.data import class_incremental
from lifelong.data.augment import PRESETS
from lifelong.data.files import fashion_mnist
from lifelong.data.loader import epoch_order
from lifelong.models.resnet import resnet18
from lifelong.strategies import ER, Naive

PATH = "/usr/share/datasets/fashion-mnist"
AUGMENT = PRESETS["fashion_mnist"]


def runner(stream, strategy, precision: str, compile: bool) -> tuple[float, float, float]:
    """(samples per second, training seconds, compile seconds) of one run through the runner."""
    torch.manual_seed(0)
    model = resnet18(stream.input_shape, stream.n_classes, nf=20)
    optim = OptimConfig(lr=0.05, momentum=0.9, batch_size=128, epochs=1, precision=precision)
    result = train(stream, model, strategy, optim, seed=0, device="cuda", augment=AUGMENT, compile=compile)
    seconds = sum(c.seconds for c in result.costs)
    return sum(c.samples for c in result.costs) / seconds, seconds, result.metrics.get("compile_seconds", 0.0)


def plain(stream) -> float:
    """Seconds of naive's training written by hand: the same batches, augmentation and optimizer."""
    torch.manual_seed(0)
    model = resnet18(stream.input_shape, stream.n_classes, nf=20).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    started = time.perf_counter()
    for index, experience in enumerate(stream):
        x, y = AUGMENT.normalize(experience.train.x.cuda()), experience.train.y.cuda()
        order = epoch_order(len(y), 0, index, 0).cuda()
        for begin in range(0, len(y), 128):
            batch = order[begin:begin + 128]
            loss = F.cross_entropy(model(AUGMENT(x[batch], generator)), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    print("# The reference benchmark on a GPU\n")
    print("`python benchmarks/gpu_check.py`\n")
    if not torch.cuda.is_available():
        print("No CUDA device on this machine: nothing was measured.")
        return
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    stream = class_incremental(fashion_mnist(PATH), 5)
    print("| strategy | precision | compile | samples/s | training s | compile s |")
    print("|---|---|---|---|---|---|")
    for name, make in (("naive", Naive), ("er (500)", lambda: ER(buffer_size=500))):
        for precision in ("fp32", "bf16"):
            for compiled in (False, True):
                rate, seconds, warm_up = runner(stream, make(), precision, compiled)
                print(f"| {name} | {precision} | {'on' if compiled else 'off'} | {rate:.0f} | {seconds:.1f} | "
                      f"{warm_up:.1f} |", flush=True)
    ratios = []
    for pair in range(args.pairs):  # which of the two goes first alternates
        if pair % 2:
            ours, hand = runner(stream, Naive(), "fp32", False)[1], plain(stream)
        else:
            hand, ours = plain(stream), runner(stream, Naive(), "fp32", False)[1]
        ratios.append(ours / hand)
    print(f"\nRunner / hand-written loop (naive, fp32, {args.pairs} interleaved pairs): median "
          f"{statistics.median(ratios):.3f} (each: {', '.join(f'{r:.3f}' for r in ratios)}).")


if __name__ == "__main__":
    main()
