"""Continual learning from a pretrained backbone: a small Vision Transformer pretrained by the library on
Fashion-MNIST, then class-incremental digits (resized to 28 x 28), every way of training a little of it.

    apt-get install -y dataset-fashion-mnist      # the original files, in /usr/share/datasets/fashion-mnist
    OMP_NUM_THREADS=1 python benchmarks/pretrained.py --seeds 0,1,2 --workers 1 \
        --results docs/results/pretrained-runs.jsonl --figure docs/results/pretrained.png > docs/results/pretrained.md

The backbone: ``lifelong pretrain`` (:func:`lifelong.protocol.pretrain.pretrain`) trains the ViT (width
``--width``, 128 by default; depth 4, 4 heads, patch 4: 0.54 M parameters) on all 10 Fashion-MNIST classes
(54,000 training images, 6,000 held out for its validation accuracy) for ``--pretrain-epochs`` epochs with
Adam at 1e-3 and a cosine decay, batch 32, once, seed 0; every row and seed starts from that file
(``model.weights``). The continual stream is the library's ``transfer`` scenario with no source
experience: scikit-learn's 8 x 8 digits resized to 28 x 28, 5 experiences of 2 classes: digits share no
class and no image with the pretraining data.

Settings are fixed before any run, the same for every row except the learning rate, which follows what
trains: 1e-3 (Adam) where the whole backbone trains (naive, ER, SLCA's slow backbone is its own 0.01
scale of it), 1e-2 where only small modules and the head train (prompts, LoRA, adapters, LAE, the linear
probe), as the parameter-efficient papers use larger rates for their modules; nothing was chosen by
looking at test accuracy. SimpleCIL (``ncm`` with the cosine metric) and RanPAC keep the pretrained
backbone frozen (``adapt_experiences = 0``: their classifiers on frozen features, without a first-session
adaptation), and SLCA's backbone is slow from the first experience (``adapt_experiences = 0``, the paper's
setting). The masked linear probe is SLCA without alignment on the frozen backbone (``model.freeze``):
the head alone, trained on each experience's own classes, as the prompt methods train theirs. The EMA's
decay, 0.95, fits the run's length, fixed from its step counts: an experience is 45 steps (about 270
images, batch 32, 5 epochs), and 0.95 ** 45 = 0.1, so the steps of the current experience carry 90 % of
the average at its end (the default 0.999 averages over ~1,000 steps, more than the run's 225).

Columns: final accuracy (mean over experiences), average forgetting and the accuracy on each experience
right after training on it (the mean of the matrix's diagonal: what the method could learn), mean ± std
over seeds. After the run, the final accuracy splits into task identification (the fraction of test
samples predicted as one of their own experience's classes, whichever) and within-task accuracy (the
prediction among the sample's own experience's classes alone, given its experience: the strategy
predicting with the stream's task mask), each a mean over experiences. Trained parameters: every tensor
that changed over the run, whole: the model's, and those of every optimizer group of every experience
(prompts, adapters, keys) from the value they held when their experience started; 0 for a method that
fits its classifier in closed form on frozen features, whose fitted statistics are not counted. Training
seconds and GFLOPs per run (``optim.count_flops``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lifelong import train
from lifelong.config import validate_config
from lifelong.errors import LifelongError
from lifelong.experiment import prepare
from lifelong.models.modes import eval_mode
from lifelong.protocol.pretrain import pretrain
from lifelong.protocol.seeds import parse_seeds
from lifelong.runner.observers import Observer, RunContext, TrainState
from lifelong.strategies import DualPrompt
from lifelong.strategies.parts.prompts import query

sys.path.insert(0, str(Path(__file__).parent))
from runs import finished_runs, record, row_results, spread  # noqa: E402

PATH = "/usr/share/datasets/fashion-mnist"
SMALL_LR, FULL_LR = 1e-2, 1e-3
EMA_DECAY = 0.95


@dataclass(frozen=True)
class Row:
    label: str
    strategy: str
    settings: tuple[tuple[str, object], ...] = ()
    lr: float = SMALL_LR
    average: str = "none"
    freeze: str = "none"


PRETRAINED = (("adapt_experiences", 0),)
"""A pretrained backbone: no first-session adaptation at the full rate."""
ROWS = [
    Row("naive (full fine-tuning)", "naive", lr=FULL_LR),
    Row("linear probe (masked)", "slca", (*PRETRAINED, ("backbone_lr_scale", 0.0), ("classifier_alignment", False)),
        freeze="backbone"),
    Row("ncm cosine (SimpleCIL)", "ncm", (*PRETRAINED, ("metric", "cosine"))),
    Row("ranpac", "ranpac", PRETRAINED),
    Row("slca", "slca", PRETRAINED, lr=FULL_LR),
    Row("lora (sequential)", "lora"),
    Row("adapter (sequential)", "adapter"),
    Row("l2p", "l2p"),
    Row("dualprompt", "dualprompt"),
    Row("coda_prompt", "coda_prompt"),
    Row("lae", "lae"),
    Row("er (200)", "er", (("buffer_size", 200),), lr=FULL_LR),
    Row(f"er (200) + ema {EMA_DECAY}", "er", (("buffer_size", 200),), lr=FULL_LR, average="ema"),
    Row("er (200) + merge", "er", (("buffer_size", 200),), lr=FULL_LR, average="merge"),
]


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    return {"name": "vit", "dim": args.width}


def base_config(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {"dataset": {"name": "fashion_mnist", "path": PATH},
            "model": model_config(args),
            "optim": {"name": "adam", "lr": FULL_LR, "batch_size": 32, "epochs": args.pretrain_epochs,
                      "schedule": "cosine"},
            "run": {"seed": seed, "device": "cpu", "progress": False}}


def pretrained_backbone(args: argparse.Namespace) -> Path:
    """The backbone file, written by the library's pretraining once (reused when it exists with these
    settings)."""
    path = args.backbone
    if path.exists():
        described = json.loads(path.with_suffix(".json").read_text())
        if described["model"]["dim"] != args.width or described["optim"]["epochs"] != args.pretrain_epochs:
            raise SystemExit(f"{path} holds another backbone (width {described['model']['dim']}, "
                             f"{described['optim']['epochs']} epochs): remove it or give --backbone")
        return path
    result = pretrain(validate_config(base_config(args, 0)), path)
    print(f"Pretrained on Fashion-MNIST: train accuracy {result.train_accuracy:.3f}, validation "
          f"{result.validation_accuracy:.3f}, {result.train_samples} images, {result.seconds:.0f} s",
          file=sys.stderr)
    return path


class Diagnostics(Observer):
    """What the table adds to the run's matrix: the parameters it trained, and, after the last experience,
    task identification, within-task accuracy and (DualPrompt) how often the key matching picks the sample's
    own task."""

    def __init__(self) -> None:
        self.initial: dict[int, torch.Tensor] = {}
        self.parameters: dict[int, torch.Tensor] = {}
        self.measured: dict[str, Any] = {}

    def on_run_start(self, context: RunContext) -> None:
        self.context = context
        self.keep(context.model.parameters())

    def keep(self, parameters: Any) -> None:
        """Remember each tensor's value the first time it is seen."""
        for p in parameters:
            if id(p) not in self.initial:
                self.initial[id(p)], self.parameters[id(p)] = p.detach().clone(), p

    def on_optimizer(self, optimizer: torch.optim.Optimizer | None) -> None:
        if optimizer is not None:
            self.keep(p for group in optimizer.param_groups for p in group["params"])

    def trained(self) -> int:
        """Parameters of the tensors that changed since first seen."""
        return sum(p.numel() for key, p in self.parameters.items() if not torch.equal(p, self.initial[key]))

    def on_experience_end(self, state: TrainState, accuracies: list[float]) -> None:
        context = self.context
        if state.experience != len(context.stream.experiences) - 1:
            return
        model, strategy, experiences = context.model, context.strategy, context.stream.experiences
        mask = torch.zeros(len(experiences), context.stream.n_classes, dtype=torch.bool)
        for index, experience in enumerate(experiences):
            mask[index, list(experience.classes)] = True
        identified, within, keys = [], [], []
        with context.evaluation_weights(), eval_mode(model), torch.no_grad():
            for index, test in enumerate(context.test_sets):
                tasks = torch.full((len(test),), index, dtype=torch.long)
                predicted = strategy.predict(model, test.x, test.task)  # as the run evaluates: no task given
                identified.append(mask[index, predicted].float().mean().item())
                within.append(self.with_task_mask(mask, lambda: strategy.predict(model, test.x, tasks)).eq(
                    test.y).float().mean().item())
                if isinstance(strategy, DualPrompt):
                    keys.append(strategy.choose(query(model.backbone, test.x)).eq(index).float().mean().item())
        self.measured = {"identified": statistics.mean(identified), "within": statistics.mean(within),
                         "identified_per_task": identified, "within_per_task": within}
        if keys:
            self.measured["key_per_task"] = keys

    def with_task_mask(self, mask: torch.Tensor, predict: Any) -> torch.Tensor:
        """``predict()`` with the strategy holding the stream's task mask (T, C), as on a task-incremental
        stream: each sample's prediction among its own experience's classes."""
        strategy = self.context.strategy
        strategy.task_mask, strategy.device_cache = mask, {}
        try:
            return predict()
        finally:
            strategy.task_mask, strategy.device_cache = None, {}


