"""The stability gap on class-incremental digits: how deep old-experience accuracy dips after each
switch, per strategy, over seeds (De Lange et al. 2023, "Continual evaluation for lifelong learning:
identifying the stability gap").

    OMP_NUM_THREADS=1 python benchmarks/stability_gap.py > docs/results/stability-gap.md

Default run configuration (5 experiences of 2 classes, MLP 256-256, SGD lr 0.03, batch 16, 5 epochs,
default strategy hyperparameters, none tuned here) with ``run.eval_every_steps=5``; seeds 0, 1, 2
(each seed also shuffles the class order). Prints each metric as mean ± std over seeds with the
t-based 95% interval: relative depth of the dip (fraction of the pre-switch old accuracy lost at the
bottom), absolute depth (both from each old experience's own dip), the paper's min-ACC (the mean of each
old experience's own minimum since it was learned) and WC-ACC at the end of the stream, the fraction of
switches that recovered to within 0.02 of the pre-switch accuracy, and final accuracy.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from lifelong.config import load_config
from lifelong.metrics.aggregate import aggregate
from lifelong.protocol.seeds import run_seeds
from lifelong.runner.results import ResultsStore
from lifelong.protocol.seeds import parse_seeds

METRICS = ("relative_stability_gap", "stability_gap", "min_old_accuracy", "worst_case_accuracy", "recovered_fraction",
           "final_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default="naive,er,ewc,lwf,cumulative")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--every", type=int, default=5)
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    print("# Stability gap on class-incremental digits\n")
    print(f"`OMP_NUM_THREADS=1 python benchmarks/stability_gap.py --strategies {args.strategies} "
          f"--seeds {args.seeds} --every {args.every}`\n")
    print("Mean ± std over seeds [t-based 95% interval].\n")
    print("| strategy | " + " | ".join(METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    store = ResultsStore(Path(tempfile.mkdtemp()) / "runs.db")
    for name in args.strategies.split(","):
        config = load_config(None, [f"strategy.name={name}", f"run.eval_every_steps={args.every}",
                                    "scenario.shuffle=true"])
        result = run_seeds(config, seeds, store=store)
        cells = [str(aggregate([float(r.metrics[m]) for r in result.runs])) for m in METRICS]  # type: ignore[arg-type]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
