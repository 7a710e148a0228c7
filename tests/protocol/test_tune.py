import math
import subprocess
import sys

import optuna
import pytest

from lifelong.cli import main
from lifelong.config import load_config
from lifelong.errors import ConfigError, TrainingError
from lifelong.protocol import tune
from lifelong.experiment import build_strategy
from lifelong.protocol.spaces import SEARCH_SPACES, FloatRange, search_space
from lifelong.protocol.tune import ProtocolSettings, run_protocol
from lifelong.protocol.validation import validation_split
from lifelong.runner.results import ResultsStore
from lifelong.strategies import STRATEGIES

SMALL = ["dataset.name=synthetic", "dataset.n_classes=4", "dataset.n_features=6", "dataset.n_per_class=20",
         "scenario.n_experiences=2", "optim.epochs=1", "model.hidden=[8]"]
FAST = ["optim.epochs=1", "model.hidden=[32]", "scenario.n_experiences=2", "optim.batch_size=32"]


def test_validation_split_holds_out_training_data_only(digits_data) -> None:
    split = validation_split(digits_data, 0.2, seed=0)
    assert len(split.y_train) + len(split.y_test) == len(digits_data.y_train)
    assert len(split.y_test) == math.ceil(0.2 * len(digits_data.y_train))  # 270 of 1347
    # every validation image comes from the training set, and is no longer trained on
    train_rows = {tuple(row.tolist()) for row in digits_data.x_train.flatten(1)}
    kept_rows = {tuple(row.tolist()) for row in split.x_train.flatten(1)}
    validation_rows = {tuple(row.tolist()) for row in split.x_test.flatten(1)}
    assert validation_rows <= train_rows and not validation_rows & kept_rows
    with pytest.raises(ConfigError, match="validation_fraction"):
        validation_split(digits_data, 1.5, seed=0)


def test_every_registered_strategy_has_a_space_of_real_fields() -> None:
    for name in STRATEGIES:
        assert name in SEARCH_SPACES, f"{name} has no search space"
        space = search_space(name)
        assert "optim.lr" in space
        values = [f"strategy.{key.split('.')[1]}={getattr(p, 'low', None) or p.values[0]}"
                  for key, p in space.items() if key.startswith("strategy.")]
        build_strategy(load_config(None, [f"strategy.name={name}", *values]))


