"""The runner: trains a model on a stream through a strategy and measures what it kept.

The runner owns every step of optimization (backward, clipping, learning rate, optimizer step) so
that strategies only say how a batch's loss is computed. A run has three parts:

1. **Plan** (:mod:`lifelong.runner.plan`). Before anything trains, the strategy declares for every
   experience what it will do (:meth:`~lifelong.strategies.base.Strategy.plan`: the size of the set it
   trains on, 0 for none; a learning-rate multiplier per parameter group; whether the optimizer state
   restarts). The runner derives from those declarations alone the planned steps and samples of each
   experience and of the stream (the two horizons a schedule can take), the sampler's epoch lengths and
   the step and sample budgets, so a schedule anneals where training really ends. FLOP and seconds
   budgets are re-planned after each step from the measured cost (:class:`~lifelong.runner.budget.Budget`).
2. **Loop** (:class:`_Experience`). For each experience: the model's modules that define
   ``begin_experience(index)`` are told its index (:func:`~lifelong.models.norms.begin_experience`,
   e.g. AdaB2N's task count); ``before_experience``; the training set,
   checked against the plan; the optimizer, rebuilt when the settings or the plan ask, and the plan's
   learning-rate scales applied to its parameter groups at every experience either way; then steps
   until the plan's horizon: ``observe`` → backward (gradients averaged over data-parallel ranks) →
   ``after_backward`` → clipping → learning rate (base rate at the global batch size × schedule ×
   group scale) → optimizer step → observers. ``after_experience`` closes the experience.
3. **Evaluate**: every test set after each experience gives one row of the accuracy matrix, stored
   at once with the experience's cost; metrics (and the evaluation curve, when one is kept) are stored
   with the run's status in one transaction at the end.

The loop is kept as close to a hand-written PyTorch loop as possible (tensor slicing, no per-step
allocation beyond the strategy's own), which ``benchmarks/overhead.py`` checks.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.config import PROBE, AverageConfig, OptimConfig
from lifelong.data.augment import Augment
from lifelong.data.lazy import LazyInputs
from lifelong.data.loader import derive_seed
from lifelong.data.streams import Batch, Experience, Stream, TensorSet
from lifelong.errors import ConfigError, TrainingError
from lifelong.metrics.compute import ExperienceCost, MemoryMeter
from lifelong.metrics.objectives import LANGUAGE_MODEL, logits_of, matrix_summary
from lifelong.models.norms import begin_experience
from lifelong.optim.probe import probe
from lifelong.optim.registry import build_optimizer
from lifelong.optim.samplers import batch_losses
from lifelong.optim.schedules import Constant, Position
from lifelong.optim.setup import OptimSetup, epoch_end, resolve
from lifelong.runner.averaging import Averaging
from lifelong.runner.budget import Budget
from lifelong.runner.checkpoint import Checkpointer, CheckpointSettings, Restored, resume_point
from lifelong.runner.distributed import Parallelism, check_distributed, init_from_environment, local_device
from lifelong.runner.evaluation import evaluate
from lifelong.runner.flops import FlopMeter
from lifelong.runner.gradsync import Backward, gradient_sync
from lifelong.runner.observers import Observer, PeriodicEvaluation, ProgressBar, RunContext, TrainState
from lifelong.runner.plan import PlannedExperience, check_lr_scales, check_training_set, plan_records, plan_stream
from lifelong.runner.results import ResultsStore, RunRecord, environment
from lifelong.runner.sharding import check_sharding, shard_model
from lifelong.runner.validation import check_arguments, check_capabilities, check_model
from lifelong.strategies.base import ExperiencePlan, Strategy, StrategyContext
from lifelong.world import World

AUGMENT_TAG = 0xA116
"""Mixed into the run's seed for the augmentation draws, so they do not repeat the epoch orders'."""
BRANCH_TAG = 0xB4A7
"""Mixed into the run's seed (and the experience) for the order of a decayed branch's samples."""


@dataclass
class RunResult:
    """What a run produced: the accuracy matrix, the metrics derived from it and the cost."""

    matrix: np.ndarray
    """R[i, j]: accuracy on experience j's test set after training on experience i."""
    initial: list[float]
    """Accuracy of the untrained model on each experience (the FWT reference)."""
    metrics: dict[str, Any]
    """Summary metrics of the matrix, plus ``effective_lr`` (the learning rate scaled to the global
    batch size) and ``batch_size_changes`` (every change of the adaptive batch size, with its re-scaled
    rate); with an evaluation curve, its stability-gap and (online) anytime metrics."""
    costs: list[ExperienceCost]
    config: dict[str, Any]
    run_id: int | None = None
    lr: float = 0.0
    """Effective learning rate: ``optim.lr`` scaled from ``optim.base_batch_size`` to the global batch."""
    extra: dict[str, Any] = field(default_factory=dict)
    """``plan``: the runner's plan of each experience; with an evaluation curve, ``curve`` (its points)
    and ``stability_gaps`` (one per experience switch)."""

    @classmethod
    def from_record(cls, record: RunRecord) -> RunResult:
        """The result of a finished stored run, as :func:`train` returned it."""
        fields = {f.name for f in dataclasses.fields(ExperienceCost)}
        costs = [ExperienceCost(**{k: v for k, v in e["cost"].items() if k in fields}) for e in record.experiences]
        metrics = record.metrics or {}
        return cls(matrix=np.asarray(record.rows), initial=list(record.initial or []), metrics=metrics, costs=costs,
                   config=record.config, run_id=record.id, lr=float(metrics.get("effective_lr", 0.0)),
                   extra={"curve": record.curve} if record.curve else {})


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"run.device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device={device!r} but no CUDA device is available; use 'cpu' or 'auto'")
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"run.device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    return resolved


