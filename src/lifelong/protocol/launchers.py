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
"""

from __future__ import annotations

import dataclasses
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


def cell_store(folder: Path, config: RunConfig) -> Path:
    """A cell's own results store in the launcher's folder, named by its configuration."""
    key = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
    return folder / "cells" / f"{key}.db"


class CellJob:
    """One cell as a submitit job: train (or find finished, or resume) the cell's run in its own store and
    return it as a plain record. ``checkpoint`` is submitit's requeue hook: the job is resubmitted as it
    is, and the new one resumes the run from the checkpoint the interrupted one left."""

    def __init__(self, config: dict[str, Any], store: str) -> None:
        self.config, self.store = config, store

    def __call__(self) -> dict[str, Any]:
        from lifelong.experiment import stored_run

        config = RunConfig.model_validate(self.config)
        config = config.model_copy(update={"run": config.run.model_copy(update={
            "db": self.store, "checkpoint": True, "progress": False})})
        store = ResultsStore(self.store)
        run_id, _ = stored_run(config, store)
        return dataclasses.asdict(store.get(run_id))

    def checkpoint(self) -> Any:
        """Requeue this job unchanged (submitit calls it on preemption and time-out)."""
        return _submitit().helpers.DelayedSubmission(CellJob(self.config, self.store))


def run_jobs(configs: Sequence[RunConfig], store: ResultsStore, launcher: str, folder: Path,
             resources: dict[str, Any] | None = None, address: str | None = None) -> list[int]:
    """Run ``configs`` as jobs of ``launcher`` (``slurm``, ``submitit-local`` or ``ray``), wait for them, and
    import each finished run into ``store``; the run ids there, in order. ``resources``: submitit's
    ``update_parameters`` (``timeout_min``, ``slurm_partition``, ``cpus_per_task``, ``gpus_per_node``, ...) or
    Ray's task options (``num_cpus``, ``num_gpus``, ``max_retries``); ``address``: the Ray cluster's."""
    if launcher not in LAUNCHERS[1:]:
        raise ConfigError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    jobs = [CellJob(config.model_dump(mode="json"), str(cell_store(folder, config))) for config in configs]
    for job in jobs:
        Path(job.store).parent.mkdir(parents=True, exist_ok=True)
    records = _ray(jobs, resources or {}, address) if launcher == "ray" else _submitit_array(
        jobs, launcher, folder, resources or {})
    return [store.import_run(RunRecord(**record)) for record in records]


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
    if started:  # a cluster's head at address, or a local instance for this sweep
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(_run_job).options(**{"num_cpus": 1, "max_retries": 3, **resources})
        return list(ray.get([task.remote(job) for job in jobs]))
    finally:
        if started:
            ray.shutdown()
