"""The command line explains itself (issue 18): what ``show``, ``compare``, ``runs``, ``groups`` and
``strategies`` print, ``--version``, the README's configuration with a renamed component, the hint
printed on Ctrl-C, runs of killed processes, finished runs' checkpoints, read-only stores, lock waits
and the progress of ``lifelong tta``."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lifelong.cli import main
from lifelong.cli.tables import first_sentence
from lifelong.config import load_config
from lifelong.errors import ConfigError, StorageError
from lifelong.metrics.aggregate import aggregate, aggregate_metrics
from lifelong.runner.checkpoint import checkpoint_files
from lifelong.runner.results import ResultsStore, process_alive, process_identity
from lifelong.strategies import STRATEGIES
from tests.child import child_environment
from tests.runner.test_results_schema import VERSION_1

SMALL = ["--set", "dataset.name=synthetic", "--set", "dataset.n_classes=4", "--set", "dataset.n_features=6",
         "--set", "scenario.n_experiences=2", "--set", "optim.epochs=1", "--set", "model.hidden=[8]",
         "--set", "run.progress=false"]
"""2 experiences of 2 classes, 150 training samples each, one epoch of 10 steps of 16 (the last of 6)."""

ROOT = Path(__file__).resolve().parents[1]


def job_toml() -> str:
    """The README's configuration file (its ``# job.toml`` block)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.search(r"^```toml\n(# job\.toml\n.*?)^```", readme, flags=re.DOTALL | re.MULTILINE).group(1)


def test_the_readme_configuration_takes_another_component_by_name(tmp_path) -> None:
    # the file names er with buffer_size and an mlp with hidden: naming ewc or a cnn used to keep them
    # and fail with "unknown field"
    (tmp_path / "job.toml").write_text(job_toml())
    job = str(tmp_path / "job.toml")
    ewc = load_config(job, ["strategy.name=ewc", "strategy.lam=100"])
    assert ewc.strategy.params == {"lam": 100} and ewc.optim.epochs == 5  # the file's other sections stay
    assert load_config(job, ["strategy.lam=100", "strategy.name=ewc"]).strategy.params == {"lam": 100}
    assert load_config(job, ["model.name=cnn"]).model.params == {}
    assert load_config(job, ["strategy.name=er"]).strategy.params == {"buffer_size": 200}  # same name: kept
    assert load_config(job, ["optim.name=adam"]).optim.lr == 0.03  # optim is settings, not a component
    with pytest.raises(ConfigError, match=r"optim\.schedule_params\.warmup_steps: inf is not a finite number"):
        load_config(job, ["optim.schedule_params={warmup_steps = inf}"])
    with pytest.raises(ConfigError, match=r"strategy\.lam: nan is not a finite number"):
        load_config(job, ["strategy.name=ewc", "strategy.lam=nan"])


@pytest.fixture(scope="module")
def store_with_runs(tmp_path_factory) -> Path:
    """Runs 1-3: er with a curve every 2 steps, naive online (anytime accuracy every 8 samples), naive;
    runs 4-6: naive under seeds 0, 1, 2 (group 1)."""
    db = tmp_path_factory.mktemp("runs") / "runs.db"
    for extra in (["--set", "run.eval_every_steps=2"],
                  ["--set", "strategy.name=naive", "--set", "run.eval_every_samples=8"],
                  ["--set", "strategy.name=naive"],
                  ["--set", "strategy.name=naive", "--seeds", "0,1,2"]):
        assert main(["run", "--db", str(db), *SMALL, *extra]) == 0
    return db


def test_show_and_compare_print_every_stored_metric(store_with_runs, capsys) -> None:
    db = str(store_with_runs)
    capsys.readouterr()
    assert main(["show", "1", "--db", db]) == 0
    shown = capsys.readouterr().out
    stored = ResultsStore(db).get(1).metrics
    for name in ("stability_gap", "relative_stability_gap", "min_old_accuracy", "worst_case_accuracy",
                 "recovered_fraction", "effective_lr", "final_accuracy_pooled"):
        assert re.search(rf"│ {name} +│", shown), name
    assert "world_size" not in shown and "batch_size_changes" not in shown and len(stored) > 14
    assert main(["compare", "1", "2", "3", "--db", db]) == 0
    compared = capsys.readouterr().out
    for name in ("a_auc", "last_accuracy", "stability_gap", "effective_lr", "steps"):
        assert re.search(rf"│ {name} +│", compared), name
    # a_auc belongs to the online run 2 only: the other runs show "-"
    assert re.search(r"│ a_auc +│ +- │ +\d\.\d{3} │ +- │", compared)
    assert "world_size" not in compared


