import pytest

from lifelong.cli import main
from lifelong.errors import ConfigError
from lifelong import experiment
from lifelong.protocol import launchers
from lifelong.protocol.sweep import load_sweep, run_sweep
from lifelong.runner.results import ResultsStore

SWEEP = """
name = "tiny"
set = ["dataset.name=synthetic", "dataset.n_classes=4", "dataset.n_features=6", "dataset.n_per_class=20",
       "scenario.n_experiences=2", "optim.epochs=1", "model.hidden=[8]"]
seeds = [0, 1]
[grid]
"optim.lr" = [0.01, 0.05]
[strategies.naive]
[strategies.er]
buffer_size = [10, 20]
"""


def test_cells_are_the_grid_times_seeds(tmp_path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    sweep = load_sweep(path, db=str(tmp_path / "runs.db"))
    # per seed: naive x 2 learning rates + er x 2 buffer sizes x 2 learning rates = 6; two seeds = 12
    assert len(sweep.cells) == 12 and [c.seed for c in sweep.cells] == [0] * 6 + [1] * 6
    er = [c for c in sweep.cells if c.strategy == "er" and c.seed == 1]
    assert [(c.config.strategy.params["buffer_size"], c.config.optim.lr) for c in er] == \
        [(10, 0.01), (10, 0.05), (20, 0.01), (20, 0.05)]
    assert er[0].label == "er strategy.buffer_size=10 optim.lr=0.01" and er[0].config.run.seed == 1


def test_interrupted_sweep_restarts_only_missing_cells(tmp_path, monkeypatch) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.replace('"optim.lr" = [0.01, 0.05]', '"optim.lr" = [0.05]'))  # 3 cells x 2 seeds
    db = str(tmp_path / "runs.db")
    sweep = load_sweep(path, db=db)
    store = ResultsStore(db)
    real_run = experiment.run_config
    trained = []

    def interrupt_on_third(config, **kwargs):
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.append(config)
        return real_run(config, **kwargs)

    monkeypatch.setattr(experiment, "run_config", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, store)
    assert len(store.runs()) == 2

    def count(config, **kwargs):
        trained.append(config)
        return real_run(config, **kwargs)

    monkeypatch.setattr(experiment, "run_config", count)
    group_id, outcomes = run_sweep(load_sweep(path, db=db), store)
    # the second call trained exactly the 4 cells the first did not reach, none twice
    assert len(trained) == 6 and [o.trained for o in outcomes] == [False] * 2 + [True] * 4
    assert [t.model_dump() for t in trained[2:]] == [c.config.model_dump() for c in sweep.cells[2:]]
    assert len(store.runs()) == 6 and all(r.status == "finished" for r in store.runs())
    group = store.group(group_id)
    assert group.kind == "sweep" and len(group.members) == 6
    assert group.summary["er strategy.buffer_size=20 optim.lr=0.05"]["final_accuracy"]["n"] == 2
    # a third run trains nothing
    monkeypatch.setattr(experiment, "run_config", lambda *a, **k: pytest.fail("nothing should train"))
    assert not any(o.trained for o in run_sweep(load_sweep(path, db=db), store)[1])


def test_sweep_command_and_bad_files(tmp_path, capsys) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.replace("seeds = [0, 1]", "seeds = [3]").replace("[10, 20]", "10"))
    db = str(tmp_path / "runs.db")
    assert main(["sweep", "--config", str(path), "--db", db]) == 0
    out = capsys.readouterr().out
    assert "4 cells, 4 trained now" in out and "er strategy.buffer_size=10 optim.lr=0.05" in out
    assert main(["sweep", "--config", str(path), "--db", db]) == 0
    assert "4 cells, 0 trained now, 4 already in" in capsys.readouterr().out
    path.write_text(SWEEP.replace("buffer_size = [10, 20]", "buffer_sise = [10]"))
    with pytest.raises(ConfigError, match="strategy.buffer_sise: unknown field"):
        load_sweep(path)
    path.write_text("seeds = [0]\n")
    assert main(["sweep", "--config", str(path)]) == 2
    assert "sweep.strategies" in capsys.readouterr().err
    assert main(["sweep", "--config", str(tmp_path / "none.toml")]) == 2