def test_protocol_tunes_then_evaluates_on_digits_and_links_runs(tmp_path) -> None:
    """End to end on digits: 3 trials on class order 1 (validation split), then the best
    hyperparameters on class order 2 with two seeds; a restart with more trials continues the study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = ResultsStore(tmp_path / "runs.db")
    settings = ProtocolSettings(study="ewc-digits", trials=2, overrides=["strategy.name=ewc", *FAST],
                                eval_seeds=[0, 1])
    result = run_protocol(settings, store)
    assert len(result.tuning_run_ids) == 2 and len(result.evaluation_run_ids) == 2
    assert set(result.best_params) == {"optim.lr", "strategy.lam"}
    tuning = store.get(result.tuning_run_ids[0])
    assert tuning.config["protocol"]["role"] == "tuning" and tuning.name.startswith("digits-validation")
    assert tuning.config["scenario"]["seed"] == 1
    evaluation = store.get(result.evaluation_run_ids[1])
    assert evaluation.name.startswith("digits ") and evaluation.config["scenario"]["seed"] == 2
    assert evaluation.config["run"]["seed"] == 1
    assert evaluation.config["optim"]["lr"] == pytest.approx(result.best_params["optim.lr"])
    assert evaluation.config["strategy"]["lam"] == pytest.approx(result.best_params["strategy.lam"])
    group = store.group(result.group_id)
    assert [m["role"] for m in group.members] == ["tuning", "tuning", "evaluation", "evaluation"]
    assert group.summary["best_tuning_run"] in result.tuning_run_ids
    assert group.summary["evaluation"]["final_accuracy"]["n"] == 2
    # a restart with trials=3 runs one more trial in the same study and group
    again = run_protocol(ProtocolSettings(**{**settings.__dict__, "trials": 3}), store)
    assert again.group_id == result.group_id and len(again.tuning_run_ids) == 3
    assert again.tuning_run_ids[:2] == result.tuning_run_ids
    # rerunning the finished study trains nothing: no new trial, the evaluation runs are reused
    stored = len(store.runs())
    same = run_protocol(ProtocolSettings(**{**settings.__dict__, "trials": 3}), store)
    assert len(store.runs()) == stored
    assert same.evaluation_run_ids == again.evaluation_run_ids and same.best_params == again.best_params


def test_tune_command(tmp_path, capsys) -> None:
    db = str(tmp_path / "runs.db")
    args = ["tune", "--db", db, "--trials", "1", "--eval-seeds", "0", *[a for s in FAST for a in ("--set", s)]]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tuning: 1 trials completed" in out and "evaluation stream" in out and "protocol group 1" in out
    assert main([*args, "--objective", "forgetting"]) == 2
    assert "--objective must be one of" in capsys.readouterr().err


def test_diverging_trials_are_pruned_and_all_diverging_is_a_training_error(tmp_path, monkeypatch) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    monkeypatch.setattr(tune, "search_space", lambda name: {"optim.lr": FloatRange(1e6, 1e7, log=True)})
    settings = ProtocolSettings(study="diverge", trials=2, overrides=[*SMALL, "optim.momentum=0"], eval_seeds=[0])
    with pytest.raises(TrainingError, match="all 2 trials of study 'diverge' diverged"):
        run_protocol(settings, ResultsStore(tmp_path / "runs.db"))
    study = optuna.load_study(study_name="diverge", storage=f"sqlite:///{tmp_path / 'runs.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert "the loss became" in study.trials[0].user_attrs["diverged"]


def test_bad_validation_fraction_fails_before_the_study_starts(tmp_path, capsys) -> None:
    db = tmp_path / "runs.db"
    args = ["tune", "--db", str(db), "--trials", "1", "--validation-fraction", "2", *[a for s in FAST for a in ("--set", s)]]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == "error: --validation-fraction must lie in (0, 1), got 2.0"
    assert not db.exists() or "tune" not in optuna.get_all_study_names(storage=f"sqlite:///{db}")


def test_a_continued_study_draws_new_trials(tmp_path) -> None:
    # Issue 18: continuing a study with more trials seeded its sampler as the first time, so the new
    # trials replayed the first ones' parameters (runs 7 and 8 were runs 1 and 2)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = ResultsStore(tmp_path / "runs.db")
    settings = ProtocolSettings(study="more", trials=2, overrides=["strategy.name=ewc", *SMALL], eval_seeds=[0])
    run_protocol(settings, store)
    run_protocol(ProtocolSettings(**{**settings.__dict__, "trials": 4}), store)
    study = optuna.load_study(study_name="more", storage=f"sqlite:///{tmp_path / 'runs.db'}")
    drawn = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(drawn) == 4 and len(set(drawn)) == 4, drawn
    stored = [store.get(t.user_attrs["run_id"]).config["optim"]["lr"] for t in study.trials]
    assert len(set(stored)) == 4  # four different learning rates were trained, not two twice


def test_fixed_parameters_stay_at_their_configured_values_while_the_rest_is_searched(tmp_path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = ResultsStore(tmp_path / "runs.db")
    settings = ProtocolSettings(study="fixed", trials=2, overrides=[*SMALL, "strategy.name=ewc", "optim.lr=0.02"],
                                eval_seeds=[0], fixed=["optim.lr"])
    result = run_protocol(settings, store)
    assert set(result.best_params) == {"strategy.lam"}
    for run_id in result.tuning_run_ids:
        assert store.get(run_id).config["optim"]["lr"] == 0.02


@pytest.mark.parametrize(("fixed", "message"), [
    (["strategy.alpha"], "--fix: strategy.alpha not in the search space of strategy 'ewc'; it searches optim.lr, "
                         "strategy.lam"),
    (["optim.lr", "strategy.lam"], "--fix leaves nothing to search for strategy 'ewc'"),
])
def test_fixing_an_unknown_or_every_parameter_is_refused(tmp_path, fixed, message) -> None:
    settings = ProtocolSettings(study="bad", trials=1, overrides=[*SMALL, "strategy.name=ewc"], fixed=fixed)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_protocol(settings, ResultsStore(tmp_path / "runs.db"))


def test_seeds_whose_loss_diverges_are_recorded_when_tolerated_and_raise_otherwise(tmp_path) -> None:
    from lifelong.protocol.seeds import run_seeds

    config = load_config(None, [*SMALL, "optim.lr=5e6", "optim.momentum=0", "run.progress=false",
                                "run.checkpoint=false"])
    store = ResultsStore(tmp_path / "runs.db")
    result = run_seeds(config, [0, 1], store=store, tolerate_divergence=True)
    assert sorted(result.diverged) == [0, 1] and result.runs == [] and result.summary == {}
    assert "the loss became" in result.diverged[0]
    with pytest.raises(TrainingError):
        run_seeds(config, [0], store=store)


def test_a_trial_scores_the_mean_over_its_seeds(tmp_path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = ResultsStore(tmp_path / "runs.db")
    settings = ProtocolSettings(study="seeds", trials=1, overrides=SMALL, eval_seeds=[0], trial_seeds=[3, 4])
    result = run_protocol(settings, store)
    runs = [store.get(run_id) for run_id in result.tuning_run_ids]
    assert [run.config["run"]["seed"] for run in runs] == [3, 4]
    assert result.best_value == pytest.approx(sum(run.metrics["final_accuracy"] for run in runs) / 2)


def test_workers_sharing_a_journal_study_continue_it_without_replaying_a_trial(tmp_path) -> None:
    """Two workers, each with its own results store, on one Optuna journal file: the second continues the
    study where the first left it (its store gets only the new trial's run), and two workers started at
    once stop when the study holds its trials (at most one more: a trial begun as the last one finished)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = f"journal:{tmp_path / 'study.log'}"
    settings = dict(study="shared", overrides=["strategy.name=ewc", *SMALL], eval_seeds=[0], storage=journal)
    first = run_protocol(ProtocolSettings(trials=2, **settings), ResultsStore(tmp_path / "a.db"))
    second = run_protocol(ProtocolSettings(trials=3, **settings), ResultsStore(tmp_path / "b.db"))
    study = optuna.load_study(study_name="shared", storage=tune.study_storage(journal, ResultsStore(tmp_path / "a.db")))
    assert len(study.trials) == 3
    assert len(first.tuning_run_ids) == 2 and len(second.tuning_run_ids) == 1  # each lists the runs of its store
    assert [t.user_attrs["store"] for t in study.trials] == [str(tmp_path / "a.db")] * 2 + [str(tmp_path / "b.db")]
    tuning = ResultsStore(tmp_path / "b.db").get(second.tuning_run_ids[0])
    assert tuning.config["protocol"]["trial"] == 2

    command = [sys.executable, "-m", "lifelong.cli", "tune", "--study", "together", "--trials", "4", "--storage",
               journal, "--eval-seeds", "0", *(f"--set={value}" for value in ["strategy.name=ewc", *SMALL])]
    workers = [subprocess.Popen([*command, "--db", str(tmp_path / f"w{i}.db")], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    together = optuna.load_study(study_name="together",
                                 storage=tune.study_storage(journal, ResultsStore(tmp_path / "a.db")))
    finished = [t for t in together.trials if t.state.is_finished()]
    assert 4 <= len(finished) <= 5 and len({t.number for t in finished}) == len(finished)
    # every finished trial ran once, in one of the two workers: their stores hold one tuning run per trial
    tuning = [r for i in range(2) for r in ResultsStore(tmp_path / f"w{i}.db").runs()
              if r.config.get("protocol", {}).get("role") == "tuning" and r.status == "finished"]
    assert sorted(r.config["protocol"]["trial"] for r in tuning) == sorted(t.number for t in finished)


def test_a_storage_that_is_neither_a_journal_nor_a_url_is_refused_in_one_line(tmp_path) -> None:
    store = ResultsStore(tmp_path / "runs.db")
    with pytest.raises(ConfigError, match="neither journal:PATH nor a database URL"):
        tune.study_storage("study.log", store)
    with pytest.raises(ConfigError, match="does not exist"):
        tune.study_storage(f"journal:{tmp_path / 'missing' / 'study.log'}", store)


def _same_trials(launched: tune.ProtocolResult, launched_store: ResultsStore, local: tune.ProtocolResult,
                 local_store: ResultsStore) -> None:
    """The launcher's trials are the local ones: same parameters, same tuning and evaluation runs."""
    assert launched.best_params == local.best_params and launched.best_value == local.best_value
    assert len(launched.tuning_run_ids) == len(local.tuning_run_ids) == 2
    for job_run, here_run in zip(launched.tuning_run_ids, local.tuning_run_ids, strict=True):
        imported, reference = launched_store.get(job_run), local_store.get(here_run)
        assert imported.matrix == reference.matrix and imported.config["protocol"] == reference.config["protocol"]
        assert imported.config["optim"] == reference.config["optim"]
    assert launched.evaluation["final_accuracy"].mean == local.evaluation["final_accuracy"].mean


def test_trials_run_as_submitit_jobs_are_the_trials_the_local_study_runs(tmp_path, monkeypatch) -> None:
    """``lifelong tune --launcher submitit-local --parallel 2``: the driver asks the study for two trials,
    their runs are jobs on the validation split (each job its own store), the driver imports them and tells
    the study; the same sampler seed gives the same trials, runs and best parameters as tuning here, and a
    rerun of the finished study submits nothing."""
    pytest.importorskip("submitit")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = dict(study="jobs", trials=2, overrides=["strategy.name=ewc", *SMALL], eval_seeds=[0])
    store = ResultsStore(tmp_path / "runs.db")
    launched = run_protocol(ProtocolSettings(launcher="submitit-local", jobs_folder=str(tmp_path / "jobs"),
                                             resources={"timeout_min": 10}, **settings), store)
    assert len(list((tmp_path / "jobs" / "cells").glob("*.db"))) == 2  # one store per trial, written by its job
    assert all(r.config["protocol"]["validation_fraction"] == 0.2 for r in store.runs() if "protocol" in r.config)
    here = ResultsStore(tmp_path / "here.db")
    _same_trials(launched, store, run_protocol(ProtocolSettings(**settings), here), here)
    monkeypatch.setattr("lifelong.protocol.launchers.launch", lambda *a, **k: pytest.fail("nothing to submit"))
    again = run_protocol(ProtocolSettings(launcher="submitit-local", jobs_folder=str(tmp_path / "jobs"), **settings),
                         store)
    assert again.best_params == launched.best_params and len(store.runs()) == 3  # 2 trials + 1 evaluation run


def test_trials_whose_jobs_diverge_are_pruned(tmp_path, monkeypatch) -> None:
    pytest.importorskip("submitit")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    monkeypatch.setattr(tune, "search_space", lambda name: {"optim.lr": FloatRange(1e6, 1e7, log=True)})
    settings = ProtocolSettings(study="diverge", trials=2, overrides=[*SMALL, "optim.momentum=0"], eval_seeds=[0],
                                launcher="submitit-local", jobs_folder=str(tmp_path / "jobs"))
    with pytest.raises(TrainingError, match="all 2 trials of study 'diverge' diverged"):
        run_protocol(settings, ResultsStore(tmp_path / "runs.db"))
    study = optuna.load_study(study_name="diverge", storage=f"sqlite:///{tmp_path / 'runs.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert "the loss became" in study.trials[0].user_attrs["diverged"]
