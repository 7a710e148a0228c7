"""The runner: trains a model on a stream through a strategy and measures what it kept.

The runner owns every step of optimization (backward, clipping, learning rate, optimizer step) so
that strategies only say how a batch's loss is computed. :func:`train` is :func:`prepare` (everything
before the first step, returning a :class:`~lifelong.runner.run.Run`) then
:meth:`~lifelong.runner.run.Run.execute`. A run has three parts:

1. **Plan** (:mod:`lifelong.runner.plan`). Before anything trains, the strategy declares for every
   experience what it will do (:meth:`~lifelong.strategies.base.Strategy.plan`: the size of the set it
   trains on, 0 for none; a learning-rate multiplier per parameter group; whether the optimizer state
   restarts). The runner derives from those declarations alone the planned steps and samples of each
   experience and of the stream (the two horizons a schedule can take), the sampler's epoch lengths and
   the step and sample budgets, so a schedule anneals where training really ends. FLOP and seconds
   budgets are re-planned after each step from the measured cost (:class:`~lifelong.runner.budget.Replanner`).
2. **Loop** (:class:`~lifelong.runner.experience.ExperienceLoop`). For each experience: the model's
   modules that define ``begin_experience(index)`` are told its index
   (:func:`~lifelong.models.norms.begin_experience`, e.g. AdaB2N's task count); ``before_experience``;
   the training set, checked against the plan; the optimizer, rebuilt when the settings or the plan ask,
   and the plan's learning-rate scales applied to its parameter groups at every experience either way;
   then steps until the plan's horizon (:class:`~lifelong.runner.step.OptimizerStep`): ``observe`` →
   backward (gradients averaged over data-parallel ranks) → ``after_backward`` → clipping → learning
   rate (base rate at the global batch size × schedule × group scale) → optimizer step; then the
   weight averaging, the observers and the checkpoint. ``after_experience`` closes the experience.
3. **Evaluate**: every test set after each experience (on its branch-off's decayed weights with
   ``optim.branch_decay``, :mod:`lifelong.runner.branch`) gives one row of the accuracy matrix, stored
   at once with the experience's cost; metrics (and the evaluation curve, when one is kept) are stored
   with the run's status in one transaction at the end.

The loop is kept as close to a hand-written PyTorch loop as possible (tensor slicing, no per-step
allocation beyond the strategy's own), which ``benchmarks/overhead.py`` checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from lifelong.config import PROBE, AverageConfig, OptimConfig
from lifelong.data.augment import Augment
from lifelong.data.loader import derive_seed
from lifelong.data.streams import Experience, Stream, TensorSet
from lifelong.errors import ConfigError
from lifelong.metrics.compute import MemoryMeter
from lifelong.metrics.objectives import LANGUAGE_MODEL, logits_of
from lifelong.metrics.utilization import lm_flops_per_token, measured_peak
from lifelong.optim.probe import probe
from lifelong.optim.registry import stable_curvature
from lifelong.optim.setup import OptimSetup, resolve
from lifelong.runner.averaging import Averaging
from lifelong.runner.branch import BranchOff
from lifelong.runner.budget import Budget, Replanner, sample_cap
from lifelong.runner.checkpoint import (
    Checkpointer,
    CheckpointSettings,
    random_states,
    random_states_kept,
    resume_point,
)
from lifelong.runner.distributed import Parallelism, check_distributed, init_from_environment, local_device
from lifelong.runner.evaluation import evaluate
from lifelong.runner.experience import ExperienceLoop
from lifelong.runner.flops import FlopMeter
from lifelong.runner.gradsync import gradient_sync
from lifelong.runner.forecast import ForecastStop
from lifelong.runner.observers import Observer, PeriodicEvaluation, ProgressBar, RunContext, TrainState
from lifelong.runner.plan import plan_stream
from lifelong.runner.results import ResultsStore, environment
from lifelong.runner.run import Run, RunResult
from lifelong.runner.sharding import check_sharding, shard_model
from lifelong.runner.validation import check_arguments, check_capabilities, check_first_experience, check_model
from lifelong.strategies.base import Strategy, StrategyContext
from lifelong.world import World

__all__ = ["AUGMENT_TAG", "RunOptions", "RunResult", "describe", "prepare", "resolve_device", "train"]

AUGMENT_TAG = 0xA116
"""Mixed into the run's seed for the augmentation draws, so they do not repeat the epoch orders'."""


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How a run runs, beside what it trains (the stream, model, strategy and optimization settings)."""

    seed: int = 0
    """Every draw of the run derives from it (torch's global generator too, which dropout draws from,
    kept apart from the caller's); the same seed gives the same matrix bit for bit on CPU."""
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present), recorded with the run."""
    store: ResultsStore | None = None
    """Where the run is recorded as it goes (each finished experience is written at once, so a crash
    keeps it)."""
    config: dict[str, Any] | None = None
    """The configuration stored with the run; None records :func:`describe`'s."""
    progress: bool = False
    """Show a progress display (:class:`~lifelong.runner.observers.ProgressBar`)."""
    observers: Sequence[Observer] = ()
    eval_batch_size: int | None = None
    """None evaluates 128 samples at a time on a CPU, 1024 on a GPU."""
    eval_every_steps: int | None = None
    """Keep a continual-evaluation curve (:class:`~lifelong.runner.observers.PeriodicEvaluation`): every
    test set evaluated that often, the stability gap of every experience switch measured from it; the
    curve is checkpointed and stored with the run."""
    eval_every_samples: int | None = None
    """The curve every that many samples instead (and the online anytime accuracy)."""
    checkpoint: CheckpointSettings | None = None
    """Save checkpoints (:mod:`lifelong.runner.checkpoint`); SIGINT or SIGTERM then stop the run cleanly."""
    resume_run: int | None = None
    """Continue that stored run from its newest checkpoint, given the same stream, model, strategy,
    settings and seed, with the same result as a run never stopped."""
    world: World | None = None
    """The data-parallel ranks (:mod:`lifelong.runner.distributed`); None: from ``torchrun``'s
    environment, or one process. Each rank trains on its shard of every experience with
    ``optim.batch_size`` samples per step, gradients are averaged, the learning rate is scaled to the
    global batch, evaluation is sharded, and only rank 0 writes the store, checkpoints and progress."""
    channels_last: bool = False
    """Image models and batches in the channels-last memory format."""
    compile: bool | str = False
    """Compile the model with ``torch.compile`` (True: inductor, or a backend name), its warm-up timed
    apart as ``metrics["compile_seconds"]``."""
    augment: Augment | None = None
    """Normalise every input of the stream once and crop and flip every training batch on the training
    device (:class:`~lifelong.data.augment.Augment`), with draws from the run's seed (checkpointed);
    memories keep samples un-augmented, evaluation sees them normalised only."""
    augment_replay: bool = True
    """Augment every batch a strategy replays from its memory too."""
    average: AverageConfig | None = None
    """Average or merge the weights whatever the strategy (:mod:`lifelong.runner.averaging`): evaluate an
    EMA copy, or interpolate or merge after each experience; recorded in the config and
    ``metrics["average"]``."""
    parallel: Parallelism | None = None
    """How gradients are averaged (bucketed all-reduces overlapping backward by default) or whether the
    model is sharded with FSDP2 (:class:`~lifelong.runner.distributed.Parallelism`)."""
    peak_flops: float | Literal["measure"] | None = None
    """Peak FLOP/s of one device, for the model FLOPs utilization (MFU) of the costs and the progress bar
    (:mod:`lifelong.metrics.utilization`): a number (a datasheet's, e.g. 989e12 for an H100 SXM in bf16),
    ``"measure"`` (a timed matrix product on the run's device, in the model's dtype, before training), or
    None: MFU is n/a."""
    export: Callable[[nn.Module], None] | None = None
    """Writes the trained model somewhere (``run.save_pretrained``): called once, by rank 0, after the last
    experience is evaluated, with the model holding the weights evaluations use, before the run is stored
    as finished (a failure to write fails the run)."""


