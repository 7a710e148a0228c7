"""Whole-process times of the command line, beside ``python -c "import torch"``.

    OMP_NUM_THREADS=1 python benchmarks/startup.py [--repeats 7]

Each command runs in a fresh process, round-robin over the commands ``repeats`` times (so a busy
spell of a shared machine falls on every command alike), and the median wall time of each is
printed. ``lifelong run`` is the default job (ER on class-incremental digits, checkpoints on) into a
throwaway results database; its training seconds are read back from the stored run, so the table can
show what the run costs beyond importing torch and training. A second probe of each command, not
timed, says whether it imported torch. Beside them, the cost any PyTorch training script pays before
its first step: building an optimizer imports ``torch._dynamo`` (torch 2.13).

Acceptance (issue 17): ``lifelong run`` at most 1.5 s above ``import torch`` plus its training time;
``lifelong runs`` at most 0.5 s above ``import torch``, or without importing torch at all.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lifelong.runner.results import ResultsStore


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def imports_torch(arguments: list[str], env: dict[str, str]) -> bool:
    """Whether ``lifelong ARGUMENTS`` imports torch."""
    probe = f"import sys\nfrom lifelong.cli import main\nmain({arguments!r})\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], check=True, env=env, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tempfile.TemporaryDirectory() as folder:
        database = str(Path(folder) / "runs.db")
        lifelong = [sys.executable, "-m", "lifelong"]
        subprocess.run([*lifelong, "run", "--db", database], check=True, env=env, stdout=subprocess.DEVNULL)
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], False),
            'python -c "import torch"': ([sys.executable, "-c", "import torch"], True),
            # what any training script pays before its first step: torch.optim imports torch._dynamo
            "python: import torch, build an SGD optimizer": (
                [sys.executable, "-c", "import torch; torch.optim.SGD([torch.zeros(1)], lr=0.1)"], True),
            "lifelong --help": ([*lifelong, "--help"], ["--help"]),
            "lifelong runs": ([*lifelong, "runs", "--db", database], ["runs", "--db", database]),
            "lifelong show 1": ([*lifelong, "show", "1", "--db", database], ["show", "1", "--db", database]),
            "lifelong compare 1 1": ([*lifelong, "compare", "1", "1", "--db", database],
                                     ["compare", "1", "1", "--db", database]),
            "lifelong run (default job)": ([*lifelong, "run", "--db", database], True),
        }
        # name -> (command line, whether it imports torch or the CLI arguments to probe it with)
        times: dict[str, list[float]] = {name: [] for name in commands}
        training: list[float] = []
        store = ResultsStore(database)
        for _ in range(args.repeats):
            for name, (command, _) in commands.items():
                times[name].append(timed(command, env))
                if name.startswith("lifelong run"):
                    latest = max(record.id for record in store.runs())
                    training.append(sum(e["cost"]["seconds"] for e in store.get(latest).experiences))
        torched = {name: imports_torch(probe, env) if isinstance(probe, list) else probe
                   for name, (_, probe) in commands.items()}
    torch_seconds = statistics.median(times['python -c "import torch"'])
    train_seconds = statistics.median(training)
    print(f"python {sys.version.split()[0]}, {args.repeats} fresh processes per command, round-robin, "
          f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}")
    print()
    print("| command | median (s) | min (s) | above `import torch` (s) | imports torch |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        torch_imported = "yes" if torched[name] else "no"
        print(f"| {name} | {median:.2f} | {min(values):.2f} | {median - torch_seconds:+.2f} | {torch_imported} |")
    run_seconds = statistics.median(times["lifelong run (default job)"])
    print()
    optimizer_seconds = statistics.median(times["python: import torch, build an SGD optimizer"])
    print(f"`lifelong run`: training {train_seconds:.2f} s (median of the stored runs); run - (import torch + "
          f"training) = {run_seconds - torch_seconds - train_seconds:.2f} s (acceptance: <= 1.5 s), of which "
          f"{optimizer_seconds - torch_seconds:.2f} s the first optimizer's import of torch._dynamo")


if __name__ == "__main__":
    main()
