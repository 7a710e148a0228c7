"""Where a protocol's cells run: in this process, as a SLURM job array through ``submitit``, or as Ray tasks.

``lifelong sweep --launcher slurm`` submits every cell the results store does not hold yet as one task of
a job array (``submitit.AutoExecutor``; ``--launcher submitit-local`` runs the same jobs as local processes,
which is how the tests run it). Each job writes only its own results store, ``<folder>/cells/<key>.db``, with
its checkpoints beside it (the folder must be on storage every node sees); when SLURM preempts it or its time
runs out, submitit requeues it (:class:`CellJob` is ``Checkpointable``) and the requeued job resumes the
interrupted run from its last checkpoint, exactly (:func:`lifelong.experiment.stored_run`). The driver waits
for the jobs and imports each finished run into its own store (:meth:`ResultsStore.import_run`): one writer
per SQLite file, nothing lost, and a sweep rerun after a driver crash skips the cells already imported and
re-imports those whose jobs finished meanwhile (their stores hold them finished, so nothing retrains).
``submitit`` is an optional extra (``pip install 'lifelong[slurm]'``).

``--launcher ray`` runs the same jobs as Ray tasks (``pip install 'lifelong[ray]'``) on the cluster at
``--address`` (a running head; without one, a local Ray instance for the sweep's duration), each with its
CPU/GPU request (``num_cpus``, ``num_gpus``); a task whose worker dies is retried (``max_retries``) and
resumes its run from the checkpoint in its own store, and the driver imports what the tasks return, as
with SLURM.

``lifelong tune --launcher ...`` runs its trials the same way (:class:`CellJob` with a ``validation`` split):
the driver asks the study for ``--parallel`` trials at a time, their runs are jobs, and the driver, the only
writer of the study and of the results store, tells the study each trial's score.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lifelong.config import RunConfig
from lifelong.errors import ConfigError
from lifelong.runner.results import ResultsStore, RunRecord

LAUNCHERS = ("local", "slurm", "submitit-local", "ray")
"""``local``: cells run one after another in this process; ``slurm``: a SLURM job array through submitit;
``submitit-local``: the same jobs as local processes (no cluster needed); ``ray``: Ray tasks."""


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher slurm runs cells through submitit, which is not installed; "
                          "pip install 'lifelong[slurm]' (or submitit)") from None
    return submitit





class CellJob:
    """One cell as a submitit job or Ray task: train (or find finished, or resume) the cell's run in its own
    store and return it as a plain record, or ``{"diverged": message}`` when its loss diverged (an answer, which
    a tuning study records, not a crash of the job). ``checkpoint`` is submitit's requeue hook: the job is
    resubmitted as it is, and the new one resumes the run from the checkpoint the interrupted one left.

    ``validation`` (a tuning trial's): ``{"fraction": f, "seed": s}``, train on the dataset with its test set
    replaced by that stratified share of its training set (:func:`lifelong.protocol.validation.validation_split`);
    ``extra_config``: sections added to the stored configuration (the trial's ``protocol`` record)."""

    def __init__(self, config: dict[str, Any], store: str, validation: dict[str, Any] | None = None,
                 extra_config: dict[str, Any] | None = None) -> None:
        self.config, self.store, self.validation, self.extra_config = config, store, validation, extra_config

    def __call__(self) -> dict[str, Any]:
        from lifelong.errors import TrainingError
        from lifelong.experiment import stored_run

        config = RunConfig.model_validate(self.config)
        config = config.model_copy(update={"run": config.run.model_copy(update={
            "db": self.store, "checkpoint": True, "progress": False})})
        store = ResultsStore(self.store)
        parts = None
        if self.validation is not None:
            from lifelong.protocol.validation import tuning_parts

            # a function, not parts: rebuilt from the same split when a resume finds no usable checkpoint
            parts = functools.partial(tuning_parts, config, float(self.validation["fraction"]),
                                      int(self.validation["seed"]))
        try:
            run_id, _ = stored_run(config, store, parts, self.extra_config)
        except TrainingError as error:
            return {"diverged": str(error)}
        return dataclasses.asdict(store.get(run_id))

    def checkpoint(self) -> Any:
        """Requeue this job unchanged (submitit calls it on preemption and time-out)."""
        return _submitit().helpers.DelayedSubmission(
            CellJob(self.config, self.store, self.validation, self.extra_config))


def cell_job(config: RunConfig, folder: Path, validation: dict[str, Any] | None = None,
             extra_config: dict[str, Any] | None = None) -> CellJob:
    """The job of one cell, its store in ``folder``'s ``cells`` (named by the configuration and its extra
    sections, so that two trials of one configuration on different splits never share a store)."""
    keyed = config.model_dump(mode="json")
    named = keyed if validation is None and extra_config is None else \
        {"config": keyed, "extra": extra_config, "validation": validation}
    store = folder / "cells" / f"{hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:16]}.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    return CellJob(keyed, str(store), validation, extra_config)


def launch(jobs: Sequence[CellJob], launcher: str, folder: Path, resources: dict[str, Any] | None = None,
           address: str | None = None) -> list[dict[str, Any]]:
    """Run ``jobs`` on ``launcher`` (``slurm``, ``submitit-local`` or ``ray``) and wait for them: each job's
    record (or ``{"diverged": message}``), in order. ``resources``: submitit's ``update_parameters``
    (``timeout_min``, ``slurm_partition``, ``cpus_per_task``, ``gpus_per_node``, ...) or Ray's task options
    (``num_cpus``, ``num_gpus``, ``max_retries``); ``address``: the Ray cluster's."""
    if launcher not in LAUNCHERS[1:]:
        raise ConfigError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if not jobs:
        return []
    return _ray(list(jobs), resources or {}, address) if launcher == "ray" else _submitit_array(
        list(jobs), launcher, folder, resources or {})


def run_jobs(configs: Sequence[RunConfig], store: ResultsStore, launcher: str, folder: Path,
             resources: dict[str, Any] | None = None, address: str | None = None) -> list[int]:
    """Run ``configs`` as jobs of ``launcher`` (:func:`launch`) and import each finished run into ``store``;
    the run ids there, in order. A job whose loss diverged raises :class:`TrainingError` once every finished
    run is imported (a rerun then trains only that cell)."""
    from lifelong.errors import TrainingError

    records = launch([cell_job(config, folder) for config in configs], launcher, folder, resources, address)
    run_ids = [store.import_run(RunRecord(**record)) for record in records if "diverged" not in record]
    diverged = [record["diverged"] for record in records if "diverged" in record]
    if diverged:
        raise TrainingError(f"{len(diverged)} of {len(records)} cells diverged; the first: {diverged[0]}")
    return run_ids


def _submitit_array(jobs: list[CellJob], launcher: str, folder: Path, resources: dict[str, Any]) -> list[dict[str, Any]]:
    submitit = _submitit()
    executor = submitit.AutoExecutor(folder=str(folder / "jobs"), cluster="slurm" if launcher == "slurm" else "local")
    executor.update_parameters(**{"timeout_min": 60, **resources})
    with executor.batch():
        submitted = [executor.submit(job) for job in jobs]
    return [job.result() for job in submitted]


def _run_job(job: CellJob) -> dict[str, Any]:
    return job()


def _ray(jobs: list[CellJob], resources: dict[str, Any], address: str | None) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--launcher ray runs cells as Ray tasks, and ray is not installed; "
                          "pip install 'lifelong[ray]' (or ray)") from None
    started = not ray.is_initialized()
    if started and address is not None:  # a cluster's head
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    elif started:  # a local instance for this sweep, whose workers are the sweep's work: not niced (Ray's
        # default of 15 starves them behind any other process; importing torch took 45 s instead of 3)
        ray.init(include_dashboard=False, log_to_driver=False, _system_config={"worker_niceness": 0})
    try:
        task = ray.remote(_run_job).options(**{"num_cpus": 1, "max_retries": 3, **resources})
        return list(ray.get([task.remote(job) for job in jobs]))
    finally:
        if started:
            ray.shutdown()
