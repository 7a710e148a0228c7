"""What the long benchmarks share: every finished run appended to a JSON-lines file as it ends (a crash
or an interrupt loses no finished run, and a rerun with the same settings reuses them), and mean ± std
over seeds for the tables."""

from __future__ import annotations

import json
import statistics
from concurrent.futures import Future
from pathlib import Path
from typing import Any


def finished_runs(path: Path, settings: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The runs recorded in ``path`` with these settings, by (group, row label, seed)."""
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["scenario"], r["row"], r["seed"]): r["result"] for r in records if r["settings"] == settings}


def record(path: Path, settings: dict[str, Any], group: str, label: str, seed: int, future: Future) -> None:
    """Append a finished run to ``path`` as it ends."""
    if future.exception() is None:
        line = {"settings": settings, "scenario": group, "row": label, "seed": seed, "result": future.result()}
        with path.open("a") as file:
            file.write(json.dumps(line) + "\n")


def row_results(done: dict[tuple[str, str, int], dict[str, Any]], futures: dict[Any, Future], group: str,
                row: Any, label: str, seeds: list[int], columns: int) -> list[dict[str, Any]] | None:
    """A row's result for every seed (recorded earlier or just run), or None after printing the row's
    failure (its first error, in a table of ``columns`` columns)."""
    results = [done.get((group, label, seed)) or futures[row, seed].result() for seed in seeds]
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        print(f"| {label} | failed in {len(errors)} of {len(results)} seeds: {errors[0]} |" + " |" * (columns - 2),
              flush=True)
        return None
    return results


def spread(values: list[float | None], digits: int = 3) -> str:
    """Mean ± std over seeds (the value alone for one seed), ``-`` for a metric a run does not have (a joint
    run's forgetting)."""
    if any(value is None for value in values):
        return "-"
    if len(values) == 1:  # one seed has no spread to show
        return f"{values[0]:.{digits}f}"
    deviation = statistics.stdev(values)  # type: ignore[arg-type]
    return f"{statistics.mean(values):.{digits}f} ± {deviation:.{digits}f}"
