"""The results store: one SQLite file holding every run, its configuration, matrix, metrics and cost.

Each write is one transaction on its own connection, in WAL mode, so a crash or a second process
writing at the same time never leaves a half-written record: a run row is created as ``running``,
each finished experience is written as it ends (a crashed run keeps what it finished), and the
final metrics and status land together.
"""

from __future__ import annotations

import json
import platform
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,
    name TEXT NOT NULL,
    strategy TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config TEXT NOT NULL,
    environment TEXT NOT NULL,
    initial TEXT,
    matrix TEXT,
    metrics TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS experiences (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    accuracies TEXT NOT NULL,
    cost TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
"""

#: Schema migrations: ``MIGRATIONS[v]`` upgrades a database at version v to v + 1.
MIGRATIONS: dict[int, str] = {}


@dataclass
class RunRecord:
    """One stored run."""

    id: int
    created: str
    finished: str | None
    status: str
    name: str
    strategy: str
    seed: int
    config: dict[str, Any]
    environment: dict[str, Any]
    initial: list[float] | None
    matrix: list[list[float]] | None
    metrics: dict[str, Any] | None
    error: str | None
    experiences: list[dict[str, Any]] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def environment() -> dict[str, Any]:
    """Versions of the package, torch, numpy and Python, the host, and the git commit if any."""
    import numpy
    import torch

    try:
        version = metadata.version("lifelong")
    except metadata.PackageNotFoundError:
        version = "unknown"
    try:
        found = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True,
                               timeout=5, cwd=Path(__file__).parent)
        commit = found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"lifelong": version, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(), "git_commit": commit}


class ResultsStore:
    """Runs in a SQLite database at ``path`` (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ConfigError(f"run.db: {str(self.path)!r} is a directory; give a file path such as "
                              "'lifelong-runs.db'")
        if not self.path.parent.exists():
            raise ConfigError(f"run.db: the folder {str(self.path.parent)!r} does not exist; create it first")
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                _execute_script(conn, _SCHEMA)
                version = SCHEMA_VERSION
                conn.execute(f"PRAGMA user_version = {version}")
            elif version > SCHEMA_VERSION:
                raise ConfigError(f"run.db: {str(self.path)!r} has schema version {version}, newer than this "
                                  f"lifelong ({SCHEMA_VERSION}); upgrade lifelong")
            while version < SCHEMA_VERSION:
                _execute_script(conn, MIGRATIONS[version])
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.Error as error:
            raise ConfigError(f"run.db: cannot open {str(self.path)!r}: {error}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def start_run(self, name: str, strategy: str, seed: int, config: dict[str, Any],
                  env: dict[str, Any] | None = None) -> int:
        """Create a ``running`` run and return its id."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO runs (created, status, name, strategy, seed, config, environment) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?)",
                (_now(), name, strategy, seed, json.dumps(config), json.dumps(env or environment())))
            return int(cursor.lastrowid)  # type: ignore[arg-type]

    def record_initial(self, run_id: int, initial: list[float]) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE runs SET initial = ? WHERE id = ?", (json.dumps(initial), run_id))

    def record_experience(self, run_id: int, index: int, accuracies: list[float], cost: dict[str, Any]) -> None:
        """Store the accuracy row and cost of a finished experience (replacing a previous attempt's)."""
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO experiences (run_id, idx, accuracies, cost) VALUES (?, ?, ?, ?)",
                         (run_id, index, json.dumps(accuracies), json.dumps(cost)))

    def finish_run(self, run_id: int, matrix: list[list[float]], metrics: dict[str, Any]) -> None:
        """Mark a run finished with its matrix and metrics, in one transaction."""
        with self._transaction() as conn:
            conn.execute("UPDATE runs SET status = 'finished', finished = ?, matrix = ?, metrics = ?, error = NULL "
                         "WHERE id = ?", (_now(), json.dumps(matrix), json.dumps(metrics), run_id))

    def set_status(self, run_id: int, status: str, error: str | None = None) -> None:
        """Mark a run ``failed``, ``interrupted`` or ``running`` again, with a message."""
        with self._transaction() as conn:
            conn.execute("UPDATE runs SET status = ?, error = ? WHERE id = ?", (status, error, run_id))

    def runs(self) -> list[RunRecord]:
        """Every run, oldest first (without per-experience rows)."""
        with self._transaction() as conn:
            rows = conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
            names = [d[0] for d in conn.execute("SELECT * FROM runs LIMIT 0").description]
        return [_record(dict(zip(names, row, strict=True))) for row in rows]

    def get(self, run_id: int) -> RunRecord:
        """One run with its per-experience rows; :class:`ConfigError` if there is none."""
        with self._transaction() as conn:
            cursor = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
            row = cursor.fetchone()
            names = [d[0] for d in cursor.description]
            exps = conn.execute("SELECT idx, accuracies, cost FROM experiences WHERE run_id = ? ORDER BY idx",
                                (run_id,)).fetchall()
        if row is None:
            raise ConfigError(f"run id {run_id} is not in {str(self.path)!r}; `lifelong runs` lists the stored runs")
        record = _record(dict(zip(names, row, strict=True)))
        record.experiences = [{"index": i, "accuracies": json.loads(a), "cost": json.loads(c)} for i, a, c in exps]
        return record


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements inside the open transaction (``executescript`` would commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _record(row: dict[str, Any]) -> RunRecord:
    for key in ("config", "environment", "initial", "matrix", "metrics"):
        row[key] = json.loads(row[key]) if row[key] is not None else None
    return RunRecord(**row)