def train(stream: Stream, model: nn.Module, strategy: Strategy, optim: OptimConfig | None = None,
          **options: Any) -> RunResult:
    """Train ``model`` on ``stream`` with ``strategy``; evaluate on every test set after each experience.

    ``options`` are :class:`RunOptions`' fields (``seed``, ``device``, ``store``, ``observers``,
    ``checkpoint``, ...). Returns the accuracy matrix, metrics and cost: :func:`prepare`, then
    :meth:`~lifelong.runner.run.Run.execute`."""
    return prepare(stream, model, strategy, optim, RunOptions(**options)).execute()


@dataclass(frozen=True)
class _Placement:
    """Where a run trains: its device and ranks, and what only the main rank keeps."""

    device: torch.device
    world: World
    sharded: bool
    evaluated: World
    """The world evaluation is sharded over: one process for a sharded model, whose forward is
    collective (every rank runs every batch)."""
    eval_batch_size: int
    store: ResultsStore | None
    progress: bool
    checkpoint: CheckpointSettings | None


def prepare(stream: Stream, model: nn.Module, strategy: Strategy, optim: OptimConfig | None = None,
            options: RunOptions | None = None) -> Run:
    """Everything before the first step: the settings checked, the model placed and checked against the
    stream, the strategy set up and its first experience's preparation rehearsed on copies
    (:func:`~lifelong.runner.validation.check_first_experience`), the plan of every experience, the
    untrained model evaluated, then the stored run started (or the checkpoint it resumes from loaded) and
    the observers started. Whatever refuses the run stops it before the store records it."""
    optim, options = optim or OptimConfig(), options or RunOptions()
    setup = resolve(optim)
    evaluation = PeriodicEvaluation(options.eval_every_steps, options.eval_every_samples) \
        if options.eval_every_steps is not None or options.eval_every_samples is not None else None
    Averaging.check(options.average, optim)
    place = _placement(options, optim, evaluation is not None)
    check_arguments(model, options.seed, place.eval_batch_size, options.compile)
    cuda = place.device.type == "cuda"
    with random_states_kept(cuda):
        # the run's draws from torch's global generator (dropout) start from its seed, apart from the caller's
        (torch.manual_seed if cuda else torch.default_generator.manual_seed)(options.seed)
        stream, generator, context = _place_model(stream, model, strategy, setup, options, place)
        experiences: Sequence[Experience] = (stream.joined(),) if strategy.capabilities.joint else stream.experiences
        check_first_experience(model, strategy, context, experiences, cuda)
        # optim.batch_size = "probe": the untrained model's probe on the first experience. It draws from its
        # own seeded generator, so the run's draws are those of a run at the probed batch size, and a resumed
        # run, whose model is rebuilt from the seed before its checkpoint is loaded, probes the same size again
        probed = probe(model, experiences[0].train) if optim.batch_size == PROBE else None
        setup = resolve(optim, probed.batch_size) if probed else setup
        budget = Budget(optim.max_steps, sample_cap(optim.max_samples, optim.max_tokens, stream), optim.max_seconds,
                        optim.max_flops)
        plans = plan_stream(strategy, experiences, setup, budget, place.world)
        config = options.config or describe(stream, model, strategy, optim, options.seed)
        average = options.average if options.average is not None and options.average.method != "none" else None
        config = {**config, "average": average.model_dump()} if average else config
        if place.sharded:
            shard_model(model)
        store = place.store
        restored = resume_point(store, options.resume_run, place.checkpoint, options.seed) \
            if options.resume_run is not None else None
        compile_seconds = _compile(model, experiences[0].train, setup.batch_size, place.device, options.compile,
                                   stream.objective == LANGUAGE_MODEL)
        test_sets = [exp.test.to(place.device) for exp in stream]
        initial = restored.initial if restored else evaluate(model, strategy, test_sets, place.eval_batch_size,
                                                             place.evaluated)
        # stored only now: whatever refuses the run above (a setting, the model, a test set that cannot be
        # read) leaves nothing in the store
        run_id = options.resume_run if restored else store.start_run(
            stream.name, str(config.get("strategy", {}).get("name", "")), options.seed, config,
            {**environment(), "device": str(place.device)}) if store else None
        if store and run_id is not None and not restored:
            store.record_initial(run_id, initial)
        forecast = ForecastStop(optim.forecast_stop, optim.forecast_every) if optim.forecast_stop else None
        # the runner's own stateful observers first: a checkpoint keeps observers' states by position, so a run
        # resumed with other observers of the caller's (or none) still gets its curve and forecast back
        language_model = stream.objective == LANGUAGE_MODEL
        flops_per_token = lm_flops_per_token(model) if language_model else None
        peak = peak_flops(options.peak_flops, model, place.device)
        window = stream.input_shape[0] - 1 if language_model else 0
        observers = [*([evaluation] if evaluation else []), *([forecast] if forecast else []), *options.observers,
                     *([ProgressBar(len(stream), tokens_per_sample=window,
                                    flops_per_sample=window * flops_per_token if flops_per_token else None,
                                    peak_flops=place.world.size * peak if peak else None)]
                       if place.progress else [])]
        averaging = Averaging(average, model) if average else None
        loop = _loop(model, strategy, setup, budget, options, place, generator, observers, averaging,
                     sum(plan.steps for plan in plans), flops_per_token, peak)
        run = Run(stream=stream, experiences=experiences, plans=plans, loop=loop, test_sets=test_sets,
                  eval_batch_size=place.eval_batch_size, evaluated=place.evaluated, config=config, random={},
                  initial=initial, rows=restored.rows() if restored else [], costs=restored.costs() if restored else [],
                  observers=observers, evaluation=evaluation, forecast=forecast, averaging=averaging,
                  branch=BranchOff(optim.branch_decay, options.seed, place.device, loop.augmentation)
                  if optim.branch_decay is not None else None,
                  store=store, run_id=run_id, restored=restored, generator=generator, probed=probed,
                  compile_seconds=compile_seconds if options.compile else None, export=options.export)
        try:
            _start(run, place.checkpoint, options.seed)
        except (KeyboardInterrupt, Exception) as error:
            run.stopped(error)
            raise
        run.random = random_states(cuda)
    return run


