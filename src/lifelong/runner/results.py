"""The results store: one SQLite file holding every run, its configuration, matrix, metrics and cost.

Each write is one transaction on its own connection, in WAL mode, so a crash or a second process
writing at the same time never leaves a half-written record: a run row is created as ``running``,
each finished experience is written as it ends (a crashed run keeps what it finished), and the
final metrics and status land together.

A run records the process that runs it (host, pid and start time, in its environment); a run still
``running`` whose process on this host is gone (killed, out of memory, the machine rebooted) is read
back as ``interrupted``. A store opened ``read_only`` (what the read commands do) must exist, is
never written and can be a file the user may not write; a write that fails because the file is
read-only or the disk is full is a :class:`~lifelong.errors.StorageError` that says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError, MissingFileError, StorageError

SCHEMA_VERSION = 2

LOCK_TIMEOUT = 60.0
"""Seconds a write waits for another process's lock on the database before giving up."""

LOCK_NOTICE = 1.0
"""Seconds a write waits for a lock silently; after that it says that it is waiting (and for what)."""

logger = logging.getLogger(__name__)

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

#: Schema migrations: ``MIGRATIONS[v]`` upgrades a database at version v to v + 1. A new database is
#: created at version 1 by ``_SCHEMA`` and then migrated like an old one, so there is one path to the
#: current schema.
MIGRATIONS: dict[int, str] = {
    # 2: continual-evaluation curves; a run's config key (to find a finished sweep cell); groups that
    # link runs (the seeds of a multi-seed run, the cells of a sweep, a tune-then-evaluate protocol).
    1: """
CREATE TABLE curves (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    step INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    seconds REAL NOT NULL,
    experience INTEGER NOT NULL,
    accuracies TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
ALTER TABLE runs ADD COLUMN config_key TEXT;
CREATE INDEX runs_config_key ON runs(config_key, status);
CREATE TABLE groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    settings TEXT NOT NULL,
    summary TEXT
);
CREATE TABLE group_runs (
    group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    label TEXT NOT NULL,
    PRIMARY KEY (group_id, run_id)
)
""",
}

#: Settings that say where a run is recorded, displayed, checkpointed or written to, not what it computes: left
#: out of its key (resuming from a checkpoint reproduces the uninterrupted run).
_KEY_EXCLUDED = {"run": ("db", "progress", "checkpoint", "checkpoint_dir", "checkpoint_every_steps",
                         "keep_checkpoints", "keep_finished_checkpoints", "save_pretrained")}

_INHERITED: list[sqlite3.Connection] = []
"""Connections a forked child inherited from its parent's stores: kept referenced, never used nor closed in
the child (SQLite forbids carrying a connection across ``fork``; closing it there may checkpoint the
parent's write-ahead log)."""

_STORES: weakref.WeakSet[ResultsStore] = weakref.WeakSet()
"""The stores of this process that keep connections (:meth:`ResultsStore._reused`)."""


def _leave_inherited_connections() -> None:
    """In a forked child: every store opens its own connections; the parent's go to :data:`_INHERITED`."""
    for store in list(_STORES):
        _INHERITED.extend(store._open.values())
        store._open.clear()


os.register_at_fork(after_in_child=_leave_inherited_connections)


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
    config_key: str | None = None
    experiences: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    """Continual-evaluation points (step, samples, seconds, experience, accuracies), when recorded."""

    @property
    def is_adaptation(self) -> bool:
        """A test-time adaptation run (``lifelong tta``): the accuracy of online predictions per domain,
        no accuracy matrix over experiences and no training curve."""
        return "corruptions" in self.config and "strategy" not in self.config

    @property
    def rows(self) -> list[list[float]]:
        """The accuracy matrix: the final one, or for an unfinished run the rows of its finished
        experiences (those come with :meth:`ResultsStore.get`)."""
        return self.matrix if self.matrix is not None else [e["accuracies"] for e in self.experiences]