def describe(stream: Stream, model: nn.Module, strategy: Strategy, optim: OptimConfig, seed: int) -> dict[str, Any]:
    """A configuration record for runs started from Python objects rather than a config file: the
    stream (its name, and each experience's classes, task and sizes), the model (its class, parameter
    counts and a hash of its module tree: the modules as ``repr`` prints them, with every parameter's
    and buffer's name, shape and type, so that two runs of one architecture can be told from runs of
    another), the strategy with its hyperparameters, the optimization settings and the seed."""
    params = {f.name: getattr(strategy, f.name) for f in dataclasses.fields(strategy) if f.init} \
        if dataclasses.is_dataclass(strategy) else {}
    from lifelong.strategies import STRATEGIES  # the registry imports every strategy; the loop needs none

    name = next((key for key, cls in STRATEGIES.items() if type(strategy) is cls), type(strategy).__name__.lower())
    tensors = [*model.named_parameters(), *model.named_buffers()]
    tree = "\n".join([repr(model), *(f"{key} {tuple(t.shape)} {t.dtype}" for key, t in tensors)])
    architecture = {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                    "tree_sha256": hashlib.sha256(tree.encode()).hexdigest()}
    return {"stream": {"name": stream.name, "n_classes": stream.n_classes, "input_shape": list(stream.input_shape),
                       "experiences": stream.summary()},
            "model": architecture, "strategy": {"name": name, **params},
            "optim": optim.model_dump(), "run": {"seed": seed}}