def peak_flops(setting: float | Literal["measure"] | None, model: nn.Module, device: torch.device) -> float | None:
    """One device's peak FLOP/s as ``run.peak_flops`` gives it: a number as it is, ``"measure"`` timed on
    ``device`` in the dtype of the model's parameters (:func:`~lifelong.metrics.utilization.measured_peak`),
    None unknown."""
    if setting != "measure":
        return setting
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return measured_peak(device, dtype)


def _placement(options: RunOptions, optim: OptimConfig, curve: bool) -> _Placement:
    """The device and ranks of a run, checked against its settings; what only the main rank keeps."""
    device = resolve_device(options.device)
    # torch.optim imports torch._dynamo on an optimizer's first use (seconds, once per process): pay it
    # here so that it is not counted as the first experience's training time
    import torch._dynamo  # noqa: F401
    world = options.world or init_from_environment(device)
    parallel = options.parallel or Parallelism()
    if parallel.shard == "fsdp" and not world.distributed:
        raise ConfigError("run.shard='fsdp' shards the model over the ranks of a torchrun job, and this run is one "
                          "process; start it with torchrun (e.g. torchrun --nproc_per_node=2 -m lifelong run ...) or "
                          "set run.shard='none'")
    sharded = world.distributed and parallel.shard == "fsdp"
    store, progress, checkpoint = options.store, options.progress, options.checkpoint
    if world.distributed:
        device = local_device(device)
        check_distributed(optim, options.resume_run)
        averaged = options.average is not None and options.average.method != "none"
        if sharded:
            check_sharding(checkpoint is not None, curve, optim.branch_decay is not None or averaged, optim.agvm)
        store, progress, checkpoint = (store, progress, checkpoint) if world.is_main else (None, False, None)
    eval_batch_size = options.eval_batch_size if options.eval_batch_size is not None \
        else 1024 if device.type == "cuda" else 128
    return _Placement(device, world, sharded, World() if sharded else world, eval_batch_size, store, progress,
                      checkpoint)


