"""How the defaults of the issue-3 strategies were chosen: on a validation split carved from the
*training* set of digits (the test set is never looked at), 3 seeds, default OptimConfig.

    OMP_NUM_THREADS=1 python benchmarks/strategy_defaults.py

Prints the mean final accuracy and forgetting of each candidate on the validation stream: the
regularisers (SI, MAS, L2) on task-incremental digits, where they are meant to work, and the
hyperparameters of SLCA and UER on class-incremental digits. A diverged run shows as nan.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from defaults import score, validation_dataset  # noqa: E402

from lifelong.config import OptimConfig  # noqa: E402
from lifelong.strategies import L2, MAS, SI, SLCA, UER  # noqa: E402
from lifelong.protocol.seeds import parse_seeds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    data = validation_dataset()
    candidates = [
        ("task_incremental", f"si lam={lam:g} damping={damping:g}", lambda lam=lam, damping=damping: SI(lam=lam, damping=damping))
        for lam in (0.1, 1.0) for damping in (1e-3, 0.1)
    ] + [
        ("task_incremental", f"mas lam={lam:g}", lambda lam=lam: MAS(lam=lam)) for lam in (0.01, 0.1, 1.0)
    ] + [
        ("task_incremental", f"l2 lam={lam:g}", lambda lam=lam: L2(lam=lam)) for lam in (0.01, 0.1, 1.0)
    ] + [
        ("class_incremental", f"slca backbone_lr_scale={s:g}", lambda s=s: SLCA(backbone_lr_scale=s)) for s in (0.0, 0.01, 0.1)
    ] + [
        ("class_incremental", f"uer cosine_scale={s:g}", lambda s=s: UER(cosine_scale=s)) for s in (8.0, 16.0, 32.0)
    ]
    print("| candidate | scenario | validation final | validation forgetting |")
    print("|---|---|---|---|")
    for scenario, name, make in candidates:
        final, forgetting = score(data, scenario, make, OptimConfig(), seeds)
        print(f"| {name} | {scenario} | {final:.3f} | {forgetting:.3f} |", flush=True)


if __name__ == "__main__":
    main()
