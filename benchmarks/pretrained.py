"""Continual learning from a pretrained backbone: a small Vision Transformer pretrained by the library on
Fashion-MNIST, then class-incremental digits (resized to 28 x 28), every way of training a little of it.

    apt-get install -y dataset-fashion-mnist      # the original files, in /usr/share/datasets/fashion-mnist
    python benchmarks/pretrained.py --seeds 0,1,2 --workers 2 > docs/results/pretrained.md

The backbone: ``lifelong pretrain`` (:func:`lifelong.protocol.pretrain.pretrain`) trains the ViT (``vit``
defaults: dim 64, depth 4, 4 heads, patch 4) on all 10 Fashion-MNIST classes (54,000 training images, 6,000
held out for its validation accuracy) for ``--pretrain-epochs`` epochs with Adam, once, seed 0; every row
and seed starts from that file (``model.weights``). The continual stream is the library's ``transfer``
scenario with no source experience: scikit-learn's 8 x 8 digits resized to 28 x 28, 5 experiences of 2
classes: digits share no class and no image with the pretraining data.

Settings are fixed before any run, the same for every row except the learning rate, which follows what
trains: 1e-3 (Adam) where the whole backbone trains (naive, ER, SLCA's slow backbone is its own 0.01
scale of it), 1e-2 where only small modules and the head train (prompts, LoRA, adapters, LAE), as the
parameter-efficient papers use larger rates for their modules; nothing was chosen by looking at test
accuracy. SimpleCIL (``ncm``) and RanPAC keep the pretrained backbone frozen (``adapt_experiences = 0``:
their classifiers on frozen features, without a first-session adaptation). Batch 32, ``--epochs`` per
experience. Columns: final accuracy (mean over experiences), average forgetting and the accuracy on
each experience right after training on it (the mean of the matrix's diagonal: what the method could
learn), mean ± std over seeds; trained parameters (over the whole run: every tensor of the model that changed, whole, plus the
parameters a strategy adds and trains, its adapters and prompts; 0 for a method that fits its classifier
in closed form on frozen features, whose fitted statistics are not counted); training seconds and GFLOPs per
run (``optim.count_flops``).
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

from lifelong.config import validate_config
from lifelong.errors import LifelongError
from lifelong.experiment import prepare, run_config
from lifelong.protocol.pretrain import pretrain
from lifelong.protocol.seeds import parse_seeds

sys.path.insert(0, str(Path(__file__).parent))
from runs import finished_runs, record, row_results, spread  # noqa: E402

PATH = "/usr/share/datasets/fashion-mnist"
SMALL_LR, FULL_LR = 1e-2, 1e-3


@dataclass(frozen=True)
class Row:
    label: str
    strategy: str
    settings: tuple[tuple[str, object], ...] = ()
    lr: float = SMALL_LR
    average: str = "none"


ROWS = [
    Row("naive (full fine-tuning)", "naive", lr=FULL_LR),
    Row("ncm (SimpleCIL)", "ncm", (("adapt_experiences", 0),)),
    Row("ranpac", "ranpac", (("adapt_experiences", 0),)),
    Row("slca", "slca", lr=FULL_LR),
    Row("lora (sequential)", "lora"),
    Row("adapter (sequential)", "adapter"),
    Row("l2p", "l2p"),
    Row("dualprompt", "dualprompt"),
    Row("coda_prompt", "coda_prompt"),
    Row("lae", "lae"),
    Row("er (200)", "er", (("buffer_size", 200),), lr=FULL_LR),
    Row("er (200) + ema", "er", (("buffer_size", 200),), lr=FULL_LR, average="ema"),
    Row("er (200) + merge", "er", (("buffer_size", 200),), lr=FULL_LR, average="merge"),
]


def base_config(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {"dataset": {"name": "fashion_mnist", "path": PATH},
            "model": {"name": "vit"},
            "optim": {"name": "adam", "lr": FULL_LR, "batch_size": 32, "epochs": args.pretrain_epochs},
            "run": {"seed": seed, "device": "cpu", "progress": False}}


def pretrained_backbone(args: argparse.Namespace) -> Path:
    """The backbone file, written by the library's pretraining once (reused when it exists)."""
    path = args.backbone
    if not path.exists():
        result = pretrain(validate_config(base_config(args, 0)), path)
        print(f"Pretrained on Fashion-MNIST: train accuracy {result.train_accuracy:.3f}, validation "
              f"{result.validation_accuracy:.3f}, {result.train_samples} images, {result.seconds:.0f} s",
              file=sys.stderr)
    return path


