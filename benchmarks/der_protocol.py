"""The DER protocol on Split Fashion-MNIST, beside the published Seq-MNIST numbers.

    apt-get install -y dataset-fashion-mnist      # the original files, in /usr/share/datasets/fashion-mnist
    OMP_NUM_THREADS=1 python benchmarks/der_protocol.py --seeds 0,1,2 --workers 1 \\
        --results docs/results/der-protocol-runs.jsonl --figure docs/results/der-protocol.png \\
        > docs/results/der-protocol.md
    python benchmarks/der_protocol.py --seeds 0,1,2 --ewc-diagnosis     # why the ewc row diverges on seed 0

Buzzega et al. (NeurIPS 2020, "Dark Experience for General Continual Learning: a Strong, Simple
Baseline") evaluate Seq-MNIST as 5 experiences of 2 classes, class-incremental, with an MLP 784-100-100-10
(ReLU, Xavier-uniform weights, zero biases: Mammoth's ``MNISTMLP``), pixels in [0, 1] (no normalisation,
no augmentation), 1 epoch per experience, batch 10, plain SGD (no momentum, no schedule), and each
method's learning rate, replay batch and weights from Mammoth's ``utils/best_args.py`` for ``seq-mnist``
(identical from the first commit 7ab9db9, 2020-10-05, to d20f640, 2020-11-18, the paper's code). This
script runs that protocol on Fashion-MNIST (all 60,000 training and 10,000 test images) with the same
hyperparameters, mapped onto this library's fields in :data:`ROWS`: they were chosen on another stream,
Seq-MNIST, so no value here was chosen by looking at Fashion-MNIST's test accuracy.

Every finished run is appended to ``--results`` (a rerun with the same rows reuses it, so an interrupted
run loses nothing); a configuration that fails prints its one-line error in its row. ``--workers`` runs
that many configurations at once, each on one thread. Prints a markdown table (final class-incremental
accuracy and average forgetting in percent, mean ± std over seeds, the paper's Seq-MNIST class-IL number,
training seconds and GFLOPs per run) and writes ``--figure``: final accuracy against GFLOPs, one point per
row, on a log axis.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lifelong import OptimConfig, mlp, train
from lifelong.data import Experience, class_incremental
from lifelong.data.files import fashion_mnist
from lifelong.errors import LifelongError
from lifelong.protocol.seeds import parse_seeds
from lifelong.strategies import EWC, STRATEGIES

sys.path.insert(0, str(Path(__file__).parent))
from runs import accuracy_flops_figure, finished_runs, record, row_results, spread  # noqa: E402

PATH = "/usr/share/datasets/fashion-mnist"
SETTINGS = {"protocol": "der-seq-mnist", "data": "fashion_mnist, 60000 train / 10000 test, [0, 1]", "experiences": 5,
            "model": "mlp 784-100-100-10, xavier", "optim": "sgd, momentum 0, batch 10, 1 epoch, constant lr"}


@dataclass(frozen=True)
class Row:
    label: str
    strategy: str
    lr: float
    settings: tuple[tuple[str, object], ...] = ()
    weight_decay: float = 0.0
    epochs: int = 1
    """Epochs per experience: 1 in the protocol; more only in a row marked as a diagnosis."""
    paper: float | None = None
    """The paper's Seq-MNIST class-IL accuracy (%) for this method and buffer; None where it has none."""

    @property
    def key(self) -> str:
        """Everything that defines the run, so that a record made with other values is not reused."""
        epochs = "" if self.epochs == 1 else f" epochs={self.epochs}"
        return f"{self.strategy} lr={self.lr} wd={self.weight_decay} {dict(self.settings)}{epochs}"


def buffer_rows(buffer: int, er: tuple, der: tuple, derpp: tuple, agem: tuple, icarl: tuple) -> list[Row]:
    """The rehearsal rows at one buffer size: each tuple is (lr, Mammoth's settings mapped, paper %)."""
    rows = []
    for name, (lr, settings, paper) in (("er", er), ("der", der), ("derpp", derpp), ("agem", agem),
                                        ("icarl", icarl)):
        rows.append(Row(f"{name} ({buffer})", name, lr, (("buffer_size", buffer), *settings), paper=paper))
    # GDumb is not in the paper nor in Mammoth's seq-mnist best arguments: naive's lr, our defaults.
    rows.insert(4, Row(f"gdumb ({buffer})", "gdumb", 0.03, (("buffer_size", buffer),)))
    return rows