def run(row: Row, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One row's figures for one seed, or its one-line error."""
    torch.set_num_threads(1)
    config = base_config(args, seed)
    config.update(scenario={"name": "transfer", "target": {"name": "digits"}, "source_experiences": 0,
                            "n_experiences": 5},
                  model={**model_config(args), "weights": str(args.backbone), "freeze": row.freeze},
                  strategy={"name": row.strategy, **dict(row.settings)},
                  average={"method": row.average, **({"decay": EMA_DECAY} if row.average == "ema" else {})},
                  optim={"name": "adam", "lr": row.lr, "batch_size": 32, "epochs": args.epochs, "count_flops": True})
    diagnostics = Diagnostics()
    try:
        validated = validate_config(config)
        stream, model, strategy = prepare(validated)
        result = train(stream, model, strategy, validated.optim, seed=seed, device="cpu", observers=[diagnostics],
                       eval_batch_size=validated.run.eval_batch_size, average=validated.average)
    except LifelongError as error:
        return {"error": str(error)}
    return {"final": result.metrics["final_accuracy"], "forgetting": result.metrics["forgetting"],
            "learned": float(result.matrix.diagonal().mean()), "trainable": diagnostics.trained(),
            "seconds": sum(c.seconds for c in result.costs), "flops": sum(c.flops for c in result.costs),
            **diagnostics.measured}


def figure(rows: list[Row], results: dict[Row, list[dict[str, Any]]], path: Path) -> None:
    """Each row's final accuracy beside its two factors, task identification and within-task accuracy
    (means over seeds, the bars' lines their std), one group of bars per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [("final", "final accuracy"), ("identified", "task identified"), ("within", "within task")]
    fig, ax = plt.subplots(figsize=(9, 7))
    height = 0.27
    for offset, (key, label) in enumerate(measures):
        values = [[r[key] for r in results[row]] for row in rows]
        ax.barh([i + (offset - 1) * height for i in range(len(rows))], [statistics.mean(v) for v in values],
                height, xerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in values], label=label)
    ax.set_yticks(range(len(rows)), [row.label for row in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy after the last experience (mean over experiences)")
    ax.set_title("Pretrained ViT on class-incremental digits: where the final accuracy is lost")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=3)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=5, help="per experience of the continual stream")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--width", type=int, default=128, help="the ViT's width (model.dim)")
    parser.add_argument("--backbone", type=Path, default=Path("vit128-fmnist.pt"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rows", default="", help="row labels to run, separated by ';' (default: every row)")
    parser.add_argument("--results", type=Path, default=Path("pretrained-runs.jsonl"),
                        help="each finished run is appended here, and a rerun with the same settings reuses it")
    parser.add_argument("--figure", type=Path, default=None, help="the PNG to write (default: none)")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    rows = [row for row in ROWS if not args.rows or row.label in args.rows.split(";")]
    started = time.perf_counter()
    torch.set_num_threads(args.workers)
    backbone = pretrained_backbone(args)
    settings = {k: str(v) for k, v in vars(args).items() if k not in ("seeds", "workers", "results", "rows", "figure")}
    done = finished_runs(args.results, settings)
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {(row, seed): pool.submit(run, row, seed, args) for row in rows for seed in seeds
                   if ("digits", row.label, seed) not in done}
        for (row, seed), future in futures.items():
            future.add_done_callback(lambda f, row=row, seed=seed: record(args.results, settings, "digits",
                                                                          row.label, seed, f))
        print("# Pretrained backbone: a ViT pretrained on Fashion-MNIST, class-incremental digits\n")
        print(f"`OMP_NUM_THREADS=1 python benchmarks/pretrained.py --seeds {args.seeds} --epochs {args.epochs} "
              f"--pretrain-epochs {args.pretrain_epochs} --width {args.width} --workers {args.workers} "
              f"--results {args.results}" + (f" --figure {args.figure}" if args.figure else "")
              + f"` (torch {torch.__version__}, one thread per run)\n")
        described = json.loads(backbone.with_suffix(".json").read_text())
        print(f"Backbone: `lifelong pretrain` of the ViT (width {described['model']['dim']}) on Fashion-MNIST, "
              f"classes {described['classes']}, {described['optim']['epochs']} epochs, validation accuracy "
              f"{described['validation_accuracy']:.3f} ({described['validation_samples']:,} held-out training "
              f"images; train accuracy {described['train_accuracy']:.3f}, {described['seconds']:.0f} s).\n")
        print("| row | final accuracy | forgetting | accuracy just learned | task identified | within task "
              "| trained parameters | seconds | GFLOPs |")
        print("|---|---|---|---|---|---|---|---|---|")
        finished: dict[Row, list[dict[str, Any]]] = {}
        for row in rows:
            results = row_results(done, futures, "digits", row, row.label, seeds, 9)
            if results is None:
                continue
            finished[row] = results
            print(f"| {row.label} | {spread([r['final'] for r in results])} | "
                  f"{spread([r['forgetting'] for r in results])} | {spread([r['learned'] for r in results])} | "
                  f"{spread([r['identified'] for r in results])} | {spread([r['within'] for r in results])} | "
                  f"{results[0]['trainable']:,} | "
                  f"{statistics.mean(r['seconds'] for r in results):.0f} | "
                  f"{statistics.mean(r['flops'] for r in results) / 1e9:.1f} |", flush=True)
        for row, results in finished.items():
            if row.strategy == "dualprompt":
                per_task = [statistics.mean(r["key_per_task"][t] for r in results) for t in range(5)]
                print(f"\n{row.label}: the key matching picks the sample's own task for "
                      + ", ".join(f"{100 * share:.0f}" for share in per_task)
                      + " % of the test samples of experiences 0-4 (mean over seeds).")
    if args.figure is not None:
        figure(list(finished), finished, args.figure)
    print(f"\nWall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
