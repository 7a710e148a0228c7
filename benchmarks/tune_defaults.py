"""The catalogue's strategy hyperparameters, chosen by the tune-then-evaluate protocol on digits.

    OMP_NUM_THREADS=1 python benchmarks/tune_defaults.py --trials 16 > docs/results/fmnist-defaults.md

For each strategy of the Split Fashion-MNIST catalogue (``benchmarks/fmnist.py``) that has hyperparameters of
its own, ``lifelong tune`` (:mod:`lifelong.protocol.tune`) searches them with Optuna's TPE sampler on
class-incremental digits (5 x 2 classes in another class order, ``scenario.shuffle=true scenario.seed=1``),
scoring each trial by its mean over 3 seeds on a validation split carved out of the digits *training* set
(20 %; a trial that diverges with any seed is pruned, so a setting at the edge of stability is not chosen on
one lucky seed); the best values are
then run on a third class order (seed 2) under 3 seeds. No Fashion-MNIST image, and no test image of any
dataset, is looked at while choosing. The optimizer is left out of the search (``--fix optim.lr``): the
catalogue fixes one optimizer for every strategy, so only each method's own weights are tuned, at the digits
defaults of the runner (SGD lr 0.03, momentum 0.9, batch 16, 5 epochs, MLP 256-256). Memory sizes are budgets,
not hyperparameters, and are never searched. Prints a markdown table; the study lives in ``--db``, so a rerun
continues it (finished trials are kept).
"""

from __future__ import annotations

import argparse
import time

import optuna

from lifelong.protocol.spaces import SEARCH_SPACES
from lifelong.protocol.tune import ProtocolSettings, run_protocol
from lifelong.runner.results import ResultsStore
from lifelong.strategies import STRATEGIES

#: The catalogue's strategies that have hyperparameters of their own, with the memory they run with.
TUNED = {"ewc": [], "mas": [], "l2": [], "si": [], "lwf": [], "der": ["strategy.buffer_size=200"],
         "derpp": ["strategy.buffer_size=200"], "uer": ["strategy.buffer_size=200"], "fetril": [],
         "slca": [], "gpm": [], "cuber": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--strategies", default=",".join(TUNED),
                        help="comma-separated; SI, SLCA, GPM and CUBER are retuned once their fidelity fixes land")
    parser.add_argument("--db", default="tune-defaults.db")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = ResultsStore(args.db)
    print("# Strategy hyperparameters of the Fashion-MNIST catalogue, tuned on digits\n")
    print(f"`OMP_NUM_THREADS=1 python benchmarks/tune_defaults.py --trials {args.trials} "
          f"--strategies {args.strategies}`\n")
    print(" ".join(__doc__.split("\n\n")[2].split("Prints")[0].split()) + "\n")
    print("| strategy | searched | trials (diverged) | best on validation | chosen | evaluation final accuracy "
          "(3 seeds) | code default | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.strategies.split(","):
        started = time.perf_counter()
        settings = ProtocolSettings(study=f"defaults-{name}", trials=args.trials, fixed=["optim.lr"],
                                    trial_seeds=[0, 1, 2],
                                    overrides=["run.progress=false", "run.checkpoint=false", f"strategy.name={name}",
                                               *TUNED[name]])
        result = run_protocol(settings, store)
        chosen = ", ".join(f"{key.split('.', 1)[1]}={value:.3g}" if isinstance(value, float) else
                           f"{key.split('.', 1)[1]}={value}" for key, value in result.best_params.items())
        defaults = STRATEGIES[name]()
        code = ", ".join(f"{key.split('.', 1)[1]}={getattr(defaults, key.split('.', 1)[1])!r}"
                         for key in SEARCH_SPACES[name])
        final = result.evaluation.get("final_accuracy")
        evaluated = "-" if final is None else f"{final.mean:.3f}" + ("" if final.std is None else f" ± {final.std:.3f}")
        if result.diverged_evaluation:
            evaluated += f" ({len(result.diverged_evaluation)} of 3 seeds diverged)"
        print(f"| {name} | {', '.join(k.split('.', 1)[1] for k in SEARCH_SPACES[name])} | {args.trials} "
              f"({result.diverged}) | {result.best_value:.3f} | {chosen} | {evaluated} | "
              f"{code} | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