@dataclass
class GroupRecord:
    """Runs that belong together: the seeds of one configuration, a sweep, a tune-then-evaluate protocol."""

    id: int
    created: str
    kind: str
    name: str
    settings: dict[str, Any]
    summary: dict[str, Any] | None
    members: list[dict[str, Any]] = field(default_factory=list)
    """``{"run_id", "role", "label"}`` for each run, in the order they were added."""


_KEY_NEUTRAL: dict[str, dict[str, Any]] = {"optim": {"forecast_stop": None, "forecast_every": 25, "max_tokens": None,
                                                      "agvm": False, "agvm_params": {}}}
"""Settings added after runs were stored, left out of the key at the value that changes nothing: a run that
leaves them there finds the runs stored before they existed (a resumed sweep or benchmark retrains nothing)."""


def _kept_in_key(section: str, key: str, value: Any) -> bool:
    neutral = _KEY_NEUTRAL.get(section, {})
    return key not in _KEY_EXCLUDED.get(section, ()) and not (key in neutral and neutral[key] == value)


def config_key(config: dict[str, Any]) -> str:
    """A digest of a resolved configuration (seed included, storage and display settings excluded):
    two runs with the same key computed the same thing."""
    trimmed = {section: ({k: v for k, v in values.items() if _kept_in_key(section, k, v)}
                         if isinstance(values, dict) else values) for section, values in config.items()}
    return hashlib.sha256(json.dumps(trimmed, sort_keys=True, default=str).encode()).hexdigest()


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


