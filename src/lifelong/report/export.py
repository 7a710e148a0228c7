"""The results store as CSV (one row per run, config and metrics flattened, for spreadsheets and
pandas) or JSON (everything: runs with matrices, per-experience costs, curves, and groups)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Any

from lifelong.errors import ConfigError
from lifelong.report.budget import memory_bytes
from lifelong.runner.results import SCHEMA_VERSION, ResultsStore

FORMATS = ("csv", "json")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list) else value


def export_rows(store: ResultsStore) -> list[dict[str, Any]]:
    """One flat dict per run: identity, ``metrics.*`` (a budget protocol's ``metrics.budget.*`` among them),
    ``config.*``, the cost summed over experiences and the most memory the strategy kept."""
    rows = []
    for summary in store.runs():
        record = store.get(summary.id)
        row: dict[str, Any] = {"id": record.id, "created": record.created, "status": record.status,
                               "stream": record.name, "strategy": record.strategy, "seed": record.seed}
        costs = [e["cost"] for e in record.experiences]
        row.update({"train_seconds": sum(c["seconds"] for c in costs), "samples": sum(c["samples"] for c in costs),
                    "steps": sum(c["steps"] for c in costs), "flops": sum(c.get("flops", 0.0) for c in costs),
                    "memory_bytes": memory_bytes(record), "curve_points": len(record.curve)})
        _flatten("metrics", record.metrics or {}, row)
        _flatten("config", record.config, row)
        rows.append(row)
    return rows


def export(store: ResultsStore, format: str) -> str:
    """The whole store in ``format`` (``csv`` or ``json``)."""
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "json":
        runs = [asdict(store.get(r.id)) for r in store.runs()]
        return json.dumps({"schema_version": SCHEMA_VERSION, "runs": runs,
                           "groups": [asdict(g) for g in store.groups()]}, indent=1)
    rows = export_rows(store)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