def train(stream: Stream, model: nn.Module, strategy: Strategy, optim: OptimConfig | None = None, *,
          seed: int = 0, device: str = "auto", store: ResultsStore | None = None,
          config: dict[str, Any] | None = None, progress: bool = False, observers: Sequence[Observer] = (),
          eval_batch_size: int | None = None, eval_every_steps: int | None = None,
          eval_every_samples: int | None = None, checkpoint: CheckpointSettings | None = None,
          resume_run: int | None = None, world: World | None = None, channels_last: bool = False,
          compile: bool | str = False, augment: Augment | None = None, augment_replay: bool = True,
          average: AverageConfig | None = None, parallel: Parallelism | None = None) -> RunResult:
    """Train ``model`` on ``stream`` with ``strategy``; evaluate on every test set after each experience.

    Returns the accuracy matrix, metrics and cost; with a ``store`` the run is recorded as it goes
    (each finished experience is written at once, so a crash keeps it). The same seed gives the same
    matrix bit for bit on CPU.

    ``eval_every_steps`` or ``eval_every_samples`` keeps a continual-evaluation curve: every test set
    is evaluated that often, the stability gap of every experience switch is measured from it (and,
    every few samples, the online anytime accuracy); the curve is checkpointed and stored with the run.

    With ``checkpoint`` the run saves checkpoints (:mod:`lifelong.runner.checkpoint`) and SIGINT or
    SIGTERM stop it cleanly; ``resume_run`` continues that stored run from its newest checkpoint, given
    the same stream, model, strategy, settings and seed, with the same result as a run never stopped.

    ``augment`` (:class:`~lifelong.data.augment.Augment`) normalises every input of the stream once and
    crops and flips every training batch on the training device, and, with ``augment_replay``, every
    batch a strategy replays from its memory, with draws from the run's seed (checkpointed, so a resumed
    run draws the same); memories keep samples un-augmented, evaluation sees them normalised only.

    ``device`` ``auto`` trains on CUDA when present (recorded with the run); ``eval_batch_size`` None
    evaluates 128 samples at a time on a CPU, 1024 on a GPU. ``channels_last`` puts image models and
    batches in the channels-last memory format; ``compile`` compiles the model with ``torch.compile``
    (True: inductor, or a backend name), its warm-up timed apart as ``metrics["compile_seconds"]``.

    Under ``torchrun`` (or with an explicit ``world``) the run is data-parallel
    (:mod:`lifelong.runner.distributed`): each rank trains on its shard of every experience with
    ``optim.batch_size`` samples per step, gradients are averaged, the learning rate is scaled to the
    global batch, evaluation is sharded, and only rank 0 writes the store, checkpoints and progress.

    ``average`` (:class:`~lifelong.config.AverageConfig`) averages or merges the weights whatever the
    strategy (:mod:`lifelong.runner.averaging`): evaluated on an EMA copy, or interpolated or merged after
    each experience; the settings are recorded in the config and ``metrics["average"]``.

    ``parallel`` (:class:`~lifelong.runner.distributed.Parallelism`) says how gradients are averaged
    (bucketed all-reduces overlapping backward by default) or whether the model is sharded with FSDP2.
    """
    optim = optim or OptimConfig()
    setup = resolve(optim)
    budget = Budget(optim.max_steps, optim.max_samples, optim.max_seconds, optim.max_flops)
    dev = resolve_device(device)
    evaluation = PeriodicEvaluation(eval_every_steps, eval_every_samples) \
        if eval_every_steps is not None or eval_every_samples is not None else None
    # torch.optim imports torch._dynamo on an optimizer's first use (seconds, once per process): pay it
    # here so that it is not counted as the first experience's training time
    import torch._dynamo  # noqa: F401
    world = world or init_from_environment(dev)
    averaging = Averaging.build(average, optim)
    parallel = parallel or Parallelism()
    sharded = world.distributed and parallel.shard == "fsdp"
    evaluated = World() if sharded else world  # a sharded model's forward is collective: every rank runs every batch
    if world.distributed:
        dev = local_device(dev)
        check_distributed(optim, resume_run)
        if sharded:
            check_sharding(checkpoint is not None, evaluation is not None,
                           optim.branch_decay is not None or averaging is not None)
        store, progress, checkpoint = (store, progress, checkpoint) if world.is_main else (None, False, None)
    eval_batch_size = eval_batch_size if eval_batch_size is not None else 1024 if dev.type == "cuda" else 128
    check_arguments(model, seed, eval_batch_size, compile)
    torch.manual_seed(seed)
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    check_model(model, stream, dev)
    check_capabilities(strategy, stream, optim, distributed=world.distributed, sharded=sharded,
                       average=averaging.config.method if averaging else "none")
    world.broadcast(model.state_dict().values())
    stream, generator = _augmentation(stream, augment, seed, world)
    replay_augment = (lambda x: augment(x, generator)) if augment and augment.augments and augment_replay else None
    strategy.setup(StrategyContext(stream, seed, world, replay_augment))
    experiences: Sequence[Experience] = (stream.joined(),) if strategy.capabilities.joint else stream.experiences
    # optim.batch_size = "probe": the untrained model's probe on the first experience. It draws from its
    # own seeded generator, so the run's draws are those of a run at the probed batch size, and a resumed
    # run, whose model is rebuilt from the seed before its checkpoint is loaded, probes the same size again
    probed = probe(model, experiences[0].train) if optim.batch_size == PROBE else None
    setup = resolve(optim, probed.batch_size) if probed else setup
    plans = plan_stream(strategy, experiences, setup, budget, world)
    config = config or describe(stream, model, strategy, optim, seed)
    config = {**config, "average": averaging.config.model_dump()} if averaging else config
    if sharded:
        shard_model(model)
    restored = resume_point(store, resume_run, checkpoint, seed) if resume_run is not None else None
    run_id = resume_run if restored else store.start_run(stream.name, str(config.get("strategy", {}).get("name", "")),
                                                         seed, config, {**environment(), "device": str(dev)}) \
        if store else None

    compile_seconds = _compile(model, experiences[0].train, setup.batch_size, dev, compile,
                               stream.objective == LANGUAGE_MODEL)
    test_sets = [exp.test.to(dev) for exp in stream]
    initial = restored.initial if restored else evaluate(model, strategy, test_sets, eval_batch_size, evaluated)
    if store and run_id is not None and not restored:
        store.record_initial(run_id, initial)
    rows: list[list[float]] = restored.rows() if restored else []
    costs: list[ExperienceCost] = restored.costs() if restored else []
    context = RunContext(model, strategy, stream, test_sets, eval_batch_size, initial, rows, costs, world=world,
                         generator=generator)
    observers = [*([averaging] if averaging else []),  # first: the curve and checkpoints see its step
                 *observers, *([evaluation] if evaluation else []), *([ProgressBar(len(stream))] if progress else [])]
    checkpointer = Checkpointer(checkpoint, checkpoint.folder(store.path if store else None, run_id), run_id, seed,
                                observers=list(observers)) if checkpoint else None
    observers += [checkpointer] if checkpointer else []  # last: it saves what the others did at the step
    for observer in observers:
        observer.on_run_start(context)
    state = TrainState(total_steps=sum(plan.steps for plan in plans))
    batch_size_changes: list[dict[str, Any]] = []
    if restored:
        restored.restore(model, strategy, state, observers=observers, generator=generator)
    loop = _Loop(model, strategy, setup, budget, world, seed, dev, state, observers, batch_size_changes,
                 FlopMeter(setup.count_flops, world), context, MemoryMeter(dev), channels_last,
                 augment if augment is not None and augment.augments else None, gradient_sync(world, model, parallel),
                 sharded)
    try:
        for index, experience in enumerate(experiences):
            if restored and index < restored.experience:
                continue
            loop.train_experience(index, experience.to(dev), plans[index],
                                  restored if restored and index == restored.experience else None)
            with loop.decayed_branch(index), context.evaluation_weights():
                row = evaluate(model, strategy, test_sets, eval_batch_size, evaluated)
            rows.append(row)
            costs.append(loop.cost())
            if store and run_id is not None:
                store.record_experience(run_id, index, row, costs[-1].as_dict())
            for observer in observers:
                observer.on_experience_end(state, row)
        result = RunResult(matrix=np.asarray(rows), initial=initial, metrics={}, costs=costs, config=config,
                           run_id=run_id, lr=setup.lr_for(setup.batch_size * world.size),
                           extra={"plan": plan_records(plans)})
        _summarise(result, stream, [len(t) for t in test_sets], batch_size_changes, world, evaluation)
        if probed:
            result.metrics.update(probed_batch_size=probed.batch_size, probed_noise_scale=probed.noise_scale,
                                  probed_max_stable_lr=probed.max_stable_lr)
        if compile:
            result.metrics["compile_seconds"] = compile_seconds
        if averaging:
            result.metrics["average"] = averaging.summary()
        if store and run_id is not None:
            store.finish_run(run_id, rows, result.metrics, result.extra.get("curve"))
        if checkpointer:
            checkpointer.run_finished()
    except KeyboardInterrupt:
        if store and run_id is not None:
            store.set_status(run_id, "interrupted", f"interrupted during experience {state.experience}")
        raise
    except Exception as error:
        if store and run_id is not None:
            store.set_status(run_id, "failed", f"{type(error).__name__}: {error}")
        raise
    finally:
        loop.backward.close()
        if checkpointer:
            checkpointer.close()
    return result