def _place_model(stream: Stream, model: nn.Module, strategy: Strategy, setup: OptimSetup, options: RunOptions,
                 place: _Placement) -> tuple[Stream, torch.Generator | None, StrategyContext]:
    """The model on the run's device (in the memory format asked for), checked against the stream and
    the strategy's capabilities, the same on every rank; the stream normalised by the augmentation, and
    the strategy set up with the run's context. The stream, the augmentation's generator and the context."""
    optim = setup.config
    model.to(place.device)
    if options.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
    check_model(model, stream, place.device)
    if setup.agvm is not None:
        setup.agvm.check(model)
    average = options.average.method if options.average is not None else "none"
    check_capabilities(strategy, stream, optim, distributed=place.world.distributed, sharded=place.sharded,
                       average=average)
    place.world.broadcast(model.state_dict().values())
    stream, generator = _augmentation(stream, options.augment, options.seed, place.world)
    augment = options.augment
    replay = (lambda x: augment(x, generator)) if augment is not None and generator is not None \
        and options.augment_replay else None
    lr = setup.largest_lr(place.world.size)
    curvature = None if lr is None else \
        stable_curvature(optim.name, lr, optim.momentum, optim.weight_decay, optim.optimizer_params)
    context = StrategyContext(stream, options.seed, place.world, replay, curvature)
    strategy.setup(context)
    return stream, generator, context