def test_repeated_seeds_are_refused(tmp_path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.replace("seeds = [0, 1]", "seeds = [1, 1]"))
    with pytest.raises(ConfigError, match=r"sweep.seeds: expected distinct integers, got \[1, 1\]"):
        load_sweep(path)


def test_a_sweep_on_submitit_jobs_imports_the_runs_the_local_launcher_trains(tmp_path, monkeypatch) -> None:
    """``--launcher submitit-local``: each missing cell is a job writing its own store; the driver imports
    the finished runs (same matrices as training them here), and a rerun submits nothing."""
    pytest.importorskip("submitit")
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.replace('"optim.lr" = [0.01, 0.05]', '"optim.lr" = [0.05]')
                    .replace("seeds = [0, 1]", "seeds = [0]").replace("[10, 20]", "10"))  # naive and er: 2 cells
    db = str(tmp_path / "runs.db")
    store = ResultsStore(db)
    group_id, outcomes = run_sweep(load_sweep(path, db=db), store, launcher="submitit-local",
                                   folder=tmp_path / "jobs", resources={"timeout_min": 10})
    assert [o.trained for o in outcomes] == [True, True] and len(store.runs()) == 2
    assert all(r.status == "finished" for r in store.runs()) and len(store.group(group_id).members) == 2
    assert len(list((tmp_path / "jobs" / "cells").glob("*.db"))) == 2  # one store per job, written by it alone
    here = ResultsStore(tmp_path / "here.db")
    _, local = run_sweep(load_sweep(path, db=str(tmp_path / "here.db")), here)
    for job, trained_here in zip(outcomes, local, strict=True):
        imported, reference = store.get(job.run_id), here.get(trained_here.run_id)
        assert imported.matrix == reference.matrix and imported.initial == reference.initial
        assert [e["accuracies"] for e in imported.experiences] == [e["accuracies"] for e in reference.experiences]
    monkeypatch.setattr(launchers, "run_jobs", lambda *a, **k: pytest.fail("nothing should be submitted"))
    assert not any(o.trained for o in run_sweep(load_sweep(path, db=db), store, launcher="submitit-local")[1])


def test_a_requeued_job_resumes_its_killed_run_bit_for_bit(tmp_path, monkeypatch) -> None:
    """What submitit's requeue (or a Ray retry) does: the job runs again on the store its killed attempt left;
    the run resumes from the last checkpoint and ends as an uninterrupted run does."""
    import os
    import signal

    from lifelong.config import load_config
    from lifelong.runner.observers import Observer

    class KillAt(Observer):
        def on_step(self, state) -> None:
            if state.step == 7:
                os.kill(os.getpid(), signal.SIGKILL)

    config = load_config(None, ["dataset.name=synthetic", "dataset.n_classes=4", "dataset.n_features=6",
                                "dataset.n_per_class=20", "scenario.n_experiences=2", "optim.epochs=2",
                                "model.hidden=[8]", "strategy.name=er", "strategy.buffer_size=10",
                                "run.checkpoint_every_steps=3", f"run.db={tmp_path / 'runs.db'!s}"])
    job = launchers.CellJob(config.model_dump(mode="json"), str(tmp_path / "cell.db"))
    pid = os.fork()
    if pid == 0:  # the first attempt, killed without any cleanup after step 7
        try:
            monkeypatch.setattr(experiment, "tracking_observers", lambda config: [KillAt()])
            job()
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert [r.status for r in ResultsStore(tmp_path / "cell.db").runs()] == ["interrupted"]
    resumed = job()  # the requeued attempt
    reference = launchers.CellJob(config.model_dump(mode="json"), str(tmp_path / "reference.db"))()
    assert resumed["status"] == "finished" and resumed["id"] == 1  # the same run, resumed, not a new one
    assert resumed["matrix"] == reference["matrix"] and resumed["initial"] == reference["initial"]