def _augmentation(stream: Stream, augment: Augment | None, seed: int,
                  world: World) -> tuple[Stream, torch.Generator | None]:
    """The stream with its inputs normalised by ``augment`` (once), and the CPU generator of the run's
    crops and flips (seeded from the run's seed and the rank; None without them)."""
    if augment is None:
        return stream, None
    if augment.augments and len(stream.input_shape) != 3:
        raise ConfigError(f"augment: random crops and flips need image inputs (C, H, W), the stream's are "
                          f"{tuple(stream.input_shape)}; leave [augment] off for these data")
    if augment.mean:
        stream = stream.map_inputs(augment.normalize)
    generator = torch.Generator().manual_seed(derive_seed(seed, AUGMENT_TAG, world.rank)) if augment.augments else None
    return stream, generator


def _compile(model: nn.Module, data: TensorSet, batch_size: int, device: torch.device, backend: bool | str,
             language_model: bool = False) -> float:
    """Compile ``model`` in place (``nn.Module.compile``: the module and its state-dict names stay the
    same) and warm it up with a forward and backward pass on a first batch of ``data``, leaving its
    weights, gradients and normalisation statistics as they were. Returns the seconds it took, which
    the training clock leaves out (a later recompilation, for a new batch shape, is counted in it)."""
    if not backend:
        return 0.0
    started = time.perf_counter()
    model.compile(backend="inductor" if backend is True else backend)
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    x = next(data.subset(torch.arange(min(batch_size, len(data)))).batches(batch_size)).x.to(device)
    logits_of(model(x[:, :-1] if language_model else x)).float().sum().backward()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, value in model.named_buffers():
            value.copy_(buffers[name])
    return time.perf_counter() - started


def _summarise(result: RunResult, stream: Stream, test_sizes: list[int], batch_size_changes: list[dict[str, Any]],
               world: World, evaluation: PeriodicEvaluation | None) -> None:
    """The run's metrics from its matrix of accuracies or losses (and its evaluation curve, with its
    points and stability gaps in ``extra``); a language model's also count the tokens trained on and
    replayed (windows of ``L + 1`` tokens: ``L`` predicted each)."""
    result.metrics = {**matrix_summary(stream.objective, result.matrix, result.initial, test_sizes),
                      "effective_lr": result.lr, "batch_size_changes": batch_size_changes, "world_size": world.size,
                      "replayed_samples": sum(cost.replayed for cost in result.costs)}
    if stream.objective == LANGUAGE_MODEL:
        predicted = stream.input_shape[0] - 1
        result.metrics.update(tokens=predicted * sum(cost.samples for cost in result.costs),
                              replayed_tokens=predicted * result.metrics["replayed_samples"])
    if evaluation is not None:
        result.metrics.update(evaluation.summary(test_sizes))
        result.extra.update(curve=[dataclasses.asdict(point) for point in evaluation.points],
                            stability_gaps=evaluation.gap_records())


