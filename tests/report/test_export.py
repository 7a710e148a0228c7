import csv
import io
import json

import pytest

from lifelong.cli import main
from lifelong.config import load_config
from lifelong.errors import ConfigError
from lifelong.experiment import run_config
from lifelong.report.export import export
from lifelong.runner.results import SCHEMA_VERSION, ResultsStore

SMALL = ["dataset.name=synthetic", "dataset.n_classes=4", "dataset.n_features=6", "dataset.n_per_class=20",
         "scenario.n_experiences=2", "optim.epochs=1", "model.hidden=[8]"]


def test_csv_and_json_hold_every_run(tmp_path, capsys) -> None:
    store = ResultsStore(tmp_path / "runs.db")
    first = run_config(load_config(None, [*SMALL, "run.eval_every_steps=3"]), store=store)
    second = run_config(load_config(None, [*SMALL, "strategy.name=ewc", "strategy.lam=5"]), store=store)
    rows = list(csv.DictReader(io.StringIO(export(store, "csv"))))
    assert [row["strategy"] for row in rows] == ["er", "ewc"]
    assert float(rows[0]["metrics.final_accuracy"]) == pytest.approx(first.metrics["final_accuracy"])
    assert rows[1]["config.strategy.lam"] == "5" and rows[0]["config.strategy.lam"] == ""
    assert int(rows[0]["curve_points"]) == len(first.extra["curve"]) and rows[1]["curve_points"] == "0"
    assert int(rows[1]["steps"]) == sum(c.steps for c in second.costs)
    data = json.loads(export(store, "json"))
    assert data["schema_version"] == SCHEMA_VERSION and len(data["runs"]) == 2
    assert data["runs"][0]["curve"][-1]["accuracies"] == first.matrix[-1].tolist()
    with pytest.raises(ConfigError, match="--format must be one of csv, json"):
        export(store, "xml")
    assert main(["export", "--format", "json", "--db", str(store.path)]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][1]["strategy"] == "ewc"
    assert main(["export", "--format", "csv", "--db", str(store.path), "-o", str(tmp_path / "runs.csv")]) == 0
    assert (tmp_path / "runs.csv").read_text().startswith("id,created,status")