def _loop(model: nn.Module, strategy: Strategy, setup: OptimSetup, budget: Budget, options: RunOptions,
          place: _Placement, generator: torch.Generator | None, observers: Sequence[Observer],
          averaging: Averaging | None, total_steps: int, flops_per_token: float | None,
          peak: float | None) -> ExperienceLoop:
    """The loop that trains the run's experiences, with its meters and its gradient synchronisation;
    ``flops_per_token`` and ``peak`` (one device's) give its MFU."""
    world = place.world
    meter = FlopMeter(setup.count_flops, world)
    augment = options.augment
    return ExperienceLoop(flops_per_token=flops_per_token, peak_flops=world.size * (peak or 0.0),model=model, strategy=strategy, setup=setup, world=world, seed=options.seed,
                          device=place.device, state=TrainState(total_steps=total_steps), meter=meter,
                          observers=observers, averaging=averaging,
                          planner=Replanner(budget, setup, meter, world, strategy.memory_size),
                          memory=MemoryMeter(place.device),
                          backward=gradient_sync(world, model, options.parallel or Parallelism()),
                          augmentation=(augment, generator) if augment is not None and generator is not None else None,
                          memory_format=torch.channels_last if options.channels_last else torch.contiguous_format,
                          sharded=place.sharded)


def _start(run: Run, settings: CheckpointSettings | None, seed: int) -> None:
    """Start the run's observers and checkpoints; resuming, load the checkpoint."""
    loop = run.loop
    if settings is not None:
        folder = settings.folder(run.store.path if run.store else None, run.run_id)
        loop.checkpointer = Checkpointer(settings, folder, run.run_id, seed, run.contents)
    context = RunContext(loop.model, loop.strategy, run.stream, run.test_sets, run.evaluate, run.initial, run.rows,
                         run.costs, loop.world, run.evaluation_weights)
    for observer in run.observers:
        observer.on_run_start(context)
    if loop.checkpointer is not None:
        loop.checkpointer.open()
    if run.restored is not None:
        run.restored.restore(loop.model, loop.strategy, loop.state, parts=run.parts, generator=run.generator)


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
    params: dict[str, Any] = {f.name: getattr(strategy, f.name) for f in dataclasses.fields(strategy) if f.init} \
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



def _augmentation(stream: Stream, augment: Augment | None, seed: int,
                  world: World) -> tuple[Stream, torch.Generator | None]:
    """The stream with its inputs normalised by ``augment`` (once), and the CPU generator of the run's
    crops and flips (seeded from the run's seed and the rank; None without them)."""
    if augment is None:
        return stream, None
    if augment.augments and len(stream.input_shape) != 3:
        raise ConfigError(f"augment: random crops and flips need image inputs (C, H, W), the stream's are "
                          f"{tuple(stream.input_shape)}; leave [augment] off for these data")
    if augment.crop_padding and augment.crop_padding >= min(stream.input_shape[1:]):  # some crops miss the image
        height, width = stream.input_shape[1:]
        raise ConfigError(f"augment.crop_padding={augment.crop_padding} on {height}x{width} images: some random crops "
                          f"would hold no pixel of the image; use a padding smaller than the images' side, at most "
                          f"{min(height, width) - 1} (the presets pad 32x32 CIFAR images by 4, 28x28 MNIST by 2)")
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
    torch.autograd.backward(logits_of(model(x[:, :-1] if language_model else x)).float().sum())
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, value in model.named_buffers():
            value.copy_(buffers[name])
    return time.perf_counter() - started
