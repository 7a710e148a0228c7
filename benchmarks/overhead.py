"""Runner overhead against a hand-written PyTorch loop doing the same work.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py [--repeats 7]

For `naive` and `er` on class-incremental digits (5 x 2 classes, MLP 256-256, SGD, batch 16, 5
epochs), the same model initialisation, the same batches (tensor slicing in the same seeded order),
the same steps and the same evaluations after each experience are run once through
``lifelong.train`` and once through a plain loop written here, as interleaved pairs (which of the two
goes first alternates), several times. Prints the median wall time of each, the median of the
per-pair ratios (each pair ran under the same machine conditions) and the ratio of the minimum times
(noise from a shared machine only ever adds time, so the minimum is the least disturbed estimate).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lifelong import ER, Naive, OptimConfig, class_incremental, digits, mlp, train
from lifelong.data.loader import epoch_order

OPTIM = OptimConfig(lr=0.03, momentum=0.9, batch_size=16, epochs=5)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = int((model(x).argmax(1) == y).sum())
    model.train()
    return correct / len(y)


def plain_loop(stream, seed: int, replay: bool, buffer_size: int = 200) -> list[list[float]]:
    """What a user would write by hand: slicing, cross-entropy, SGD, optional reservoir replay."""
    torch.manual_seed(seed)
    model = mlp(stream.input_shape, stream.n_classes)
    tests = [(e.test.x, e.test.y) for e in stream]
    [accuracy(model, x, y) for x, y in tests]
    memory_x = torch.zeros(buffer_size, *stream.input_shape)
    memory_y = torch.zeros(buffer_size, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    seen = 0
    rows = []
    for index, experience in enumerate(stream):
        optimizer = torch.optim.SGD(model.parameters(), lr=OPTIM.lr, momentum=OPTIM.momentum)
        x_all, y_all = experience.train.x, experience.train.y
        model.train()
        for epoch in range(OPTIM.epochs):
            order = epoch_order(len(y_all), seed, index, epoch)
            for begin in range(0, len(order), OPTIM.batch_size):
                batch = order[begin:begin + OPTIM.batch_size]
                x, y = x_all[batch], y_all[batch]
                inputs, targets = x, y
                if replay and seen:
                    size = min(seen, buffer_size)
                    pick = torch.randperm(size, generator=generator)[: len(y)]
                    inputs = torch.cat([x, memory_x[pick]])
                    targets = torch.cat([y, memory_y[pick]])
                loss = F.cross_entropy(model(inputs), targets)
                if replay:
                    slots, rows_in = [], []
                    for row, u in enumerate(torch.rand(len(y), generator=generator).tolist()):
                        position = seen + row
                        slot = position if position < buffer_size else int(u * (position + 1))
                        if slot < buffer_size:
                            slots.append(slot)
                            rows_in.append(row)
                    seen += len(y)
                    if slots:
                        memory_x[torch.tensor(slots)] = x[torch.tensor(rows_in)]
                        memory_y[torch.tensor(slots)] = y[torch.tensor(rows_in)]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss.item()
        rows.append([accuracy(model, x, y) for x, y in tests])
    return rows


def runner_loop(stream, seed: int, replay: bool) -> list[list[float]]:
    torch.manual_seed(seed)
    model = mlp(stream.input_shape, stream.n_classes)
    strategy = ER(buffer_size=200) if replay else Naive()
    return train(stream, model, strategy, OPTIM, seed=seed).matrix.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    stream = class_incremental(digits(), 5)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.repeats} interleaved repeats")
    print()
    print("| strategy | plain loop (s, median) | runner (s, median) | runner / plain, median of pairs "
          "| runner / plain, minimum times |")
    print("|---|---|---|---|---|")
    for name, replay in (("naive", False), ("er", True)):
        plain_loop(stream, 0, replay)  # warm-up: first optimizer step imports torch internals
        runner_loop(stream, 0, replay)
        plain_times, runner_times = [], []
        for repeat in range(args.repeats):
            pair = [(plain_times, plain_loop), (runner_times, runner_loop)]
            for times, fn in pair if repeat % 2 == 0 else pair[::-1]:
                started = time.perf_counter()
                fn(stream, repeat, replay)
                times.append(time.perf_counter() - started)
        ratio = statistics.median(r / p for r, p in zip(runner_times, plain_times, strict=True))
        plain, runner = statistics.median(plain_times), statistics.median(runner_times)
        fastest = min(runner_times) / min(plain_times)
        print(f"| {name} | {plain:.3f} | {runner:.3f} | {ratio:.3f} | {fastest:.3f} |")


if __name__ == "__main__":
    main()
