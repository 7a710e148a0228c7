"""Tune-then-evaluate (Cha and Cho 2024, "Hyperparameters in Continual Learning: a Reality Check").

Tuning a method's hyperparameters on the very stream it is then scored on flatters it. The protocol
splits the two: an Optuna study searches the strategy's space (:mod:`lifelong.protocol.spaces`) on a
*tuning* stream (by default another class order), scoring each trial on a validation split carved
out of that stream's training data, so no test image is looked at while tuning; the best
hyperparameters are then fixed and run on a separate *evaluation* stream (another class order,
dataset or scenario) under several seeds. A trial whose loss diverges counts as a finished (pruned)
trial of the budget: a setting that diverges is an answer of the search. Every run, both stages, is
stored and linked to one ``protocol`` group; the study lives in the same SQLite file and a restart
continues it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from lifelong.config import RunConfig, build, load_config
from lifelong.data.catalog import DATASETS
from lifelong.errors import ConfigError, TrainingError
from lifelong.experiment import refuse_save_pretrained, run_config
from lifelong.metrics.aggregate import Aggregate
from lifelong.protocol.validation import check_tunable, tuning_parts
from lifelong.protocol.seeds import run_seeds
from lifelong.protocol.spaces import Parameter, search_space, suggest
from lifelong.runner.results import ResultsStore, RunRecord

#: Metrics a study may maximise.
OBJECTIVES = ("final_accuracy", "final_accuracy_pooled", "average_incremental_accuracy",
              "average_incremental_accuracy_per_experience")


@dataclass
class ProtocolSettings:
    """What to tune, on what, and how to evaluate."""

    study: str
    """The study's name: its group in the results store, and the key a restart continues."""
    trials: int = 20
    config: str | None = None
    """Base run configuration file."""
    overrides: list[str] = field(default_factory=list)
    """``--set`` overrides applied to both stages."""
    tune_overrides: list[str] = field(default_factory=lambda: ["scenario.shuffle=true", "scenario.seed=1"])
    eval_overrides: list[str] = field(default_factory=lambda: ["scenario.shuffle=true", "scenario.seed=2"])
    eval_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    objective: str = "final_accuracy"
    validation_fraction: float = 0.2
    seed: int = 0
    """Seeds the sampler and the validation split."""
    trial_seeds: list[int] | None = None
    """Run seeds of every trial (None: the configured ``run.seed``): its score is the mean over them, and a
    trial that diverges with any of them is pruned, so that a setting at the edge of stability is not chosen
    on one lucky seed."""
    fixed: list[str] = field(default_factory=list)
    """Parameters of the search space left out of the search, kept at their configured values (e.g.
    ``optim.lr``, when a benchmark fixes the optimizer for every strategy and tunes their own weights)."""
    storage: str | None = None
    """Where the Optuna study lives: None, the results store's SQLite file (one process); ``journal:PATH``,
    Optuna's journal file (a file on storage every worker sees, locked per append); or an RDB URL
    (``postgresql://...``, ``mysql://...``, ``sqlite:///...``). With a shared storage several ``lifelong tune``
    workers, on one machine or several, draw trials of one study until it holds ``trials`` finished ones;
    each stores its runs in its own results store."""
    launcher: str = "local"
    """Where trials run (:mod:`lifelong.protocol.launchers`): ``local``, here, one after another; ``slurm``,
    ``submitit-local`` or ``ray``, as jobs, ``parallel`` trials at a time (asked of the study together, told
    once their jobs are back), their runs imported into this process's results store."""
    parallel: int = 2
    """Trials asked of the study at a time with a launcher (their runs are ``parallel`` x seeds jobs)."""
    jobs_folder: str | None = None
    """The launcher's folder of job logs, stores and checkpoints (default ``<db>-jobs``), seen by every node."""
    resources: dict[str, Any] = field(default_factory=dict)
    """The launcher's job parameters (submitit's ``timeout_min``, ``slurm_partition``, ...; Ray's ``num_cpus``)."""
    address: str | None = None
    """The Ray cluster's address (default: a local Ray instance for the study's duration)."""


@dataclass
class ProtocolResult:
    """The group linking everything, the best trial and the evaluation over seeds."""

    group_id: int
    best_params: dict[str, Any]
    best_value: float
    tuning_run_ids: list[int]
    """Runs of the completed trials (diverged trials are counted in ``diverged``)."""
    diverged: int
    evaluation_run_ids: list[int]
    evaluation: dict[str, Aggregate]
    diverged_evaluation: dict[int, str] = field(default_factory=dict)
    """Evaluation seeds whose loss diverged with the best hyperparameters (left out of ``evaluation``): a
    setting at the edge of stability on another stream is an answer of the protocol, not a crash of it."""