def trained(strategy: Any, model: torch.nn.Module, before: dict[int, torch.Tensor]) -> int:
    """Parameters the run trained: every tensor of the model that changed from ``before`` (its tensors by
    ``id`` before the run), and every parameter the strategy added and trains (adapters, prompts), whole."""
    changed = sum(p.numel() for p in model.parameters() if id(p) in before and not torch.equal(p, before[id(p)]))
    added = {id(p): p.numel() for group in strategy.parameter_groups(model) for p in group["params"]
             if id(p) not in before}
    return changed + sum(added.values())


def run(row: Row, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One row's figures for one seed, or its one-line error."""
    torch.set_num_threads(1)
    config = base_config(args, seed)
    config.update(scenario={"name": "transfer", "target": {"name": "digits"}, "source_experiences": 0,
                            "n_experiences": 5},
                  model={"name": "vit", "weights": str(args.backbone)},
                  strategy={"name": row.strategy, **dict(row.settings)},
                  average={"method": row.average},
                  optim={"name": "adam", "lr": row.lr, "batch_size": 32, "epochs": args.epochs, "count_flops": True})
    try:
        validated = validate_config(config)
        stream, model, strategy = prepare(validated)
        before = {id(p): p.detach().clone() for p in model.parameters()}
        result = run_config(validated, prepared=(stream, model, strategy))
    except LifelongError as error:
        return {"error": str(error)}
    return {"final": result.metrics["final_accuracy"], "forgetting": result.metrics["forgetting"],
            "learned": float(result.matrix.diagonal().mean()),
            "trainable": trained(strategy, model, before), "seconds": sum(c.seconds for c in result.costs),
            "flops": sum(c.flops for c in result.costs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=5, help="per experience of the continual stream")
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--backbone", type=Path, default=Path("vit-fmnist.pt"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results", type=Path, default=Path("pretrained-runs.jsonl"),
                        help="each finished run is appended here, and a rerun with the same settings reuses it")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    started = time.perf_counter()
    torch.set_num_threads(args.workers)
    backbone = pretrained_backbone(args)
    settings = {k: str(v) for k, v in vars(args).items() if k not in ("seeds", "workers", "results")}
    done = finished_runs(args.results, settings)
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {(row, seed): pool.submit(run, row, seed, args) for row in ROWS for seed in seeds
                   if ("digits", row.label, seed) not in done}
        for (row, seed), future in futures.items():
            future.add_done_callback(lambda f, row=row, seed=seed: record(args.results, settings, "digits",
                                                                          row.label, seed, f))
        print("# Pretrained backbone: a ViT pretrained on Fashion-MNIST, class-incremental digits\n")
        print(f"`python benchmarks/pretrained.py --seeds {args.seeds} --epochs {args.epochs} "
              f"--pretrain-epochs {args.pretrain_epochs} --workers {args.workers}` "
              f"(torch {torch.__version__}, one thread per run)\n")
        described = json.loads(backbone.with_suffix(".json").read_text())
        print(f"Backbone: `lifelong pretrain` of the ViT on Fashion-MNIST, classes {described['classes']}, "
              f"{described['optim']['epochs']} epochs, validation accuracy {described['validation_accuracy']:.3f} "
              f"(6,000 held-out training images).\n")
        print("| row | final accuracy | forgetting | accuracy just learned | trained parameters | seconds | GFLOPs |")
        print("|---|---|---|---|---|---|---|")
        for row in ROWS:
            results = row_results(done, futures, "digits", row, row.label, seeds, 7)
            if results is None:
                continue
            print(f"| {row.label} | {spread([r['final'] for r in results])} | "
                  f"{spread([r['forgetting'] for r in results])} | {spread([r['learned'] for r in results])} | "
                  f"{results[0]['trainable']:,} | "
                  f"{statistics.mean(r['seconds'] for r in results):.0f} | "
                  f"{statistics.mean(r['flops'] for r in results) / 1e9:.1f} |", flush=True)
    print(f"\nWall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
