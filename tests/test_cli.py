import sqlite3

import pytest

from lifelong.cli import main
from lifelong.runner.results import ResultsStore

FAST = ["--set", "optim.epochs=1", "--set", "model.hidden=[32]"]


def test_default_run_prints_matrix_and_metrics_and_stores(tmp_path, capsys) -> None:
    db = str(tmp_path / "runs.db")
    assert main(["run", "--db", db, *FAST]) == 0
    out = capsys.readouterr().out
    assert "accuracy matrix" in out and "final_accuracy" in out and "classes 8,9" in out
    assert "run 1 stored" in out
    record = ResultsStore(db).get(1)
    assert record.status == "finished" and record.strategy == "er"
    assert record.config["strategy"]["buffer_size"] == 200
    assert record.config["scenario"]["n_experiences"] == 5 and record.config["optim"]["epochs"] == 1
    assert len(record.matrix) == 5


def test_config_file_and_overrides(tmp_path, capsys) -> None:
    config = tmp_path / "job.toml"
    config.write_text('[dataset]\nname = "synthetic"\nn_classes = 4\nn_features = 6\n\n'
                      '[scenario]\nn_experiences = 2\n\n[strategy]\nname = "lwf"\nalpha = 0.5\n')
    db = str(tmp_path / "runs.db")
    assert main(["run", "--config", str(config), "--db", db, "--set", "strategy.temperature=3", *FAST]) == 0
    record = ResultsStore(db).get(1)
    assert record.config["strategy"] == {"name": "lwf", "alpha": 0.5, "temperature": 3}
    assert record.config["dataset"]["n_classes"] == 4 and len(record.matrix) == 2
    # switching the strategy by name drops the default's parameters (buffer_size belongs to er)
    assert main(["run", "--db", db, "--set", "strategy.name=ewc", "--set", "strategy.lam=10", *FAST]) == 0
    assert ResultsStore(db).get(2).config["strategy"] == {"name": "ewc", "lam": 10, "decay": 1.0, "fisher_labels": "sampled"}


def test_runs_show_compare_and_strategies(tmp_path, capsys) -> None:
    db = str(tmp_path / "runs.db")
    main(["run", "--db", db, *FAST])
    main(["run", "--db", db, "--set", "strategy.name=naive", *FAST])
    capsys.readouterr()
    assert main(["runs", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "er" in out and "naive" in out and "finished" in out
    assert main(["show", "1", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "strategy.buffer_size" in out and "torch" in out and "accuracy matrix" in out
    # throughput: stored per experience, consistent with its samples (steps x batch) and seconds, and shown
    costs = [e["cost"] for e in ResultsStore(db).get(1).experiences]
    for cost in costs:
        assert cost["samples_per_second"] > 0 and cost["samples_per_second"] == pytest.approx(
            cost["samples"] / cost["seconds"])
        assert (cost["steps"] - 1) * 16 < cost["samples"] <= cost["steps"] * 16  # the stream's, batch 16
    total = sum(c["samples"] for c in costs) / sum(c["seconds"] for c in costs)
    assert f"{total:.1f}" in next(line for line in out.splitlines() if "samples_per_second " in line)
    shown = next(line for line in out.splitlines() if "samples_per_second per experience" in line)
    assert shown.count(",") == len(costs) - 1
    assert main(["compare", "1", "2", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "run 1 (er)" in out and "run 2 (naive)" in out and "forgetting" in out
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert "buffer_size=200" in out and "lam=100.0" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--set", "strategy.name=eww"], "strategy.name: unknown strategy 'eww'; allowed: "),
    (["run", "--set", "strategy.buffer_size=-5"], "strategy.buffer_size must be >= 0, got -5"),
    (["run", "--set", "strategy.bufer_size=5"], "strategy.bufer_size: unknown field for strategy 'er'"),
    (["run", "--set", "optim.lr=-1"], "optim.lr: Input should be greater than 0"),
    (["run", "--set", "optim.lr=fast"], "optim.lr: Input should be a valid number"),
    (["run", "--set", "optim.colour=1"], "optim.colour: unknown field"),
    (["run", "--set", "strategy.buffer_size=many"], "strategy.buffer_size: Input should be a valid integer"),
    (["run", "--config", "missing.toml"], "--config: no such file 'missing.toml'"),
    (["run", "--set", "nodot"], "expected SECTION.FIELD=VALUE"),
    (["run", "--set", "scenario.n_experiences=40"], "scenario.n_experiences must lie in [1, 10]"),
    (["show", "99"], "--db: no results database"),  # a read command never creates the database (issue 18)
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, message) -> None:
    argv = [*argv, "--db", str(tmp_path / "runs.db")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.out == ""


def test_bad_toml_is_a_user_error(tmp_path, capsys) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[strategy\nname = er")
    assert main(["run", "--config", str(config), "--db", str(tmp_path / "r.db")]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    with sqlite3.connect(tmp_path / "r.db") as conn:  # nothing was stored
        assert conn.execute("SELECT name FROM sqlite_master WHERE name='runs'").fetchone() is None


@pytest.mark.parametrize("name", ['back\\slash.db', 'it\'s "quoted".db'])
def test_db_path_is_used_verbatim(tmp_path, name) -> None:
    db = tmp_path / name
    assert main(["run", "--db", str(db), "--no-checkpoint", "--set", "dataset.name=synthetic",
                 "--set", "scenario.n_experiences=2", *FAST]) == 0
    assert [r.id for r in ResultsStore(db).runs()] == [1]