def searched(space: dict[str, Parameter], fixed: list[str], strategy: str) -> dict[str, Parameter]:
    """``space`` without the ``fixed`` parameters; an unknown name, or nothing left to search, is refused."""
    unknown = sorted(set(fixed) - set(space))
    if unknown:
        raise ConfigError(f"--fix: {', '.join(unknown)} not in the search space of strategy {strategy!r}; "
                          f"it searches {', '.join(space)}")
    left = {key: value for key, value in space.items() if key not in fixed}
    if not left:
        raise ConfigError(f"--fix leaves nothing to search for strategy {strategy!r} (its space: "
                          f"{', '.join(space)}); run it with lifelong run --seeds instead")
    return left


def sampler_seed(seed: int, existing_trials: int) -> int:
    """The sampler's seed for a study that already holds ``existing_trials`` trials: ``seed`` for a new
    study; for a continued one a seed drawn from both, because a sampler seeded as the first time
    would draw the first trials' parameters again (the sampler's random state is not stored in the
    study, only the trials are)."""
    if existing_trials == 0:
        return seed
    return int(np.random.SeedSequence([seed, existing_trials]).generate_state(1)[0])


def _assignments(values: dict[str, Any]) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def study_storage(storage: str | None, store: ResultsStore) -> str | optuna.storages.BaseStorage:
    """The Optuna storage of :attr:`ProtocolSettings.storage`: the results store's SQLite file by default."""
    if storage is None:
        return f"sqlite:///{store.path}"
    if storage.startswith("journal:"):
        path = Path(storage.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise ConfigError(f"--storage {storage}: folder {path.parent} does not exist; create it (on storage "
                              "every worker sees) or name another journal file")
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in storage:
        raise ConfigError(f"--storage {storage!r} is neither journal:PATH nor a database URL; give journal:PATH "
                          "(Optuna's journal file) or a URL such as postgresql://user@host/db or sqlite:///study.db")
    return storage


def run_protocol(settings: ProtocolSettings, store: ResultsStore) -> ProtocolResult:
    """Tune on the tuning stream (continuing a stored study of the same name), then evaluate the best
    hyperparameters on the evaluation stream; return what was found and stored."""
    if settings.objective not in OBJECTIVES:
        raise ConfigError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {settings.objective!r}")
    if settings.trial_seeds is not None and not settings.trial_seeds:
        raise ConfigError("--trial-seeds must name at least one seed")
    if settings.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {settings.trials}")
    if settings.parallel < 1:
        raise ConfigError(f"--parallel must be >= 1, got {settings.parallel}")
    if not 0.0 < settings.validation_fraction < 1.0:  # checked before the study records a failed trial
        raise ConfigError(f"--validation-fraction must lie in (0, 1), got {settings.validation_fraction}")
    base = load_config(settings.config, [*settings.overrides, *settings.tune_overrides])
    load_config(settings.config, [*settings.overrides, *settings.eval_overrides])  # fail before tuning
    refuse_save_pretrained(base, "lifelong tune")
    check_tunable(build("dataset", DATASETS, base.dataset))
    space = searched(search_space(base.strategy.name), settings.fixed, base.strategy.name)
    group_id = store.find_group("protocol", settings.study) or store.create_group(
        "protocol", settings.study, {**settings.__dict__, "search_space": {k: repr(v) for k, v in space.items()}})
    study = optuna.create_study(study_name=settings.study, storage=study_storage(settings.storage, store),
                                direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed),
                                load_if_exists=True)
    if settings.storage is None:  # one process owns the study: a running trial was cut off by an interrupted run
        for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
    # a shared study's running trials may be other workers' and are left alone; they count once finished
    study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(settings.seed, len(study.trials)))

    trial_seeds: list[int | None] = [*settings.trial_seeds] if settings.trial_seeds else [None]

    def trial_configs(values: dict[str, Any]) -> list[tuple[int | None, RunConfig]]:
        """A trial's runs: one per trial seed (None: the configured ``run.seed``)."""
        return [(seed, load_config(settings.config, [*settings.overrides, *settings.tune_overrides, *_assignments(
            values), *([] if seed is None else [f"run.seed={seed}"])])) for seed in trial_seeds]

    def trial_record(trial: optuna.Trial) -> dict[str, Any]:
        return {"protocol": {"role": "tuning", "study": settings.study, "trial": trial.number,
                             "validation_fraction": settings.validation_fraction}}

    def scored(trial: optuna.Trial, runs: list[tuple[int | None, int]]) -> float:
        """The trial's score over its seeds' runs (now in ``store``), and its runs linked to the group."""
        for seed, run_id in runs:
            store.add_to_group(group_id, run_id, "tuning", f"trial {trial.number} seed {seed}")
        trial.set_user_attr("run_id", runs[0][1])
        trial.set_user_attr("run_ids", [run_id for _, run_id in runs])
        trial.set_user_attr("store", str(store.path))  # a shared study's trials are in their workers' stores
        return float(np.mean([float(store.get(run_id).metrics[settings.objective])  # type: ignore[index]
                              for _, run_id in runs]))

    def diverged_trial(trial: optuna.Trial, seed: int | None, error: str) -> None:
        trial.set_user_attr("diverged", error if seed is None else f"seed {seed}: {error}")

    def objective(trial: optuna.Trial) -> float:
        runs = []
        for seed, config in trial_configs(suggest(trial, space)):
            try:
                result = run_config(config, store=store, extra_config=trial_record(trial), prepared=tuning_parts(
                    config, settings.validation_fraction, settings.seed))
            except TrainingError as error:  # a diverging setting is a result of the search, not a crash of it
                diverged_trial(trial, seed, str(error))
                raise optuna.TrialPruned(str(error)) from None
            assert result.run_id is not None
            runs.append((seed, result.run_id))
        return scored(trial, runs)

    def launched(count: int) -> None:
        """``count`` trials asked together, run as jobs of the launcher, imported and told."""
        from lifelong.protocol.launchers import cell_job, launch

        folder = Path(settings.jobs_folder or f"{store.path}-jobs")
        validation = {"fraction": settings.validation_fraction, "seed": settings.seed}
        trials = [study.ask() for _ in range(count)]
        cells = [(trial, seed, config) for trial in trials for seed, config in trial_configs(suggest(trial, space))]
        records = launch([cell_job(config, folder, validation, trial_record(trial)) for trial, _, config in cells],
                         settings.launcher, folder, settings.resources, settings.address)
        for trial in trials:
            mine = [(seed, record) for (owner, seed, _), record in zip(cells, records, strict=True) if owner is trial]
            failed = [(seed, record["diverged"]) for seed, record in mine if "diverged" in record]
            if failed:
                diverged_trial(trial, *failed[0])
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, scored(trial, [(seed, store.import_run(RunRecord(**record))) for seed, record in mine]))

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    if settings.launcher != "local":
        while done < settings.trials:
            launched(min(settings.parallel, settings.trials - done))
            done = len(study.get_trials(deepcopy=False, states=finished))
    elif done < settings.trials:  # workers sharing the study stop once it holds the trials, whoever ran them
        study.optimize(objective, n_trials=settings.trials - done,
                       callbacks=[optuna.study.MaxTrialsCallback(settings.trials, states=finished)])
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raise TrainingError(f"tune: all {settings.trials} trials of study {settings.study!r} diverged; narrow the "
                            "search space or set optim.grad_clip")
    best = study.best_trial
    evaluation_config = load_config(settings.config, [*settings.overrides, *settings.eval_overrides,
                                                      *_assignments(best.params)])
    evaluation = run_seeds(evaluation_config, settings.eval_seeds, store=store, group_id=group_id, role="evaluation",
                           reuse=True, tolerate_divergence=True)
    here = str(store.path)
    completed = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                 if t.user_attrs.get("store", here) == here]  # this worker's (another's runs are in its store)
    tuning_run_ids = [int(run_id) for t in completed for run_id in t.user_attrs.get("run_ids", [t.user_attrs["run_id"]])]
    evaluation_run_ids = [int(r.run_id) for r in evaluation.runs if r.run_id is not None]
    diverged = {t.number: t.user_attrs["diverged"] for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)) if "diverged" in t.user_attrs}
    store.set_group_summary(group_id, {
        "best_params": best.params, "best_value": best.value, "best_trial": best.number,
        "best_tuning_run": best.user_attrs["run_id"], "best_tuning_store": best.user_attrs.get("store", here),
        "objective": settings.objective,
        "tuning_runs": tuning_run_ids, "evaluation_runs": evaluation_run_ids,
        "diverged_trials": diverged, "diverged_evaluation_seeds": evaluation.diverged,
        "evaluation": {name: value.as_dict() for name, value in evaluation.summary.items()}})
    return ProtocolResult(group_id, dict(best.params), float(best.value), tuning_run_ids, len(diverged),
                          evaluation_run_ids, evaluation.summary, evaluation.diverged)
