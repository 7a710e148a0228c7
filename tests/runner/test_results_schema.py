import sqlite3

import pytest

from lifelong.cli import main
from lifelong.config import load_config
from lifelong.experiment import resolve_config, run_config
from lifelong.runner.results import SCHEMA_VERSION, ResultsStore, config_key

SMALL = ["dataset.name=synthetic", "dataset.n_classes=4", "dataset.n_features=6", "dataset.n_per_class=20",
         "scenario.n_experiences=2", "optim.epochs=1", "model.hidden=[8]"]

VERSION_1 = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, finished TEXT, status TEXT NOT NULL,
    name TEXT NOT NULL, strategy TEXT NOT NULL, seed INTEGER NOT NULL, config TEXT NOT NULL,
    environment TEXT NOT NULL, initial TEXT, matrix TEXT, metrics TEXT, error TEXT);
CREATE TABLE experiences (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, idx INTEGER NOT NULL,
    accuracies TEXT NOT NULL, cost TEXT NOT NULL, PRIMARY KEY (run_id, idx));
INSERT INTO runs VALUES (1, '2026-01-01', '2026-01-01', 'finished', 'old', 'naive', 0, '{"run": {"seed": 0}}', '{}',
    '[0.5]', '[[0.9]]', '{"final_accuracy": 0.9}', NULL);
PRAGMA user_version = 1;
"""


def test_version_1_database_is_migrated_and_keeps_its_runs(tmp_path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(VERSION_1)
    store = ResultsStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    old = store.get(1)
    assert old.metrics == {"final_accuracy": 0.9} and old.curve == [] and old.config_key is None
    assert store.groups() == []


def test_config_key_ignores_where_a_run_is_stored_but_not_what_it_computes() -> None:
    config = {"run": {"seed": 0, "db": "a.db", "progress": True}, "optim": {"lr": 0.1}}
    assert config_key(config) == config_key({"optim": {"lr": 0.1}, "run": {"seed": 0, "db": "b.db", "progress": False,
                                                                           "checkpoint_every_steps": 50}})
    assert config_key(config) != config_key({**config, "run": {"seed": 1, "db": "a.db"}})
    assert config_key(config) != config_key({**config, "optim": {"lr": 0.2}})


def test_curve_and_stability_metrics_are_stored_with_the_run(tmp_path) -> None:
    store = ResultsStore(tmp_path / "runs.db")
    config = load_config(None, [*SMALL, "strategy.name=naive", "run.eval_every_steps=2"])
    result = run_config(config, store=store)
    record = store.get(result.run_id)
    assert record.curve == result.extra["curve"] and record.curve[-1]["accuracies"] == record.matrix[-1]
    assert [p["step"] for p in record.curve][:3] == [0, 2, 4]
    assert record.metrics["stability_gap"] == result.metrics["stability_gap"] is not None
    assert record.metrics["final_accuracy"] == result.metrics["final_accuracy"]
    assert store.find_finished(resolve_config(config)) == result.run_id
    assert store.find_finished(resolve_config(load_config(None, [*SMALL, "strategy.name=naive"]))) is None


def test_run_with_seeds_stores_a_group_with_the_aggregate(tmp_path, capsys) -> None:
    db = str(tmp_path / "runs.db")
    args = ["run", "--db", db, "--seeds", "0,1,2", *[a for s in SMALL for a in ("--set", s)]]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3 seeds" in out and "95% interval" in out and "as group 1" in out
    store = ResultsStore(db)
    group = store.group(1)
    assert group.kind == "seeds" and [m["label"] for m in group.members] == ["seed 0", "seed 1", "seed 2"]
    finals = [store.get(m["run_id"]).metrics["final_accuracy"] for m in group.members]
    assert [store.get(m["run_id"]).seed for m in group.members] == [0, 1, 2]
    assert group.summary["final_accuracy"]["mean"] == pytest.approx(sum(finals) / 3)
    assert main([*args[:3], "--seeds", "0,x"]) == 2
    assert "--seeds: expected comma-separated integers" in capsys.readouterr().err


def test_a_setting_added_later_at_its_neutral_value_keeps_the_key_of_runs_stored_before_it() -> None:
    before = {"optim": {"lr": 0.1}, "run": {"seed": 0}}  # a run stored before forecast_stop existed
    assert config_key(before) == config_key({"optim": {"lr": 0.1, "forecast_stop": None, "forecast_every": 25,
                                                       "max_tokens": None}, "run": {"seed": 0}})
    assert config_key(before) != config_key({"optim": {"lr": 0.1, "forecast_stop": 0.01}, "run": {"seed": 0}})
