"""Bad input to the ``lifelong`` command (issue 18): exit code 2, exactly one line on stderr that names
the problem, nothing on stdout, and a results store left as it was.

The inputs that used to end in a traceback (:data:`TRACEBACKS`) run the real command, each in its own
process, two at a time. A full disk cannot be made on demand, so those cases start the command through
a small driver that makes one write fail with the error the operating system or SQLite gives when the
disk is full (``ENOSPC``, ``SQLITE_FULL``), then calls ``lifelong.cli.main`` exactly as the ``lifelong``
script does. The mistakes whose message only had to get clearer (:data:`MISTAKES`) call
``lifelong.cli.main`` in this process, which is the same code without a Python start-up each.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lifelong import OptimConfig, ResultsStore, class_incremental, from_arrays, mlp, synthetic, train
from lifelong.cli import main
from lifelong.models.nets import cnn
from lifelong.strategies import Naive
from lifelong.tta.loop import run_tta
from tests.child import child_environment

DRIVER = """
import errno, sqlite3, sys, types
fault, argv = sys.argv[1], sys.argv[2:]
if fault.startswith("sql:"):  # SQLite answers the statement as it does on a full disk
    import lifelong.runner.results as results

    class Full(sqlite3.Connection):
        def execute(self, sql, *args):
            if sql.lstrip().startswith(fault[4:]):
                raise sqlite3.OperationalError("database or disk is full")
            return super().execute(sql, *args)

        def executemany(self, sql, *args):
            if sql.lstrip().startswith(fault[4:]):
                raise sqlite3.OperationalError("database or disk is full")
            return super().executemany(sql, *args)

    def connect(*args, **kwargs):
        return sqlite3.connect(*args, factory=Full, **kwargs)

    results.sqlite3 = types.SimpleNamespace(**{**vars(sqlite3), "connect": connect})
