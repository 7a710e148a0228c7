"""Where PSRD's and TAME's accuracy goes in the online benchmark (``benchmarks/online.py``, same settings): for
TAME, the steps at which it spawned or switched experts against the steps where the stream's experiences
start, how often the selector routes a test sample to the expert that trained its class, the accuracy with
that oracle routing instead, and the bytes it keeps; for PSRD, the accuracy within each experience's own
classes (task-incremental) beside the class-incremental one.

    OMP_NUM_THREADS=1 python benchmarks/online_experts.py --datasets digits,fashion_mnist_mlp --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from lifelong import ER, PSRD, TAME, train
from lifelong.data import class_incremental, digits
from lifelong.data.files import fashion_mnist
from lifelong.data.streams import Stream
from lifelong.models import mlp
from lifelong.protocol.seeds import parse_seeds

sys.path.insert(0, str(Path(__file__).parent))
from online import PATH, optim


def starts(stream: Stream, batch_size: int) -> list[int]:
    """The step at which each experience after the first starts (one pass in batches of ``batch_size``)."""
    steps, found = 0, []
    for experience in list(stream)[:-1]:
        steps += -(-len(experience.train) // batch_size)
        found.append(steps)
    return found


def tame_figures(stream: Stream, seed: int, memory: int) -> dict[str, object]:
    torch.manual_seed(seed)
    model = mlp(stream.input_shape, stream.n_classes)
    strategy = TAME(buffer_size=memory)
    train(stream, model, strategy, optim(), seed=seed)
    with torch.no_grad():
        return tame_evaluation(stream, model, strategy)


def tame_evaluation(stream: Stream, model: torch.nn.Module, strategy: TAME) -> dict[str, object]:
    model.eval()
    assert strategy.trained is not None
    x = torch.cat([e.test.x for e in stream])
    y = torch.cat([e.test.y for e in stream])
    task = torch.zeros_like(y)
    owner = strategy.trained[: len(strategy.experts)].int().argmax(dim=0)  # (C,): the first expert of each class
    route = strategy.route_logits(x).argmax(dim=1)
    routed = float((route == owner[y]).float().mean())
    predict = strategy.predict(model, x, task)
    logits = [model(x) if i == strategy.active else torch.func.functional_call(model, weights, (x,))
              for i, weights in enumerate(strategy.experts)]
    oracle = torch.stack(logits)[owner[y], torch.arange(len(y))]  # (N, C): each sample's own expert
    oracle = oracle.masked_fill(~strategy.trained[owner[y]], torch.finfo(oracle.dtype).min).argmax(dim=1)
    return {"shifts": strategy.shifts, "starts": starts(stream, optim().batch_size), "experts": len(strategy.experts),
            "routed": routed, "accuracy": float((predict == y).float().mean()),
            "oracle": float((oracle == y).float().mean()), "mib": strategy.memory_bytes() / 2**20}


def psrd_figures(stream: Stream, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    model = mlp(stream.input_shape, stream.n_classes)
    strategy = PSRD()
    train(stream, model, strategy, optim(), seed=seed)
    torch.set_grad_enabled(False)
    model.eval()
    within, across = [], []
    for experience in stream:
        x, y = experience.test.x, experience.test.y
        across.append(float((strategy.predict(model, x, torch.zeros_like(y)) == y).float().mean()))
        scores = torch.nn.functional.normalize(model.backbone(x), dim=1) @ torch.nn.functional.normalize(
            model.head.weight, dim=1).T
        own = torch.full_like(scores, float("-inf"))
        own[:, sorted(experience.classes)] = scores[:, sorted(experience.classes)]
        within.append(float((own.argmax(dim=1) == y).float().mean()))
    torch.set_grad_enabled(True)
    return {"class-incremental": statistics.mean(across), "within experience": statistics.mean(within)}


def er_mib(stream: Stream, seed: int, memory: int) -> float:
    torch.manual_seed(seed)
    strategy = ER(buffer_size=memory)
    train(stream, mlp(stream.input_shape, stream.n_classes), strategy, optim(), seed=seed)
    return strategy.memory_bytes() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="digits,fashion_mnist_mlp")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--memory", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for dataset in args.datasets.split(","):
        stream = class_incremental(fashion_mnist(PATH) if dataset.startswith("fashion_mnist") else digits(), 5)
        print(f"\n### {dataset}\n")
        print("| seed | TAME shifts (experiences start at) | experts | routed right | accuracy | oracle routing | "
              "TAME MiB (ER MiB) | PSRD class-incremental | PSRD within experience |")
        print("|---|---|---|---|---|---|---|---|---|")
        for seed in parse_seeds(args.seeds):
            tame, psrd = tame_figures(stream, seed, args.memory), psrd_figures(stream, seed)
            print(f"| {seed} | {tame['shifts']} ({tame['starts']}) | {tame['experts']} | {tame['routed']:.3f} | "
                  f"{tame['accuracy']:.3f} | {tame['oracle']:.3f} | {tame['mib']:.1f} "
                  f"({er_mib(stream, seed, args.memory):.1f}) | {psrd['class-incremental']:.3f} | "
                  f"{psrd['within experience']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