class _Loop:
    """The training of each experience: its set-up from the plan, its steps and its cost."""

    def __init__(self, model: nn.Module, strategy: Strategy, setup: OptimSetup, budget: Budget, world: World,
                 seed: int, device: torch.device, state: TrainState, observers: list[Observer],
                 batch_size_changes: list[dict[str, Any]], meter: FlopMeter, context: RunContext,
                 memory: MemoryMeter, channels_last: bool = False, augment: Augment | None = None,
                 backward: Backward | None = None, sharded: bool = False) -> None:
        self.model, self.strategy, self.setup, self.budget, self.world = model, strategy, setup, budget, world
        self.seed = seed
        self.device, self.state, self.observers, self.meter, self.context = device, state, observers, meter, context
        self.batch_size_changes = batch_size_changes
        self.memory = memory
        """The run's memory use above what was in use at its start (the model, the test sets and the
        first evaluation are in the baseline)."""
        self.augment = augment
        """Crops and flips of every training batch (with ``context.generator``), or None."""
        self.backward = backward or Backward()
        """Back-propagates a loss and averages the gradients over data-parallel ranks."""
        self.sharded = sharded
        """The model is sharded with FSDP2: its ranks hold different shards, kept consistent by FSDP."""
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        """Of the image batches (4-D inputs) the model is fed."""
        self.optimizer: torch.optim.Optimizer | None = None
        self.flop_costs: dict[int, float] = {}
        """FLOPs of a coming step by its batch size, over all ranks (what a FLOP budget is planned with)."""
        self.scoring_flops = 0.0
        """FLOPs of the last epoch's scoring pass (hard-batch sampler), over all ranks."""
        self.test_flops_per_sample = 0.0
        """FLOPs per differentiated sample of the last norm test, over all ranks."""
        self.seconds = 0.0
        """Training seconds of the experience last closed."""
        self.data: TensorSet | None = None
        """The training set of the current experience (None when its plan does not train)."""
        self.branch = ExperienceCost()
        """What the decayed branch of the experience last closed took (``optim.branch_decay``)."""
        self.buffers = [b for b in model.buffers() if b.is_floating_point()]
        """Normalisation statistics: kept equal over data-parallel ranks after every step, as
        DistributedDataParallel's ``broadcast_buffers`` does."""

    def train_experience(self, index: int, experience: Experience, planned: PlannedExperience,
                         restored: Restored | None) -> None:
        """Set up, train and close one experience (``restored``: a checkpoint to continue it from)."""
        state, strategy, model, config = self.state, self.strategy, self.model, self.setup.config
        declared = planned.strategy
        state.experience, state.epoch, state.experience_step, state.experience_samples = index, 0, 0, 0
        state.epoch_samples, state.epoch_order, state.stop_experience = 0, None, False
        state.experience_flops, state.step_flops, state.next_step_flops = 0.0, 0.0, 0.0
        state.experience_started, state.excluded_seconds = time.perf_counter(), 0.0
        state.batch_size, state.epochs = self.setup.batch_size, planned.epochs
        state.experience_steps = planned.steps
        self.meter.start_experience()
        if restored is None:  # a resumed experience keeps the count its checkpoint holds
            strategy.replayed = 0
        self.flop_costs, self.scoring_flops, self.test_flops_per_sample = {}, 0.0, 0.0
        begin_experience(model, index)
        hook_flops = self.meter.measure(lambda: strategy.before_experience(model, experience))[1]
        data: TensorSet | None = None
        if declared.trains:
            data, flops = self.meter.measure(lambda: strategy.training_set(experience).to(self.device))
            hook_flops += flops
            check_training_set(strategy, index, declared, len(data))
            self._prepare_optimizer(declared, config.reset_per_experience)
        state.experience_flops = self.meter.total(hook_flops)[0]
        if restored is not None:
            restored.resume_experience(model, strategy, state, self.optimizer, config.reset_per_experience
                                       or declared.reset_optimizer, self.context.generator)
        self.context.optimizer = self.optimizer
        for observer in self.observers:
            observer.on_experience_start(state)
        self.data = data
        if data is not None and state.experience_step < state.experience_steps:
            self._steps(data, index)
        for observer in self.observers:
            observer.on_training_end(state)
        hook_flops = self.meter.measure(lambda: strategy.after_experience(model, experience))[1]
        state.experience_flops += self.meter.total(hook_flops)[0]
        if self.world.distributed and not self.sharded:  # whatever the hooks computed, every rank has the same model
            self.world.broadcast(model.state_dict().values())
        self.seconds = state.experience_seconds
        state.seconds_before += self.seconds
        state.experience_started = None

    @contextlib.contextmanager
    def decayed_branch(self, index: int) -> Iterator[None]:
        """With ``optim.branch_decay``, the model decayed on a branch for the block (WSD-S): the model,
        the optimizer and the strategy are saved, the model trains ``branch_decay`` times the experience's
        steps more on its training set (its own seeded order) at a learning rate falling linearly from the
        last one to 0, and all three are restored after the block. Without it, nothing happens."""
        fraction, state, data = self.setup.config.branch_decay, self.state, self.data
        self.branch = ExperienceCost()
        if fraction is None or data is None or self.optimizer is None or state.experience_step == 0:
            yield
            return
        model, optimizer, strategy, world = self.model, self.optimizer, self.strategy, self.world
        augment, draws, replayed = self.augment, self.context.generator, strategy.replayed
        saved = copy.deepcopy((model.state_dict(), optimizer.state_dict(), strategy.state_dict(),
                               None if draws is None else draws.get_state()))
        steps = max(1, round(fraction * state.experience_step))
        started = time.perf_counter()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        generator = torch.Generator().manual_seed(derive_seed(self.seed, BRANCH_TAG, index))
        order = world.shard(torch.randperm(len(data), generator=generator)).to(data.y.device)
        size = min(state.batch_size, len(order))
        autocast = self.setup.autocast(self.device)
        model.train()
        for step in range(steps):
            rows = order[(torch.arange(size, device=order.device) + step * size) % len(order)]  # the order, cycled
            batch = data.subset(rows).batch()
            x = batch.x.to(self.device)
            if augment is not None:
                assert draws is not None
                x = augment(x, draws)
            view = data.x[rows.cpu()] if data.lazy else None  # what a memory that keeps positions stores
            self._forward_backward(Batch(x, batch.y, batch.task, batch.x, view), autocast, params)
            if self.setup.config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, self.setup.config.grad_clip)
            for group in optimizer.param_groups:
                group["lr"] = state.lr * (1 - (step + 1) / steps) * group["lr_scale"]
            optimizer.step()
            if world.distributed and self.buffers:
                world.broadcast(self.buffers)
        self.branch = ExperienceCost(seconds=time.perf_counter() - started, samples=steps * size * world.size,
                                     steps=steps, flops=steps * state.step_flops, replayed=strategy.replayed - replayed)
        try:
            yield
        finally:
            model_state, optimizer_state, strategy_state, draws_state = saved
            model.load_state_dict(model_state)
            optimizer.load_state_dict(optimizer_state)
            strategy.load_state_dict(strategy_state, model)
            if draws is not None:
                draws.set_state(draws_state)

    def cost(self) -> ExperienceCost:
        """What the experience just closed took (with a decayed branch's steps, samples, replayed samples,
        seconds and FLOPs, at the cost of a step of the experience)."""
        state, branch = self.state, self.branch
        return ExperienceCost(seconds=self.seconds + branch.seconds, samples=state.experience_samples + branch.samples,
                              steps=state.experience_step + branch.steps,
                              memory_increase_mb=self.memory.increase_mb(), buffer_size=self.strategy.memory_size(),
                              memory_bytes=self.strategy.memory_bytes(), flops=state.experience_flops + branch.flops,
                              replayed=self.strategy.replayed + branch.replayed)

    def _prepare_optimizer(self, declared: ExperiencePlan, rebuild: bool) -> None:
        """Build the optimizer when there is none, the settings reset it at each experience or the plan
        asks (``rebuild``/``reset_optimizer``), then apply the plan's learning-rate scales to its groups."""
        config = self.setup.config
        if self.optimizer is None or rebuild or declared.reset_optimizer:
            groups = self.strategy.parameter_groups(self.model)
            for group in groups:
                group["default_lr_scale"] = float(group.pop("lr_scale", 1.0))
            self.optimizer = build_optimizer(config.name, groups, lr=self.setup.lr_for(self.setup.batch_size),
                                             momentum=config.momentum, weight_decay=config.weight_decay,
                                             options=config.optimizer_params)
        groups = self.optimizer.param_groups
        check_lr_scales(self.strategy, declared, len(groups))
        scales = declared.lr_scales or tuple(group["default_lr_scale"] for group in groups)
        for group, scale in zip(groups, scales, strict=True):
            group["lr_scale"] = scale

    def _order(self, data: TensorSet, index: int, epoch: int) -> torch.Tensor:
        """This rank's sample order of ``epoch``: the sampler's order of the whole set (rank 0's, so that
        a sampler that scores the data, e.g. hard batches, shards one order), dealt over the ranks."""
        model, strategy, state = self.model, self.strategy, self.state

        def scorer(order: torch.Tensor, size: int) -> torch.Tensor:
            losses, flops = self.meter.measure(lambda: batch_losses(
                model, lambda x, task: strategy.logits(model, x, task), data, order, size))
            self.scoring_flops = self.meter.total(flops)[0]
            state.experience_flops += self.scoring_flops
            return losses

        order = self.setup.sampler.order(len(data), self.seed, index, epoch, state.batch_size, scorer)
        if self.world.distributed:
            self.world.broadcast([order])
        return self.world.shard(order).to(data.x.device)

    def _steps(self, data: TensorSet, index: int) -> None:
        """The experience's optimizer steps, over epochs of the sampler's orders, until its plan's
        horizon (which FLOP and seconds budgets lower as they are spent) or an observer stops it.

        The position inside an epoch is a sample offset (``state.epoch_samples``), not a batch index, so
        that a run resumes mid-epoch even after the adaptive batch size changed."""
        model, strategy, optimizer, setup, state, world = (self.model, self.strategy, self.optimizer, self.setup,
                                                           self.state, self.world)
        assert optimizer is not None, "the optimizer is prepared before the steps"
        model.train()
        groups = optimizer.param_groups
        params = [p for g in groups for p in g["params"]]
        grad_clip, schedule, test = setup.config.grad_clip, setup.schedule, setup.batch_size_test
        autocast = setup.autocast(self.device)
        base_lr = setup.lr_for(state.batch_size * world.size)
        # settings read once: the step below is the hot path, kept to what a hand-written loop does
        counting, measured, distributed = self.meter.enabled, self.budget.measured, world.distributed
        constant = isinstance(schedule, Constant)
        applied_lr = None
        x_all, y_all, task_all = data.x, data.y, data.task
        epoch, resumed_order, first_sample = state.epoch, state.epoch_order, state.epoch_samples
        while epoch < state.epochs:
            state.epoch = epoch
            order = resumed_order.to(data.y.device) if resumed_order is not None else self._order(data, index, epoch)
            state.epoch_order, state.epoch_samples = order, first_sample if resumed_order is not None else 0
            resumed_order = None
            end = epoch_end(len(order), state.epochs, epoch)
            reader = self._reader(data, order, end)
            while state.epoch_samples < end:
                offset = state.epoch_samples
                batch_index = order[offset:min(offset + state.batch_size, end)]
                x = x_all[batch_index] if reader is None else next(reader).to(self.device, non_blocking=True)
                raw = None
                if self.augment is not None:
                    assert self.context.generator is not None
                    raw, x = x, self.augment(x, self.context.generator)
                if x.ndim == 4:
                    x = x.contiguous(memory_format=self.memory_format)
                batch = Batch(x, y_all[batch_index], task_all[batch_index], raw,
                              None if reader is None else x_all[batch_index.cpu()])
                if counting:
                    key = (index, len(batch_index), strategy.memory_size())
                    loss, flops = self.meter.step(key, lambda: self._forward_backward(batch, autocast, params))
                else:
                    loss = self._forward_backward(batch, autocast, params)
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                lr = base_lr if constant else base_lr * schedule(
                    Position(state.step, index, state.experience_step, state.experience_steps, state.total_steps))
                if lr != applied_lr:
                    for group in groups:
                        group["lr"] = lr * group["lr_scale"]
                    applied_lr = lr
                optimizer.step()
                if distributed and self.buffers:
                    world.broadcast(self.buffers)
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingError(f"the loss became {value} at experience {index}, step {state.experience_step} "
                                        f"(epoch {epoch}); lower optim.lr or set optim.grad_clip")
                drawn = len(batch_index)
                n = drawn * world.size
                state.loss, state.lr = value, lr
                state.step += 1
                state.experience_step += 1
                state.samples += n
                state.experience_samples += n
                state.epoch_samples += drawn
                if counting:
                    state.step_flops = self.meter.total(flops)[0]
                    state.experience_flops += state.step_flops
                    self._estimate_coming_steps(len(data))
                if measured:
                    self._replan(len(data))
                if test is not None and state.experience_step % test.every_steps == 0 \
                        and state.experience_step < state.experience_steps \
                        and self.budget.affords(state, self._test_flops(len(batch_index)) + state.next_step_flops) \
                        and self._propose_batch_size(batch, len(data)):
                    base_lr = setup.lr_for(state.batch_size * world.size)
                    end = epoch_end(len(order), state.epochs, epoch)
                    reader = self._reader(data, order, end)
                    applied_lr = None
                for observer in self.observers:
                    observer.on_step(state)
                if state.stop_experience or state.experience_step >= state.experience_steps:
                    return
            epoch += 1

    def _reader(self, data: TensorSet, order: torch.Tensor, end: int) -> Iterator[torch.Tensor] | None:
        """For a lazy dataset, the inputs of the rest of the epoch's order (from the current sample
        offset to ``end``), read through the dataset's training loader in batches of the current size;
        None for a set in memory, which the loop slices."""
        if not data.lazy:
            return None
        assert isinstance(data.x, LazyInputs)
        rest = order[self.state.epoch_samples:end].cpu()
        return data.x[rest].read(self.state.batch_size, channel="train")

    def _estimate_coming_steps(self, n: int) -> None:
        """The FLOPs, over all ranks, of a step of each batch size the coming steps will have (the next
        step's first, then the full batch and each epoch's shorter last one), for the budget."""
        state = self.state
        length = self.setup.epoch_length(n, state.batch_size, self.world.size)
        end = epoch_end(length, state.epochs, state.epoch)
        following = min(state.batch_size, end - state.epoch_samples) if state.epoch_samples < end else \
            min(state.batch_size, epoch_end(length, state.epochs, state.epoch + 1))
        sizes = list(dict.fromkeys([following, state.batch_size, length % state.batch_size or state.batch_size]))
        memory = self.strategy.memory_size()
        estimates = self.meter.total(*(self.meter.estimate((state.experience, size, memory)) for size in sizes))
        state.next_step_flops = estimates[0]
        self.flop_costs = dict(zip(sizes, estimates, strict=True))

    def _test_flops(self, batch: int) -> float:
        """FLOPs of a norm test on a batch of ``batch`` samples, over all ranks: it differentiates
        ``min(samples, batch)`` samples one by one and the whole batch once, each sample at the cost per
        sample of the last test (before any, of the last step, which is no cheaper)."""
        state, test = self.state, self.setup.batch_size_test
        assert test is not None
        per_sample = self.test_flops_per_sample or state.step_flops / max(state.batch_size, 1)
        return per_sample * (min(test.samples, batch) + batch)

    def _replan(self, n: int) -> None:
        """Re-plan the rest of the experience from the current position, batch size and what is left of
        every budget (FLOPs costed by the estimates of the steps to come, each with its share of the norm
        tests, and each epoch begun with its scoring pass); the stream horizon follows."""
        state, costs, test = self.state, self.flop_costs, self.setup.batch_size_test
        largest = max(costs.values(), default=0.0)
        tests = self._test_flops(state.batch_size) / test.every_steps \
            if test is not None and state.batch_size < test.max_batch_size else 0.0
        limits = self.budget.limits(self.world.size, state, lambda size: costs.get(size, largest) + tests,
                                    self.scoring_flops)
        length = self.setup.epoch_length(n, state.batch_size, self.world.size)
        current = len(state.epoch_order) if state.epoch_order is not None else None
        steps, _ = self.setup.draws(length, state.batch_size, state.epochs, state.epoch, state.epoch_samples, limits,
                                    current)
        state.set_experience_steps(state.experience_step + steps)

    def _forward_backward(self, batch: Batch, autocast: Any, params: list[torch.nn.Parameter]) -> torch.Tensor:
        """The strategy's loss of ``batch`` (under ``autocast``, None for full precision), back-propagated
        into fresh gradients (averaged over data-parallel ranks), then the strategy's gradient hook."""
        assert self.optimizer is not None
        if autocast is None:
            loss = self.strategy.observe(self.model, batch)
        else:
            with autocast:
                loss = self.strategy.observe(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss, params)
        self.strategy.after_backward(self.model)
        return loss

    def _propose_batch_size(self, batch: Batch, n: int) -> bool:
        """Run the norm test on the batch just trained on; on a change, move the experience to the new
        batch size and re-plan it (with ``keep_updates`` the epochs left lengthen by the growth, Hoffer et
        al. 2017, so that the updates left stay the same). Its FLOPs are charged to the experience.
        Returns whether the batch size changed."""
        setup, state, strategy = self.setup, self.state, self.strategy
        test = setup.batch_size_test
        assert test is not None

        def sample_loss(out: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(strategy.mask_logits(out, task), y)

        proposed, flops = self.meter.measure(lambda: test.propose(self.model, sample_loss, batch.x, batch.y,
                                                                  batch.task, state.batch_size))
        tested = self.meter.total(flops)[0]
        self.test_flops_per_sample = tested / (min(test.samples, len(batch.y)) + len(batch.y))
        state.experience_flops += tested
        if proposed == state.batch_size:
            if self.budget.measured:
                self._replan(n)
            return False
        if setup.config.keep_updates:
            order_length = len(state.epoch_order) if state.epoch_order is not None else n
            done = state.epoch + state.epoch_samples / order_length
            state.epochs = done + (state.epochs - done) * proposed / state.batch_size
        state.batch_size = proposed
        if self.meter.enabled:
            self._estimate_coming_steps(n)
        self._replan(n)
        self.batch_size_changes.append({"experience": state.experience, "step": state.step, "batch_size": proposed,
                                        "lr": setup.lr_for(proposed * self.world.size), "epochs": state.epochs})
        return True
