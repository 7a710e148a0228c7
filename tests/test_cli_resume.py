"""`lifelong run` killed with SIGKILL in a separate process, then `lifelong run --resume`: the stored
matrix and the final model equal those of a run never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from lifelong.cli import main
from lifelong.runner.checkpoint import checkpoint_files, read
from lifelong.runner.results import ResultsStore

ARGS = ["--set", "dataset.name=synthetic", "--set", "dataset.n_classes=6", "--set", "dataset.n_features=8",
        "--set", "scenario.n_experiences=3", "--set", "optim.batch_size=8", "--set", "optim.epochs=2",
        "--set", "model.hidden=[32]", "--set", "run.checkpoint_every_steps=3", "--set", "run.progress=false"]
"""114 steps in 3 experiences of 2 classes: long enough to be killed early in, quick to run."""


def start(db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lifelong", "run", "--db", str(db), *ARGS], text=True,
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


def test_killed_cli_run_resumes_to_the_same_result(tmp_path, capsys) -> None:
    db = tmp_path / "killed.db"
    process = start(db)
    stop_after_first_checkpoint(process, tmp_path / "killed-checkpoints" / "run-1", signal.SIGKILL)
    record = ResultsStore(db).get(1)
    assert process.returncode == -signal.SIGKILL and record.status == "running" and record.matrix is None
    assert main(["run", "--resume", "1", "--db", str(db)]) == 0
    assert "run 1 stored" in capsys.readouterr().out

    reference_db = tmp_path / "reference.db"
    assert main(["run", "--db", str(reference_db), *ARGS]) == 0
    reference, resumed = ResultsStore(reference_db).get(1), ResultsStore(db).get(1)
    assert resumed.status == "finished" and resumed.matrix == reference.matrix
    assert resumed.metrics == reference.metrics
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