# Mammoth's seq-mnist best arguments (utils/best_args.py at d20f640) mapped onto our fields:
# minibatch_size -> replay_batch_size (A-GEM: reference_batch_size); DER's alpha, DER++'s alpha and beta as
# they are; ewc_on's e_lambda -> lam = 2 * e_lambda (Mammoth adds e_lambda * sum F d^2, ours lam / 2 * sum F d^2),
# gamma -> decay; si's c -> lam, xi -> damping; lwf's alpha and softmax_temp as they are, its wd_reg 5e-4 (a
# term wd_reg * ||theta||^2 in the loss) -> SGD weight_decay 1e-3 (the same gradient, 2 * wd_reg * theta).
ROWS = [
    Row("naive", "naive", 0.03, paper=19.60),
    Row("joint", "joint", 0.03, paper=95.57),
    # Diagnosis, outside the protocol: is 1-epoch joint training short of what the model can reach?
    Row("joint (3 epochs)", "joint", 0.03, epochs=3),
    Row("ewc", "ewc", 0.03, (("lam", 180.0), ("decay", 1.0)), paper=20.46),
    # Mammoth's own Fisher estimate (the true label's squared gradient times p(y|x)), which e_lambda was chosen for
    Row("ewc (Mammoth's Fisher)", "ewc", 0.03, (("lam", 180.0), ("decay", 1.0), ("fisher_labels", "weighted")),
        paper=20.46),
    Row("si", "si", 0.1, (("lam", 1.0), ("damping", 0.9)), paper=19.27),
    Row("lwf", "lwf", 0.03, (("alpha", 1.0), ("temperature", 2.0)), weight_decay=1e-3, paper=19.62),
    *buffer_rows(200, er=(0.01, (("replay_batch_size", 10),), 80.43),
                 der=(0.03, (("replay_batch_size", 10), ("alpha", 0.2)), 84.55),
                 derpp=(0.03, (("replay_batch_size", 128), ("alpha", 0.2), ("beta", 1.0)), 85.61),
                 agem=(0.1, (("reference_batch_size", 128),), 45.72), icarl=(0.1, (), 70.51)),
    *buffer_rows(500, er=(0.1, (("replay_batch_size", 10),), 86.12),
                 der=(0.03, (("replay_batch_size", 128), ("alpha", 1.0)), 90.54),
                 derpp=(0.03, (("replay_batch_size", 10), ("alpha", 1.0), ("beta", 0.5)), 91.00),
                 agem=(0.1, (("reference_batch_size", 128),), 46.66), icarl=(0.1, (), 70.10)),
    *buffer_rows(5120, er=(0.1, (("replay_batch_size", 10),), 93.40),
                 der=(0.1, (("replay_batch_size", 128), ("alpha", 0.5)), 94.90),
                 derpp=(0.1, (("replay_batch_size", 64), ("alpha", 0.2), ("beta", 0.5)), 95.30),
                 agem=(0.1, (("reference_batch_size", 128),), 54.24), icarl=(0.1, (), 70.60)),
]