ROW = re.compile(r"^ *(\d+)  \d{4}-\d\d-\d\d \d\d:\d\d  (\w+) +(.+?)  +(\w+) +\d+ ", flags=re.MULTILINE)
"""A run's line in `lifelong runs`: id, creation minute, status, stream, strategy, seed, ..."""


def test_runs_filters_and_one_line_per_run(store_with_runs, capsys) -> None:
    db = str(store_with_runs)
    capsys.readouterr()
    assert main(["runs", "--db", db]) == 0
    rows = ROW.findall(capsys.readouterr().out)
    # every run on one line of its own, whole: its id, status, stream name and strategy
    assert [(int(i), status, stream, strategy) for i, status, stream, strategy in rows] == \
        [(r.id, r.status, r.name, r.strategy) for r in ResultsStore(db).runs()]
    assert rows[0][2] == "synthetic class-incremental 2"
    assert main(["runs", "--db", db, "--strategy", "er"]) == 0
    assert [row[0] for row in ROW.findall(capsys.readouterr().out)] == ["1"]
    assert main(["runs", "--db", db, "--status", "finished", "--last", "2"]) == 0
    assert [row[0] for row in ROW.findall(capsys.readouterr().out)] == ["5", "6"]
    assert main(["runs", "--db", db, "--strategy", "ewc"]) == 0
    assert "no run matches" in capsys.readouterr().out