def process_identity() -> dict[str, Any]:
    """This process as a run records it: host, pid and (on Linux) its start time, which tells a live
    process from a later one that reused the pid."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}


def _start_time(pid: int) -> str | None:
    """Process ``pid``'s start time in clock ticks since boot, "zombie" for one that has exited but
    not been reaped, None where ``/proc`` does not say (not Linux, no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # from field 3 (state) on; the name may hold spaces
    return "zombie" if fields[0] == "Z" else fields[19]  # field 22: starttime


def process_alive(process: dict[str, Any]) -> bool:
    """Whether a recorded process (:func:`process_identity`) still runs. One on another host, or on a
    system without POSIX signals, cannot be checked and counts as alive."""
    if process.get("host") != socket.gethostname() or os.name != "posix":
        return True
    pid = int(process["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it exists
        pass
    started = _start_time(pid)
    return started != "zombie" and (started is None or process.get("started") in (None, started))


class ResultsStore:
    """Runs in a SQLite database at ``path``, created on first use unless ``read_only``: then the file
    must exist and is only read (it may be a file the user cannot write)."""

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._open: dict[int, sqlite3.Connection] = {}
        """A writable store's connection of each thread (:meth:`_reused`)."""
        _STORES.add(self)
        if self.path.is_dir():
            raise ConfigError(f"run.db: {str(self.path)!r} is a directory; give a file path such as "
                              "'lifelong-runs.db'")
        if read_only and not self.path.is_file():
            raise MissingFileError(f"--db: no results database {str(self.path)!r}; check the path (`lifelong run` "
                                   "creates one)")
        if not self.path.parent.exists():
            raise ConfigError(f"run.db: the folder {str(self.path.parent)!r} does not exist; create it first")
        with self._snapshot() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(f"run.db: {str(self.path)!r} has schema version {version}, newer than this "
                              f"lifelong ({SCHEMA_VERSION}); upgrade lifelong")
        if version < SCHEMA_VERSION:
            if read_only and version == 0:
                raise ConfigError(f"--db: {str(self.path)!r} is not a results database (it holds no runs table); "
                                  "give a database lifelong wrote")
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Create the schema in a new file or bring an older one (at ``version``) to :data:`SCHEMA_VERSION`;
        a read-only store is upgraded too (it is an existing database, not a new one) when it can be."""
        try:
            with self._session(write=True) as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have done it
                if version == 0:
                    _execute_script(conn, _SCHEMA)
                    version = 1
                    conn.execute(f"PRAGMA user_version = {version}")
                while version < SCHEMA_VERSION:
                    _execute_script(conn, MIGRATIONS[version])
                    version += 1
                    conn.execute(f"PRAGMA user_version = {version}")
        except StorageError as error:
            if not self.read_only:
                raise
            raise StorageError(f"run.db: {str(self.path)!r} has schema version {version}, older than this "
                               f"lifelong's {SCHEMA_VERSION}, and cannot be upgraded here ({error}); upgrade it once "
                               "with a command that can write it") from None

    def _connect(self, write: bool, kept: bool = False) -> sqlite3.Connection:
        """A connection: a plain one in WAL mode with foreign keys on, for writing or ``kept`` for the
        transactions to come (then usable from any thread: :meth:`_reused` keeps one per thread), or for
        reading a read-only store one that cannot write (falling back to ``immutable``, which needs no lock
        file, when the folder does not let SQLite create one). A writer waits :data:`LOCK_NOTICE` for a lock
        before saying so (:meth:`_begin_write`); a reader, which in WAL mode waits only while another process
        sets the database up, waits quietly."""
        timeout = LOCK_NOTICE if write else LOCK_TIMEOUT
        try:
            if write or kept:
                conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=not kept)
            else:
                uri = self.path.resolve().as_uri()
                conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None)
                try:
                    conn.execute("PRAGMA user_version")
                except sqlite3.OperationalError:
                    conn.close()
                    conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
                return conn
        except sqlite3.Error as error:
            raise ConfigError(f"run.db: cannot open {str(self.path)!r}: {error}") from None
        self._write_ahead_log(conn)
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def close(self) -> None:
        """Close the connections this store keeps (they close when it is garbage-collected or the process
        ends, too). The last connection to close moves the write-ahead log into the database file, so a
        copy of that file alone (without its ``-wal``) holds every run only after it; SQLite readers see
        every committed run at any time. The store opens connections again when used."""
        for conn in self._open.values():
            conn.close()
        self._open.clear()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reused(self, write: bool) -> sqlite3.Connection:
        """This thread's connection to a writable store, opened (in WAL mode) once and kept: a fresh
        connection costs about 0.25 ms a write transaction (the log and its index opened, the first lock),
        a kept one a few microseconds. Its busy timeout is set for each transaction (:meth:`_connect`'s). A
        forked child opens its own (:func:`_leave_inherited_connections`). A read-only store opens one a
        transaction (an ``immutable`` connection kept would never see later writes)."""
        key = threading.get_ident()  # a dead thread's id may come back: kept connections serve any thread
        conn = self._open.get(key)
        if conn is None:
            conn = self._open[key] = self._connect(write, kept=True)
        conn.execute(f"PRAGMA busy_timeout = {int((LOCK_NOTICE if write else LOCK_TIMEOUT) * 1000)}")
        return conn

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: the write lock, waited for)."""
        if self.read_only:
            raise StorageError(f"run.db: {str(self.path)!r} was opened read-only; open it without read_only to write")
        return self._session(write=True)

    def _snapshot(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One read transaction: a consistent snapshot, no lock taken, nothing written."""
        return self._session(write=False)

    @contextlib.contextmanager
    def _session(self, write: bool) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction, committed at the end. SQLite's own errors for a full disk or
        a read-only file become a :class:`StorageError` that names the cause."""
        kept = not self.read_only
        try:
            conn = self._reused(write) if kept else self._connect(write)
        except sqlite3.DatabaseError as error:
            raise self._storage_error(error) from None
        try:
            try:
                if write:
                    self._begin_write(conn)
                else:
                    conn.execute("BEGIN")
                try:
                    yield conn
                except BaseException:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:  # SQLite already rolled back (a full disk does)
                        pass
                    raise
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as error:
                raise self._storage_error(error) from None
        finally:
            if not kept:
                conn.close()

    def _storage_error(self, error: sqlite3.DatabaseError) -> Exception:
        """The user-facing error for a failed statement: a full disk or a read-only file as a
        :class:`StorageError`, a file that is no database as a :class:`ConfigError`; anything else
        unchanged (a bug)."""
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        text = str(error)
        if code == sqlite3.SQLITE_FULL or "disk is full" in text:
            return StorageError(f"run.db: the disk holding {str(self.path)!r} is full ({text}); free some space, "
                                "then run again")
        if code == sqlite3.SQLITE_READONLY or "readonly" in text:
            return StorageError(f"run.db: {str(self.path)!r} is read-only ({text}); give a file you can write "
                                "with --db (the read commands runs, show, compare, report and export can read it)")
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            return ConfigError(f"run.db: {str(self.path)!r} is not a results database ({text}); give a new file name "
                               "or a database lifelong wrote")
        return error

    def _begin_write(self, conn: sqlite3.Connection) -> None:
        """Take the write lock; when another process holds it past :data:`LOCK_NOTICE`, say so and wait
        for it up to :data:`LOCK_TIMEOUT` in all."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
        logger.warning("run.db: %r is locked by another process writing to it; waiting up to %.0f s", str(self.path),
                       LOCK_TIMEOUT)
        conn.execute(f"PRAGMA busy_timeout = {int((LOCK_TIMEOUT - LOCK_NOTICE) * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            raise ConfigError(f"run.db: {str(self.path)!r} stayed locked by another process for {LOCK_TIMEOUT:.0f} s; "
                              "retry when it is done") from None

    def _write_ahead_log(self, conn: sqlite3.Connection) -> None:
        """Put the database in WAL mode. Switching a new file's journal needs it to itself, which another
        process opening it at the same moment (the ranks of a torchrun job, two runs started together)
        can deny with "database is locked" without waiting: try again until the connection's timeout."""
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "readonly" in str(error):
                    raise self._storage_error(error) from None
                if "locked" not in str(error) and "busy" not in str(error):
                    raise ConfigError(f"run.db: cannot use {str(self.path)!r} ({error})") from None
                if time.monotonic() > deadline:
                    raise ConfigError(f"run.db: {str(self.path)!r} stayed locked by another process for "
                                      f"{LOCK_TIMEOUT:.0f} s; retry when it is done") from None
                time.sleep(0.02)
            except sqlite3.DatabaseError as error:
                raise ConfigError(f"run.db: {str(self.path)!r} is not a results database ({error}); "
                                  "give a new file name or a database lifelong wrote") from None

    def start_run(self, name: str, strategy: str, seed: int, config: dict[str, Any],
                  env: dict[str, Any] | None = None) -> int:
        """Create a ``running`` run and return its id; the run records this process as the one running it."""
        recorded = {**(env or environment()), "process": process_identity()}
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO runs (created, status, name, strategy, seed, config, environment, config_key) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?, ?)",
                (_now(), name, strategy, seed, json.dumps(config), json.dumps(recorded), config_key(config)))
            return int(cursor.lastrowid)  # type: ignore[arg-type]

    def record_initial(self, run_id: int, initial: list[float]) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE runs SET initial = ? WHERE id = ?", (json.dumps(initial), run_id))

    def record_experience(self, run_id: int, index: int, accuracies: list[float], cost: dict[str, Any]) -> None:
        """Store the accuracy row and cost of a finished experience (replacing a previous attempt's)."""
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO experiences (run_id, idx, accuracies, cost) VALUES (?, ?, ?, ?)",
                         (run_id, index, json.dumps(accuracies), json.dumps(cost)))

    def finish_run(self, run_id: int, matrix: list[list[float]], metrics: dict[str, Any],
                   curve: list[dict[str, Any]] | None = None) -> None:
        """Mark a run finished with its matrix, metrics and (when one was kept) its continual-evaluation
        curve, in one transaction: a finished run always has its curve, and a crash before this leaves
        the run unfinished, never finished without its curve."""
        with self._transaction() as conn:
            if curve is not None:
                conn.execute("DELETE FROM curves WHERE run_id = ?", (run_id,))
                conn.executemany(
                    "INSERT INTO curves (run_id, idx, step, samples, seconds, experience, accuracies) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(run_id, i, p["step"], p["samples"], p["seconds"], p["experience"], json.dumps(p["accuracies"]))
                     for i, p in enumerate(curve)])
            conn.execute("UPDATE runs SET status = 'finished', finished = ?, matrix = ?, metrics = ?, error = NULL "
                         "WHERE id = ?", (_now(), json.dumps(matrix), json.dumps(metrics), run_id))

    def import_run(self, record: RunRecord) -> int:
        """Store a finished run of another store (a cluster job's) as a new run of this one, with its
        configuration, environment, initial accuracies, experiences, matrix, metrics and curve; its id here.
        The job's store is written by the job alone and this one by its driver alone, so no two processes
        on two machines ever write one SQLite file."""
        if record.status != "finished" or record.matrix is None or record.metrics is None:
            raise ValueError(f"run {record.id} is {record.status}; only a finished run is imported")
        run_id = self.start_run(record.name, record.strategy, record.seed, record.config, record.environment)
        if record.initial is not None:
            self.record_initial(run_id, record.initial)
        for experience in record.experiences:
            self.record_experience(run_id, experience["index"], experience["accuracies"], experience["cost"])
        self.finish_run(run_id, record.matrix, record.metrics, record.curve or None)
        return run_id

    def add_metrics(self, run_id: int, values: dict[str, Any]) -> None:
        """Add ``values`` to a finished run's metrics (replacing those of the same name), in one
        transaction: what a protocol derives from the run afterwards (a budget protocol's spent compute),
        stored beside what the runner measured."""
        with self._transaction() as conn:
            row = conn.execute("SELECT metrics FROM runs WHERE id = ? AND status = 'finished'", (run_id,)).fetchone()
            if row is None:
                raise ConfigError(f"run id {run_id} is not a finished run in {str(self.path)!r}; only a finished "
                                  "run's metrics can be added to")
            metrics = {**json.loads(row[0] or "{}"), **values}
            conn.execute("UPDATE runs SET metrics = ? WHERE id = ?", (json.dumps(metrics), run_id))

    def set_status(self, run_id: int, status: str, error: str | None = None) -> None:
        """Mark a run ``failed``, ``interrupted`` or ``running`` again (then run by this process), with a
        message."""
        with self._transaction() as conn:
            conn.execute("UPDATE runs SET status = ?, error = ? WHERE id = ?", (status, error, run_id))
            if status == "running":
                conn.execute("UPDATE runs SET environment = json_set(environment, '$.process', json(?)) WHERE id = ?",
                             (json.dumps(process_identity()), run_id))

    def runs(self) -> list[RunRecord]:
        """Every run, oldest first (without per-experience rows)."""
        with self._snapshot() as conn:
            rows = conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
            names = [d[0] for d in conn.execute("SELECT * FROM runs LIMIT 0").description]
        return [self._record(dict(zip(names, row, strict=True))) for row in rows]

    def get(self, run_id: int) -> RunRecord:
        """One run with its per-experience rows; :class:`ConfigError` if there is none."""
        with self._snapshot() as conn:
            cursor = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
            row = cursor.fetchone()
            names = [d[0] for d in cursor.description]
            exps = conn.execute("SELECT idx, accuracies, cost FROM experiences WHERE run_id = ? ORDER BY idx",
                                (run_id,)).fetchall()
        if row is None:
            raise ConfigError(f"run id {run_id} is not in {str(self.path)!r}; `lifelong runs` lists the stored runs")
        record = self._record(dict(zip(names, row, strict=True)))
        record.experiences = [{"index": i, "accuracies": json.loads(a), "cost": json.loads(c)} for i, a, c in exps]
        record.curve = self.curve(run_id)
        return record

    def curve(self, run_id: int) -> list[dict[str, Any]]:
        """A run's continual-evaluation points, in order (empty if none were recorded)."""
        with self._snapshot() as conn:
            rows = conn.execute("SELECT step, samples, seconds, experience, accuracies FROM curves "
                                "WHERE run_id = ? ORDER BY idx", (run_id,)).fetchall()
        return [{"step": s, "samples": n, "seconds": t, "experience": e, "accuracies": json.loads(a)}
                for s, n, t, e, a in rows]

    def find_finished(self, config: dict[str, Any]) -> int | None:
        """The id of the latest finished run of this resolved configuration (see :func:`config_key`)."""
        with self._snapshot() as conn:
            row = conn.execute("SELECT max(id) FROM runs WHERE config_key = ? AND status = 'finished'",
                               (config_key(config),)).fetchone()
        return None if row[0] is None else int(row[0])

    def find_interrupted(self, config: dict[str, Any]) -> int | None:
        """The id of the latest run of this resolved configuration that was interrupted (stopped, or its
        process gone) and never finished since: what a protocol resumes rather than starting afresh."""
        with self._snapshot() as conn:
            rows = conn.execute("SELECT id FROM runs WHERE config_key = ? AND status IN ('running', 'interrupted') "
                                "ORDER BY id DESC", (config_key(config),)).fetchall()
        return next((int(run_id) for run_id, in rows if self.get(int(run_id)).status == "interrupted"), None)

    def create_group(self, kind: str, name: str, settings: dict[str, Any]) -> int:
        """A new group of runs (``seeds``, ``sweep``, ``protocol`` or ``budget``) and its id."""
        with self._transaction() as conn:
            cursor = conn.execute("INSERT INTO groups (created, kind, name, settings) VALUES (?, ?, ?, ?)",
                                  (_now(), kind, name, json.dumps(settings)))
            return int(cursor.lastrowid)  # type: ignore[arg-type]

    def find_group(self, kind: str, name: str) -> int | None:
        """The latest group of this kind and name (a sweep or protocol being resumed)."""
        with self._snapshot() as conn:
            row = conn.execute("SELECT max(id) FROM groups WHERE kind = ? AND name = ?", (kind, name)).fetchone()
        return None if row[0] is None else int(row[0])

    def add_to_group(self, group_id: int, run_id: int, role: str, label: str) -> None:
        """Link a run to a group with its role (``seed``, ``cell``, ``tuning``, ``evaluation``) and a label."""
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO group_runs (group_id, run_id, role, label) VALUES (?, ?, ?, ?)",
                         (group_id, run_id, role, label))

    def set_group_summary(self, group_id: int, summary: dict[str, Any]) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE groups SET summary = ? WHERE id = ?", (json.dumps(summary), group_id))

    def group(self, group_id: int) -> GroupRecord:
        """One group with its members; :class:`ConfigError` if there is none."""
        with self._snapshot() as conn:
            row = conn.execute("SELECT id, created, kind, name, settings, summary FROM groups WHERE id = ?",
                               (group_id,)).fetchone()
            members = conn.execute("SELECT run_id, role, label FROM group_runs WHERE group_id = ? ORDER BY rowid",
                                   (group_id,)).fetchall()
        if row is None:
            raise ConfigError(f"group id {group_id} is not in {str(self.path)!r}")
        return GroupRecord(row[0], row[1], row[2], row[3], json.loads(row[4]),
                           json.loads(row[5]) if row[5] else None,
                           [{"run_id": r, "role": role, "label": label} for r, role, label in members])

    def groups(self) -> list[GroupRecord]:
        """Every group, oldest first, with its members."""
        with self._snapshot() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM groups ORDER BY id").fetchall()]
        return [self.group(group_id) for group_id in ids]

    def _record(self, row: dict[str, Any]) -> RunRecord:
        """A run row as a :class:`RunRecord`; one left ``running`` by a process that is gone is
        ``interrupted``, with the command that continues it."""
        for key in ("config", "environment", "initial", "matrix", "metrics"):
            row[key] = json.loads(row[key]) if row[key] is not None else None
        record = RunRecord(**row)
        process = (record.environment or {}).get("process")
        if record.status == "running" and isinstance(process, dict) and not process_alive(process):
            record.status = "interrupted"
            record.error = (f"the process that ran it (pid {process['pid']}) ended without finishing it; "
                            f"`lifelong run --resume {record.id} --db {self.path}` continues it")
        return record


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements inside the open transaction (``executescript`` would commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
