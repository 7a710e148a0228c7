"""`lifelong run` killed with SIGKILL in a separate process, then `lifelong run --resume`: the stored
matrix and the final model equal those of a run never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lifelong.cli import main
from lifelong.runner.checkpoint import checkpoint_files, read
from lifelong.runner.results import ResultsStore

ARGS = ["--set", "dataset.name=synthetic", "--set", "dataset.n_classes=6", "--set", "dataset.n_features=8",
        "--set", "scenario.n_experiences=3", "--set", "optim.batch_size=8", "--set", "optim.epochs=2",
        "--set", "model.hidden=[32]", "--set", "run.checkpoint_every_steps=3", "--set", "run.progress=false",
        "--set", "run.keep_finished_checkpoints=true"]
"""114 steps in 3 experiences of 2 classes: long enough to be killed early in, quick to run (finished runs
keep their checkpoints, whose models are compared)."""


CURVE = ["--set", "run.eval_every_steps=5"]
"""A continual-evaluation curve every 5 steps (step 0, 22 multiples of 5 and the 3 experience ends of 114
steps): the first checkpoint (step 3) holds its first point only."""


def start(db: Path, extra: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lifelong", "run", "--db", str(db), *ARGS, *extra], text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})


def stop_after_first_checkpoint(process: subprocess.Popen[str], folder: Path, number: int) -> None:
    deadline = time.monotonic() + 120
    while not checkpoint_files(folder):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.stderr else ""
        time.sleep(0.001)
    process.send_signal(number)
    process.wait(timeout=60)


def final_model(db: Path) -> dict[str, torch.Tensor]:
    return read(checkpoint_files(db.parent / f"{db.stem}-checkpoints" / "run-1")[-1])["model"]


def points(curve: list[dict]) -> list[tuple]:
    """A curve without its wall-clock seconds."""
    return [(p["step"], p["samples"], p["experience"], p["accuracies"]) for p in curve]


@pytest.mark.parametrize("extra", [[], CURVE], ids=["plain", "curve"])
def test_killed_cli_run_resumes_to_the_same_result(tmp_path, capsys, extra) -> None:
    # with a curve (defect 11): its points were not checkpointed, so a resumed run stored only the points
    # after the resume, and a stability gap computed from them
    db = tmp_path / "killed.db"
    process = start(db, extra)
    stop_after_first_checkpoint(process, tmp_path / "killed-checkpoints" / "run-1", signal.SIGKILL)
    record = ResultsStore(db).get(1)
    # the row still says "running"; its process is gone, so it reads back as interrupted (issue 18)
    assert process.returncode == -signal.SIGKILL and record.status == "interrupted" and record.matrix is None
    assert f"`lifelong run --resume 1 --db {db}` continues it" in record.error
    assert main(["run", "--resume", "1", "--db", str(db)]) == 0
    assert "run 1 stored" in capsys.readouterr().out

    reference_db = tmp_path / "reference.db"
    assert main(["run", "--db", str(reference_db), *ARGS, *extra]) == 0
    reference, resumed = ResultsStore(reference_db).get(1), ResultsStore(db).get(1)
    assert resumed.status == "finished" and resumed.matrix == reference.matrix
    assert resumed.metrics == reference.metrics
    assert points(resumed.curve) == points(reference.curve) and len(reference.curve) == (26 if extra else 0)
    assert all(torch.equal(a, b) for a, b in zip(final_model(db).values(), final_model(reference_db).values(),
                                                 strict=True))


def test_resume_errors_exit_2_with_one_line(tmp_path, capsys) -> None:
    db = str(tmp_path / "runs.db")
    assert main(["run", "--db", db, "--no-checkpoint", *ARGS]) == 0
    assert not (tmp_path / "runs-checkpoints").exists()
    capsys.readouterr()
    for argv, message in ((["--resume", "1"], "run 1 already finished"),
                          (["--resume", "7"], "run id 7 is not in"),
                          (["--resume", "1", "--set", "optim.lr=1"], "--resume 1 continues the run's stored")):
        assert main(["run", *argv, "--db", db]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_resume_names_what_is_wrong_with_a_stored_configuration(tmp_path, capsys, small_data) -> None:
    # Defect 15: every stored-config error was reported as "started from Python objects".
    import json
    import sqlite3

    from lifelong import OptimConfig, class_incremental, mlp, train
    from lifelong.strategies import Naive

    db = tmp_path / "runs.db"
    assert main(["run", "--db", str(db), "--no-checkpoint", *ARGS]) == 0
    train(class_incremental(small_data, 2), mlp((8,), 6), Naive(), OptimConfig(epochs=1), store=ResultsStore(db))
    with sqlite3.connect(db) as conn:
        config = json.loads(conn.execute("SELECT config FROM runs WHERE id = 1").fetchone()[0])
        config["optim"]["lr"] = -1.0
        conn.execute("UPDATE runs SET config = ?, status = 'interrupted' WHERE id = 1", (json.dumps(config),))
        conn.execute("UPDATE runs SET status = 'interrupted' WHERE id = 2")
    capsys.readouterr()
    assert main(["run", "--resume", "1", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "stored configuration is no longer valid" in err and "optim.lr" in err and err.count("\n") == 1
    assert main(["run", "--resume", "2", "--db", str(db)]) == 2
    assert "started from Python objects" in capsys.readouterr().err