def test_groups_are_listed_and_shown_by_id(store_with_runs, capsys) -> None:
    db = str(store_with_runs)
    capsys.readouterr()
    assert main(["groups", "--db", db]) == 0
    out = capsys.readouterr().out
    assert re.search(r"│ +1 │ \S+ +│ seeds +│ naive seeds 0,1,2 +│ +3 │ "
                     r"final_accuracy 0\.\d{3} ± 0\.\d{3} over 3 seeds", out)
    assert main(["show", "--group", "1", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "group 1: seeds 'naive seeds 0,1,2'" in out and "95% interval" in out
    assert [line.split("│")[3].strip() for line in out.splitlines() if re.match(r"│ +[456] │", line)] == \
        ["seed 0", "seed 1", "seed 2"]
    assert main(["show", "--db", db]) == 2
    assert "give a run id" in capsys.readouterr().err


def test_intervals_are_clipped_to_the_range_of_the_metric() -> None:
    # 0.99, 1.0, 1.0: mean 0.99667, std 0.00577, t(0.975, 2) = 4.303, half width 4.303 * 0.00577 / sqrt(3)
    # = 0.01434: the raw interval [0.98233, 1.01100] passes 1.0, which no accuracy can reach
    raw = aggregate([0.99, 1.0, 1.0])
    assert raw.high == pytest.approx(1.01100, abs=1e-5) and raw.low == pytest.approx(0.98233, abs=1e-5)
    clipped = aggregate_metrics([{"final_accuracy": a, "forgetting": -f, "world_size": 1}
                                 for a, f in ((0.99, 0.99), (1.0, 1.0), (1.0, 1.0))])
    assert clipped["final_accuracy"].high == 1.0 and clipped["final_accuracy"].low == pytest.approx(0.98233, abs=1e-5)
    assert clipped["forgetting"].low == -1.0  # forgetting lies in [-1, 1]
    assert "world_size" not in clipped  # how a run ran is not a metric


def test_strategies_print_the_first_whole_sentence(capsys) -> None:
    for name, cls in STRATEGIES.items():
        sentence = first_sentence(cls.__doc__)
        paragraph = " ".join(cls.__doc__.strip().split("\n\n")[0].split())
        assert paragraph.startswith(sentence) and sentence.endswith((".", ")")), name
        assert sentence.count("(") == sentence.count(")"), name  # never cut inside a parenthesis
    assert first_sentence(STRATEGIES["joint"].__doc__).endswith("Ranzato 2017).")  # past "e.g." inside brackets
    assert main(["strategies"]) == 0
    words = capsys.readouterr().out.split()
    # GDumb's first sentence runs over two lines of its docstring; the first line used to be all
    assert "alone." in words and "Continual" in words


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert re.fullmatch(r"lifelong \S+ \(torch \S+\)\n", capsys.readouterr().out)


def start_cli(args: list[str], folder: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lifelong", *args], cwd=folder, text=True,
                            env=child_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def interrupt_after_first_checkpoint(process: subprocess.Popen[str], folder: Path) -> str:
    deadline = time.monotonic() + 120
    while not (folder.exists() and any(checkpoint_files(run) for run in folder.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    return err


def test_the_interrupt_hint_is_a_command_that_works(tmp_path, monkeypatch, capsys) -> None:
    # Ctrl-C during `lifelong run` and during a sweep, both with a database that is not the default:
    # the hint used to be `lifelong run --resume N` without --db (which resumes nothing), also for a sweep
    run_db, sweep_db = tmp_path / "mine.db", tmp_path / "sweep.db"
    every = ["--set", "run.checkpoint_every_steps=1"]
    (tmp_path / "grid.toml").write_text('seeds = [0]\nset = ["dataset.name=synthetic", "dataset.n_classes=4", '
                                        '"scenario.n_experiences=2", "optim.epochs=5", "run.progress=false", '
                                        '"run.checkpoint_every_steps=1"]\n[strategies.naive]\n[strategies.er]\n')
    run = start_cli(["run", "--db", str(run_db), *SMALL, "--set", "optim.epochs=5", *every], tmp_path)
    run_err = interrupt_after_first_checkpoint(run, tmp_path / "mine-checkpoints")
    # started once the run is stopped: a sweep left running while the run handles its interrupt could
    # finish (and remove its checkpoints) before it is watched
    sweep = start_cli(["sweep", "--config", "grid.toml", "--db", str(sweep_db)], tmp_path)
    sweep_err = interrupt_after_first_checkpoint(sweep, tmp_path / "sweep-checkpoints")
    hint = re.fullmatch(r"interrupted: SIGINT at experience \d, step \d+: checkpoint saved in '[^']+'; "
                        r"continue with `lifelong (.+)`\n", run_err)
    assert hint and hint.group(1) == f"run --resume 1 --db {run_db}", run_err
    assert ResultsStore(run_db).get(1).status == "interrupted"
    assert main(hint.group(1).split()) == 0 and ResultsStore(run_db).get(1).status == "finished"
    hint = re.fullmatch(r"interrupted: .*; continue with `lifelong (.+)` \(it skips the cells already finished\)\n",
                        sweep_err)
    assert hint and hint.group(1) == f"sweep --config grid.toml --db {sweep_db}", sweep_err
    monkeypatch.chdir(tmp_path)  # the sweep file's path is as it was typed
    assert main(hint.group(1).split()) == 0
    assert "2 cells" in capsys.readouterr().out


def test_a_run_whose_process_is_gone_is_shown_as_interrupted(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "500")  # the hint names the store's path: one line whatever the path's length
    db = tmp_path / "runs.db"
    store = ResultsStore(db)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = {**process_identity(), "pid": int(ended.stdout), "started": None}
    run_id = store.start_run("stream", "naive", 0, {"run": {"seed": 0}})
    with sqlite3.connect(db) as conn:  # as if that process had started it and then been killed
        conn.execute("UPDATE runs SET environment = json_set(environment, '$.process', json(?))",
                     (json.dumps(gone),))
    assert not process_alive(gone) and process_alive(process_identity())
    assert process_alive({**gone, "host": "another-machine"})  # cannot be checked there: not called dead
    if process_identity()["started"] is not None:  # Linux: a live pid that started at another time was reused
        assert not process_alive({**process_identity(), "started": "1"})
    capsys.readouterr()
    assert main(["runs", "--db", str(db)]) == 0
    assert ROW.findall(capsys.readouterr().out) == [(str(run_id), "interrupted", "stream", "naive")]
    assert main(["show", str(run_id), "--db", str(db)]) == 0
    assert f"`lifelong run --resume {run_id} --db {db}` continues it" in capsys.readouterr().out
    store.set_status(run_id, "running")  # resumed by this process: running again
    assert ResultsStore(db).get(run_id).status == "running"


def test_finished_runs_delete_their_checkpoints_unless_asked_to_keep_them(tmp_path) -> None:
    db = tmp_path / "runs.db"
    assert main(["run", "--db", str(db), *SMALL, "--set", "run.checkpoint_every_steps=2"]) == 0
    assert not (tmp_path / "runs-checkpoints").exists()
    assert main(["run", "--db", str(db), *SMALL, "--set", "run.keep_finished_checkpoints=true"]) == 0
    # kept: the two newest of the run's checkpoints, at the end of experience 0 (10 steps) and 1 (20)
    assert [p.name for p in checkpoint_files(tmp_path / "runs-checkpoints" / "run-2")] == \
        ["checkpoint-step0000000010-done0001.pt", "checkpoint-step0000000020-done0002.pt"]
    # a folder the user chose stays, emptied of the finished run's files
    mine = tmp_path / "mine"
    assert main(["run", "--db", str(db), *SMALL, "--set", f'run.checkpoint_dir="{mine}"']) == 0
    assert mine.is_dir() and not any(mine.iterdir())


@pytest.fixture
def read_only(tmp_path):
    """Make a file read-only for this process (``chattr +i`` as root, whom file modes do not stop)."""
    made: list[Path] = []

    def protect(path: Path) -> None:
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
                pytest.skip("cannot make a file read-only for root here (chattr +i failed)")
        else:
            path.chmod(0o444)
        made.append(path)

    yield protect
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_store_is_read_and_a_write_says_it_is_read_only(tmp_path, read_only, capsys) -> None:
    db = tmp_path / "runs.db"
    assert main(["run", "--db", str(db), *SMALL, "--no-checkpoint"]) == 0
    read_only(db)
    capsys.readouterr()
    for argv in (["runs"], ["show", "1"], ["compare", "1"], ["groups"], ["export", "--format", "json"]):
        assert main([*argv, "--db", str(db)]) == 0, capsys.readouterr().err
    assert '"strategy": "er"' in capsys.readouterr().out
    assert main(["run", "--db", str(db), *SMALL, "--no-checkpoint"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: run.db: '{db}' is read-only") and err.count("\n") == 1
    with pytest.raises(StorageError, match="opened read-only"):
        ResultsStore(db, read_only=True).set_status(1, "failed")
    # an older store that cannot be written cannot be upgraded either: say so, and how
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(VERSION_1)
    read_only(old)
    assert main(["runs", "--db", str(old)]) == 2
    err = capsys.readouterr().err
    assert "has schema version 1, older than this lifelong's 2, and cannot be upgraded here" in err


def test_a_write_that_waits_for_a_lock_says_so(tmp_path, caplog) -> None:
    db = tmp_path / "runs.db"
    store = ResultsStore(db)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's transaction, held for 1.5 s
    releaser = threading.Timer(1.5, lambda: holder.execute("COMMIT"))
    releaser.start()
    started = time.monotonic()
    run_id = store.start_run("stream", "naive", 0, {"run": {"seed": 0}})
    releaser.join()
    holder.close()
    assert time.monotonic() - started >= 1.4 and store.get(run_id).status == "running"
    assert f"{str(db)!r} is locked by another process writing to it; waiting up to 60 s" in caplog.text


def test_tta_shows_its_progress_on_a_terminal(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich draws its progress as on a terminal
    monkeypatch.setenv("COLUMNS", "120")
    argv = ["tta", "--db", str(tmp_path / "runs.db"), "--method", "source,tent", "--corruptions", "blur,contrast",
            "--set", "optim.epochs=1", "--set", "model.channels=[4]"]
    assert main(argv) == 0
    err = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", capsys.readouterr().err)
    assert re.search(r"training the source model .* 1/1", err)
    assert re.search(r"adapting with tent \(domains\) .* 2/2", err)
    capsys.readouterr()
    assert main(["show", "2", "--db", str(tmp_path / "runs.db")]) == 0
    shown = capsys.readouterr().out
    assert "accuracy per domain" in shown and "blur@5" in shown and "contrast@5" in shown and "exp 0" not in shown
    assert "test-time adaptation, method tent" in shown