elif fault == "checkpoint":  # the checkpoint file cannot be written: no space left on the device
    import lifelong.runner.checkpoint as checkpoint

    def full(payload, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    checkpoint.write_atomic = full
from lifelong.cli import main
sys.exit(main(argv))
"""


SMALL = ["--set", "dataset.name=synthetic", "--set", "dataset.n_classes=4", "--set", "dataset.n_features=6",
         "--set", "scenario.n_experiences=2", "--set", "optim.epochs=1", "--set", "model.hidden=[8]",
         "--set", "run.progress=false"]
"""A run of a few steps: 2 experiences of 2 classes, 60 training samples each, one epoch of 4 steps."""


@dataclass
class Case:
    """One command: its arguments (``{db}`` and ``{folder}`` filled in), an optional injected fault, the
    message its one stderr line must hold, and how the store may differ afterwards (by default not at all)."""

    argv: list[str]
    message: str
    fault: str = "none"
    prepare: Callable[[Path], None] = lambda folder: None
    db: str = "runs.db"
    stored: Callable[[ResultsStore], None] | None = None
    """Checks of the store when the command is meant to leave a trace (a run marked failed)."""
    started: bool = False
    """The command got as far as training (a disk that fills up while it runs): it printed the stream."""


def write_csv(folder: Path, text: str) -> None:
    (folder / "table.csv").write_text(text)


def images(folder: Path, broken: dict[str, bytes] | None = None) -> None:
    for name, colour in (("cats", 40), ("dogs", 200)):
        (folder / "images" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((6, 6, 3), colour + i, dtype=np.uint8)).save(folder / "images" / name / f"{i}.png")
    whole = (folder / "images" / "dogs" / "0.png").read_bytes()
    for name, data in (broken or {}).items():
        (folder / "images" / "cats" / name).write_bytes(data if data else whole[:len(whole) // 2])


CSV_RUN = ["run", "--db", "{db}", "--set", "dataset.name=csv", "--set", 'dataset.path="{folder}/table.csv"',
           "--set", "scenario.n_experiences=2", "--set", "optim.epochs=1"]
IMAGE_RUN = ["run", "--db", "{db}", "--set", "dataset.name=image_folder", "--set",
             'dataset.path="{folder}/images"', "--set", "scenario.n_experiences=2", "--set", "optim.epochs=1"]


def failed_without_curve(store: ResultsStore) -> None:
    new = store.get(3)
    assert new.status == "failed" and new.matrix is None and new.curve == [] and "disk" in new.error


def failed_at_checkpoint(store: ResultsStore) -> None:
    new = store.get(3)
    # the first checkpoint is at the end of experience 0, after its row was stored: that row stays, no more
    assert new.status == "failed" and "No space left on device" in new.error and len(new.experiences) == 1
    assert new.matrix is None


TRACEBACKS = {
    "csv-ragged-row": Case(CSV_RUN, "row 3 of", prepare=lambda f: write_csv(f, "a,b,label\n1,2,x\n3,4\n")),
    "csv-binary": Case(CSV_RUN, "is not a text CSV file",
                       prepare=lambda f: (f / "table.csv").write_bytes(bytes(range(256)) * 8)),
    "csv-empty-label": Case(CSV_RUN, "row 3 of",
                            prepare=lambda f: write_csv(f, "a,b,label\n1,2,x\n3,4,\n5,6,y\n")),
    "image-corrupt": Case(IMAGE_RUN, "garbage.png' is not a readable image",
                          prepare=lambda f: images(f, {"garbage.png": b"not an image"})),
    "image-truncated": Case(IMAGE_RUN, "cut.png' is not a readable image",
                            prepare=lambda f: images(f, {"cut.png": b""})),
    "image-size-one-side": Case([*IMAGE_RUN, "--set", "dataset.size=[8]"], "dataset.size must be [height, width]",
                                prepare=images),
    "image-size-zero": Case([*IMAGE_RUN, "--set", "dataset.size=[0,0]"], "got [0, 0]", prepare=images),
    "lr-inf": Case(["run", "--db", "{db}", *SMALL, "--set", "optim.lr=inf"], "optim.lr: inf is not a finite number"),
    "report-of-tta": Case(["report", "2", "--db", "{db}", "-o", "{folder}/report.html"],
                          "run 2 is a test-time adaptation run"),
    # the run is stored once it is prepared, before the stream is printed: a full disk then prints nothing else
    "disk-full-at-start": Case(["run", "--db", "{db}", *SMALL], "the disk holding", fault="sql:INSERT INTO runs"),
    "disk-full-at-checkpoint": Case(["run", "--db", "{db}", *SMALL], "No space left on device", fault="checkpoint",
                                    stored=failed_at_checkpoint, started=True),
    "disk-full-at-curve": Case(["run", "--db", "{db}", *SMALL, "--set", "run.eval_every_steps=2"], "the disk holding",
                               fault="sql:INSERT INTO curves", stored=failed_without_curve, started=True),
}

MISTAKES = {
    "csv-is-a-directory": Case(CSV_RUN, "is a directory", prepare=lambda f: (f / "table.csv").mkdir()),
    "unknown-field": Case(["run", "--db", "{db}", "--set", "optim.colour=1"],
                          "optim.colour: unknown field; allowed: name, lr, momentum"),
    "unknown-run-field": Case(["run", "--db", "{db}", "--set", "run.colour=1"],
                              "run.colour: unknown field; allowed: seed, device, db, progress"),
    "unknown-section": Case(["run", "--db", "{db}", "--set", "colour.x=1"],
                            "colour: unknown section; allowed: dataset, scenario, model, strategy, augment, average, optim, run"),
    "unknown-sweep-field": Case(["sweep", "--db", "{db}", "--config", "{folder}/sweep.toml"],
                                "sweep.seed: unknown field; allowed: name, config, set, seeds, grid, strategies",
                                prepare=lambda f: (f / "sweep.toml").write_text("seed = 1\n[strategies.naive]\n")),
    "config-is-a-directory": Case(["run", "--db", "{db}", "--config", "{folder}"], "is a directory"),
    "sweep-is-a-directory": Case(["sweep", "--db", "{db}", "--config", "{folder}"], "is a directory"),
    "export-to-a-directory": Case(["export", "--db", "{db}", "-o", "{folder}"], "is a directory"),
    "report-to-a-directory": Case(["report", "1", "--db", "{db}", "-o", "{folder}"], "is a directory"),
    "eval-seeds": Case(["tune", "--db", "{db}", "--eval-seeds", "0,x"], "--eval-seeds: expected comma-separated"),
    "sweep-config": Case(["sweep", "--db", "{db}", "--config", "{folder}/sweep.toml"],
                         "sweep.config in", prepare=lambda f: (f / "sweep.toml").write_text(
                             'config = "missing.toml"\n[strategies.naive]\n')),
    "unknown-optimizer-before-table": Case(["run", "--db", "{db}", *SMALL, "--set", "optim.name=adamm"],
                                           "optim.name"),
    "both-evaluations-before-table": Case(
        ["run", "--db", "{db}", *SMALL, "--set", "run.eval_every_steps=2", "--set", "run.eval_every_samples=8"],
        "set either run.eval_every_steps or run.eval_every_samples"),
    "seeds-before-table": Case(["run", "--db", "{db}", *SMALL, "--seeds", "0,zero"], "--seeds: expected"),
    "field-of-another-model": Case(["run", "--db", "{db}", *SMALL, "--set", "model.name=cnn"],
                                   "model.hidden: unknown field for model 'cnn'; allowed: channels, norm, norm_groups"),
    "cnn-on-vectors-before-table": Case(["run", "--db", "{db}", "--set", "dataset.name=synthetic", "--set",
                                         "model.name=cnn"], "model.name='cnn' needs image inputs"),
    "runs-status": Case(["runs", "--db", "{db}", "--status", "done"], "--status: unknown status 'done'; allowed:"),
    **{f"{command}-typo-db": Case([command, *args, "--db", "{folder}/tpyo.db"], "no results database")
       for command, args in (("runs", []), ("show", ["1"]), ("compare", ["1"]), ("groups", []), ("export", []),
                             ("report", ["1", "-o", "{folder}/r.html"]), ("run", ["--resume", "1"]))},
}


def snapshot(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table, read without writing."""
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: conn.execute(f"SELECT * FROM {table}").fetchall() for table in sorted(tables)}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A store with one finished training run (run 1) and one test-time adaptation run (run 2)."""
    db = tmp_path_factory.mktemp("template") / "runs.db"
    store = ResultsStore(db)
    torch.manual_seed(0)
    train(class_incremental(synthetic(n_classes=4, n_features=6), 2), mlp((6,), 4, hidden=(8,)), Naive(),
          OptimConfig(epochs=1), store=store)
    x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    y = np.arange(40) % 4
    images_data = from_arrays("tiny", x[:32], y[:32], x[32:], y[32:])
    run_tta(images_data, cnn((1, 8, 8), 4, channels=(4,)), ["source"], ["blur"], batch_size=4,
            optim=OptimConfig(epochs=1), store=store)
    store.close()  # the file is copied: its write-ahead log goes into it
    return db


def case_folder(name: str, case: Case, template: Path, tmp_path_factory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp(name)
    shutil.copy(template, folder / "runs.db")
    case.prepare(folder)
    return folder, [a.format(db=folder / case.db, folder=folder) for a in case.argv]


@pytest.fixture(scope="module")
def outcomes(template, tmp_path_factory) -> dict[str, tuple[int, str, str, Path]]:
    """Every traceback case's exit code, stdout, stderr and folder; two processes at a time (two cores)."""
    def run(name: str) -> tuple[int, str, str, Path]:
        folder, argv = case_folder(name, TRACEBACKS[name], template, tmp_path_factory)
        done = subprocess.run([sys.executable, "-c", DRIVER, TRACEBACKS[name].fault, *argv], cwd=folder, text=True,
                              env=child_environment(), capture_output=True, timeout=300)
        return done.returncode, done.stdout, done.stderr, folder

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(TRACEBACKS, pool.map(run, TRACEBACKS), strict=True))


def check(case: Case, code: int, out: str, err: str, folder: Path, template: Path) -> None:
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert case.message in err, err
    # nothing printed before a mistake in the input, not even the stream table
    assert (out == "") != case.started, out
    if case.stored is None:
        assert snapshot(folder / "runs.db") == snapshot(template)
    else:
        case.stored(ResultsStore(folder / "runs.db", read_only=True))
    assert not (folder / "tpyo.db").exists()  # a read command never creates a database


@pytest.mark.parametrize("name", list(TRACEBACKS))
def test_what_was_a_traceback_is_one_line_exit_2_and_an_unchanged_store(name, outcomes, template) -> None:
    check(TRACEBACKS[name], *outcomes[name], template)


@pytest.mark.parametrize("name", list(MISTAKES))
def test_mistakes_name_what_is_allowed(name, template, tmp_path_factory, monkeypatch, capsys) -> None:
    case = MISTAKES[name]
    folder, argv = case_folder(name, case, template, tmp_path_factory)
    monkeypatch.chdir(folder)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    check(case, code, captured.out, captured.err, folder, template)