def mammoth_mlp(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Our MLP 784-100-100-10 (Flatten, Linear, ReLU, no norm) initialised as Mammoth's ``MNISTMLP``:
    Xavier-uniform weights, zero biases (draws from the global generator the caller seeded)."""
    model = mlp(input_shape, n_classes, hidden=(100, 100))
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def run(row: Row, seed: int, count_flops: bool) -> dict[str, Any]:
    """One configuration's figures, or its one-line error (a diverged run is reported in its row)."""
    torch.set_num_threads(1)
    stream = class_incremental(fashion_mnist(PATH), 5)
    torch.manual_seed(seed)
    model = mammoth_mlp(stream.input_shape, stream.n_classes)
    optim = OptimConfig(name="sgd", lr=row.lr, momentum=0.0, weight_decay=row.weight_decay, batch_size=10,
                        epochs=row.epochs, schedule="constant", count_flops=count_flops)
    try:
        result = train(stream, model, STRATEGIES[row.strategy](**dict(row.settings)), optim, seed=seed, device="cpu")
    except LifelongError as error:
        return {"error": str(error).splitlines()[0]}
    return {"final": result.metrics["final_accuracy"], "forgetting": result.metrics["forgetting"],
            "matrix": result.matrix.tolist(), "seconds": sum(c.seconds for c in result.costs),
            "flops": sum(c.flops for c in result.costs)}


@dataclass
class TracedEWC(EWC):
    """Diagnosis only: online EWC that records its largest Fisher entry after each experience."""

    largest: list[float] = field(default_factory=list, init=False, repr=False)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.largest.append(max(v.max().item() for v in self.importance.values()))


def ewc_diagnosis(seed: int) -> None:
    """Run the ewc row's configuration with each Fisher estimator and print the largest Fisher entry after
    each experience beside ``lr * lam * F``: SGD on the penalty ``lam / 2 * F * d^2`` multiplies ``d`` by
    ``1 - lr * lam * F`` each step, so it diverges where that product exceeds 2."""
    torch.set_num_threads(1)
    row = next(r for r in ROWS if r.label == "ewc")
    stream = class_incremental(fashion_mnist(PATH), 5)
    for labels in ("sampled", "weighted"):
        torch.manual_seed(seed)
        strategy = TracedEWC(**dict(row.settings), fisher_labels=labels)
        optim = OptimConfig(name="sgd", lr=row.lr, momentum=0.0, batch_size=10, epochs=1)
        try:
            result = train(stream, mammoth_mlp(stream.input_shape, stream.n_classes), strategy, optim, seed=seed,
                           device="cpu")
            outcome = f"final accuracy {100 * result.metrics['final_accuracy']:.2f} %"
        except LifelongError as error:
            outcome = str(error).splitlines()[0]
        products = ", ".join(f"{f:.4f} ({row.lr * strategy.lam * f:.2f})" for f in strategy.largest)
        print(f"{'Mammoth' if labels == 'weighted' else 'our'} Fisher, seed {seed}: largest F (lr * lam * F) after each experience "
              f"{products}; {outcome}")


def percent(values: list[float | None]) -> str:
    """Mean ± std over seeds of fractions, in percent like the paper (``-`` where a run has none)."""
    return spread([None if v is None else 100 * v for v in values], digits=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rows", default="", help="comma-separated row labels to run (default: every row)")
    parser.add_argument("--no-flops", action="store_true", help="do not count FLOPs (faster; GFLOPs read 0)")
    parser.add_argument("--results", type=Path, default=Path("der-protocol-runs.jsonl"),
                        help="each finished run is appended here, and a rerun with the same rows reuses it")
    parser.add_argument("--figure", type=Path, default=None, help="the PNG to write (default: none)")
    parser.add_argument("--ewc-diagnosis", action="store_true",
                        help="instead of the table: the ewc row's largest Fisher entries, ours against Mammoth's")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    if args.ewc_diagnosis:
        for seed in seeds:
            ewc_diagnosis(seed)
        return
    chosen = args.rows.split(",") if args.rows else None
    rows = [r for r in ROWS if chosen is None or r.label in chosen]
    settings = {**SETTINGS, "count_flops": not args.no_flops}
    started = time.perf_counter()
    done = finished_runs(args.results, settings)
    points = []
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {(row, seed): pool.submit(run, row, seed, not args.no_flops) for row in rows for seed in seeds
                   if (row.key, row.label, seed) not in done}
        for (row, seed), future in futures.items():
            future.add_done_callback(lambda f, row=row, seed=seed: record(args.results, settings, row.key, row.label,
                                                                          seed, f))
        print("# The DER protocol on Split Fashion-MNIST, beside the paper's Seq-MNIST numbers\n")
        figure_option = "" if args.figure is None else f" --figure {args.figure}"
        print(f"`OMP_NUM_THREADS=1 python benchmarks/der_protocol.py --seeds {args.seeds} --workers {args.workers} "
              f"--results {args.results}{figure_option}` (torch {torch.__version__}, one thread per run)\n")
        print("Class-incremental, 5 experiences of 2 classes, all 60,000 training and 10,000 test images, pixels in "
              "[0, 1]; MLP 784-100-100-10 (ReLU, Xavier-uniform weights, zero biases); SGD without momentum, batch "
              "10, 1 epoch per experience, constant learning rate per method (Mammoth's seq-mnist best arguments). "
              "Final accuracy (mean over the 5 test sets after the last experience) and average forgetting in "
              "percent, mean ± std over seeds; seconds and GFLOPs per run (training only).\n")
        print("| strategy | final accuracy (%) | forgetting (%) | paper, Seq-MNIST (%) | seconds | GFLOPs |")
        print("|---|---|---|---|---|---|")
        for row in rows:
            results = row_results(done, futures, row.key, row, row.label, seeds, 6)
            if results is None:
                continue
            paper = "-" if row.paper is None else f"{row.paper:.2f}"
            gflops = statistics.mean(r["flops"] for r in results) / 1e9
            print(f"| {row.label} | {percent([r['final'] for r in results])} | "
                  f"{percent([r['forgetting'] for r in results])} | {paper} | "
                  f"{statistics.mean(r['seconds'] for r in results):.0f} | {gflops:.1f} |", flush=True)
            points.append((row, gflops, 100 * statistics.mean(r["final"] for r in results)))
    if args.figure is not None and points:
        accuracy_flops_figure([(row.label.split(" ")[0], dict(row.settings).get("buffer_size"), gflops, accuracy)
                               for row, gflops, accuracy in points], args.figure,
                              "DER protocol on Split Fashion-MNIST (MLP 784-100-100-10, 1 epoch, batch 10)",
                              "final accuracy, class-incremental (%)")
    print(f"\nWall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
