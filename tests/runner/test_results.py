import contextlib
import sqlite3

import numpy as np
import pytest
import torch

from lifelong import OptimConfig, ResultsStore, class_incremental, mlp, train
from lifelong.errors import ConfigError
from lifelong.runner.results import SCHEMA_VERSION
from lifelong.strategies import ER


def test_run_is_stored_whole(small_data, tmp_path) -> None:
    store = ResultsStore(tmp_path / "runs.db")
    stream = class_incremental(small_data, 3)
    torch.manual_seed(0)
    result = train(stream, mlp((8,), 6, hidden=(16,)), ER(buffer_size=30), OptimConfig(epochs=1), seed=5,
                   store=store)
    record = store.get(result.run_id)
    assert record.status == "finished" and record.seed == 5
    assert np.allclose(record.matrix, result.matrix)
    assert record.metrics["final_accuracy"] == pytest.approx(result.metrics["final_accuracy"])
    assert [e["index"] for e in record.experiences] == [0, 1, 2]
    assert record.experiences[-1]["cost"]["buffer_size"] == 30
    assert record.config["strategy"] == {"name": "er", "buffer_size": 30, "replay_batch_size": 0,
                                       "memory_keeps": "samples", "memory_budget_bytes": 0}
    assert record.environment["torch"] == torch.__version__
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_crash_keeps_finished_experiences(small_data, tmp_path) -> None:
    class Crash(ER):
        def before_experience(self, model, experience) -> None:
            if experience.task_id == 2:
                raise RuntimeError("disk on fire")

    store = ResultsStore(tmp_path / "runs.db")
    stream = class_incremental(small_data, 3)
    with pytest.raises(RuntimeError):
        train(stream, mlp((8,), 6, hidden=(16,)), Crash(buffer_size=10), OptimConfig(epochs=1), store=store)
    record = store.runs()[0]
    assert record.status == "failed" and "disk on fire" in record.error and record.matrix is None
    assert len(store.get(record.id).experiences) == 2


def test_missing_run_and_bad_path_are_config_errors(tmp_path) -> None:
    store = ResultsStore(tmp_path / "runs.db")
    with pytest.raises(ConfigError, match="run id 7"):
        store.get(7)
    with pytest.raises(ConfigError, match="run.db"):
        ResultsStore(tmp_path / "no" / "such" / "runs.db")


def test_a_file_that_is_not_a_database_is_a_config_error(tmp_path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the runs you are looking for\n" * 20)
    with pytest.raises(ConfigError, match="run.db: .* is not a results database"):
        ResultsStore(path)


class DiesAfterFinishing(ResultsStore):
    """A store whose process dies at the first write it is asked for once a run is marked finished."""

    @contextlib.contextmanager
    def _transaction(self):
        with super()._transaction() as conn:
            created = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
            if created and conn.execute("SELECT count(*) FROM runs WHERE status = 'finished'").fetchone()[0]:
                raise RuntimeError("the process died")
            yield conn


def test_a_finished_run_always_has_its_curve(small_data, tmp_path) -> None:
    # Defect 11: the curve was written after the run was marked finished; a crash in between left a
    # "finished" run without its curve, which a sweep then skips as done.
    from lifelong.config import load_config
    from lifelong.experiment import run_config

    config = load_config(None, ["dataset.name=synthetic", "dataset.n_features=8", "dataset.n_classes=6",
                                "scenario.n_experiences=2", "optim.epochs=1", "run.eval_every_steps=4",
                                "run.checkpoint=false", "run.progress=false"])
    with contextlib.suppress(RuntimeError):
        run_config(config, store=DiesAfterFinishing(tmp_path / "runs.db"))
    record = ResultsStore(tmp_path / "runs.db").get(1)
    assert record.status != "finished" or (record.curve and "stability_gap" in record.metrics)


def test_a_run_from_python_records_the_architecture_and_the_stream(small_data, tmp_path) -> None:
    store = ResultsStore(tmp_path / "runs.db")
    stream = class_incremental(small_data, 2)
    configs = []
    for hidden in ((16,), (16,), (17,)):
        result = train(stream, mlp((8,), 6, hidden=hidden), ER(buffer_size=30), OptimConfig(epochs=1), store=store)
        configs.append(store.get(result.run_id).config)
    model = configs[0]["model"]
    assert model["class"] == "lifelong.models.classifier.Classifier"
    # 8 inputs -> 16 hidden -> 6 classes: (8 * 16 + 16) + (16 * 6 + 6) = 246 parameters, all trained
    assert model["parameters"] == model["trainable_parameters"] == 246
    # one architecture, one hash; one more hidden unit, another
    assert configs[1]["model"]["tree_sha256"] == model["tree_sha256"] != configs[2]["model"]["tree_sha256"]
    described = configs[0]["stream"]
    assert described["name"] == stream.name and described["n_classes"] == 6 and described["input_shape"] == [8]
    # 40 samples per class, a quarter of them for testing: 3 classes of 30 + 10 per experience
    assert [(e["classes"], e["train"], e["test"]) for e in described["experiences"]] == [
        ([0, 1, 2], 90, 30), ([3, 4, 5], 90, 30)]
    assert configs[0]["strategy"] == {"name": "er", "buffer_size": 30, "replay_batch_size": 0,
                                     "memory_keeps": "samples", "memory_budget_bytes": 0}
