"""The launchers on Ray: a local Ray instance on 127.0.0.1, started once for this file (its worker processes,
with torch imported, serve every test) and stopped after it."""

import os
import signal
import sys
from pathlib import Path

import cloudpickle
import optuna
import pytest

from lifelong import experiment
from lifelong.cli import main
from lifelong.protocol import launchers
from lifelong.protocol.sweep import load_sweep, run_sweep
from lifelong.protocol.tune import ProtocolSettings, run_protocol
from lifelong.runner.observers import Observer
from lifelong.runner.results import ResultsStore
from tests.protocol.test_sweep import SWEEP
from tests.protocol.test_tune import SMALL


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    # workers not niced (Ray's default 15), so that they are not starved by the suite's other process
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             _system_config={"worker_niceness": 0})
    yield ray
    ray.shutdown()


class KilledOnce(launchers.CellJob):
    """A cell job whose first attempt SIGKILLs its own Ray worker process at step 3 (after the checkpoint of
    step 2): what a node lost mid-run does. The marker file beside the cell's store says it happened."""

    def __call__(self):
        marker = Path(f"{self.store}.killed")
        if marker.exists() or self.config["strategy"]["name"] != "er" or self.config["run"]["seed"] != 1:
            return super().__call__()

        class KillAt(Observer):
            def on_step(self, state) -> None:
                if state.step == 3:
                    marker.touch()
                    os.kill(os.getpid(), signal.SIGKILL)

        original = experiment.tracking_observers
        experiment.tracking_observers = lambda config: [KillAt()]
        try:
            return super().__call__()
        finally:
            experiment.tracking_observers = original


def test_a_sweep_on_ray_tasks_survives_a_killed_worker_and_stores_the_local_runs(tmp_path, ray_instance,
                                                                                   monkeypatch) -> None:
    """``--launcher ray``, 2 strategies x 2 seeds: each cell a task with its own store; the worker running ER
    with seed 1 is killed by its PID mid-run, Ray retries the task, which resumes the run from its checkpoint;
    the driver imports every cell once, with the matrices the local launcher trains, and a driver started
    again submits nothing."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers unpickle KilledOnce by value
    monkeypatch.setattr(launchers, "CellJob", KilledOnce)
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.replace('"optim.lr" = [0.01, 0.05]', '"optim.lr" = [0.05]')
                    .replace("[10, 20]", "10").replace('"model.hidden=[8]"', '"model.hidden=[8]", "run.checkpoint_every_steps=2"'))
    db = str(tmp_path / "runs.db")
    group_id, outcomes = run_sweep(load_sweep(path, db=db), ResultsStore(db), launcher="ray", folder=tmp_path / "jobs")
    assert len(list((tmp_path / "jobs" / "cells").glob("*.killed"))) == 1  # the ER cell's worker was killed
    killed = ResultsStore(next((tmp_path / "jobs" / "cells").glob("*.killed")).with_suffix("").with_suffix(".db"))
    assert [r.status for r in killed.runs()] == ["finished"]  # resumed: the same run, not a second one
    store, here = ResultsStore(db), ResultsStore(tmp_path / "here.db")
    assert [o.trained for o in outcomes] == [True] * 4 and len(store.runs()) == 4
    assert len(store.group(group_id).members) == 4
    _, local = run_sweep(load_sweep(path, db=str(tmp_path / "here.db")), here)
    assert [store.get(o.run_id).matrix for o in outcomes] == [here.get(o.run_id).matrix for o in local]
    monkeypatch.setattr(launchers, "run_jobs", lambda *a, **k: pytest.fail("nothing should be submitted"))
    assert not any(o.trained for o in run_sweep(load_sweep(path, db=db), store, launcher="ray")[1])


def test_tune_on_ray_tasks_runs_the_local_trials(tmp_path, capsys, ray_instance) -> None:
    """``lifelong tune --launcher ray``: the trials' runs are Ray tasks, imported by the driver, the same
    runs and best parameters as tuning here."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert main(["tune", "--study", "ray", "--trials", "2", "--eval-seeds", "0", "--db", str(tmp_path / "runs.db"),
                 "--launcher", "ray", "--jobs-folder", str(tmp_path / "jobs"), "--slurm", "num_cpus=1",
                 *(f"--set={value}" for value in ["strategy.name=ewc", *SMALL])]) == 0
    assert "tuning: 2 trials completed" in capsys.readouterr().out
    store, here = ResultsStore(tmp_path / "runs.db"), ResultsStore(tmp_path / "here.db")
    group = store.group(store.find_group("protocol", "ray"))
    local = run_protocol(ProtocolSettings(study="ray", trials=2, overrides=["strategy.name=ewc", *SMALL],
                                          eval_seeds=[0]), here)
    tuning = [m["run_id"] for m in group.members if m["role"] == "tuning"]
    assert [store.get(r).matrix for r in tuning] == [here.get(r).matrix for r in local.tuning_run_ids]
    assert group.summary["best_params"] == local.best_params
