"""Validated settings: the run configuration as pydantic models.

Everything a run needs is one :class:`RunConfig`: which dataset, scenario, model and strategy (each a
``name`` plus that component's own keyword arguments), how to optimize, and how to run. It is
validated once, at the edge (the CLI or the Python API), and stored whole with every run. Errors name
the field, the bad value and what is allowed. :func:`load_config` reads one the way every command does:
the defaults, then a TOML file, then ``--set SECTION.FIELD=VALUE`` overrides.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import tomllib
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lifelong.errors import ConfigError, MissingFileError

PROBE = "probe"
"""The ``optim.batch_size`` that asks the runner to measure the batch size (:mod:`lifelong.optim.probe`)."""
NAIVE = "naive"
"""The ``optim.stream_rate`` that paces a real-time stream by the cost of a naive step of each batch."""


class OptimConfig(BaseModel):
    """How the runner optimizes: optimizer, learning rate, batch size, epochs and schedule, and the
    compute-aware options (LR scaling with batch size, adaptive batch size, data selection, budgets,
    precision). Names and their own parameters are checked by ``lifelong.optim.setup.resolve``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = "sgd"
    """``sgd``, ``adam``, ``adamw``, ``lars``, ``lamb`` or ``adagradnorm``."""
    lr: float = Field(0.03, gt=0)
    """Base learning rate, tuned at ``base_batch_size``."""
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    optimizer_params: dict[str, Any] = Field(default_factory=dict)
    """The optimizer's own settings, e.g. ``{trust_coefficient = 0.02}`` for LARS, ``{betas = [0.9, 0.99]}``."""
    batch_size: int | Literal["probe"] = 16
    """Samples per step, or ``"probe"``: the batch size the gradient noise scale recommends (McCandlish
    et al. 2018), measured by the runner on the first experience at initialization, before training
    (:func:`lifelong.optim.probe.probe`), and recorded with the run as ``metrics.probed_batch_size``."""
    base_batch_size: int | None = Field(None, ge=1)
    """The batch size ``lr`` was tuned at; default: ``batch_size`` (no scaling)."""
    lr_scaling: str = "auto"
    """``none``, ``linear``, ``sqrt`` or ``auto`` (linear for SGD and LARS, sqrt for the Adam family and LAMB)."""
    epochs: int = Field(5, ge=1)
    keep_updates: bool = False
    """Lengthen training by the batch size's growth over ``base_batch_size`` (static or adaptive) so that
    the number of updates stays ("Train longer, generalize better", Hoffer et al. 2017)."""
    schedule: str = "constant"
    schedule_params: dict[str, Any] = Field(default_factory=dict)
    """The schedule's settings, e.g. ``{warmup_steps = 50, decay_fraction = 0.2}`` for ``wsd``."""
    batch_size_test: str = "none"
    """``none`` or ``norm``: grow the batch when the norm test fails (Byrd et al. 2012)."""
    batch_size_test_params: dict[str, Any] = Field(default_factory=dict)
    """``theta``, ``growth``, ``max_batch_size``, ``every_steps``, ``samples``."""
    sampler: str = "random"
    """``random`` (every sample each epoch), ``rs2`` (a fresh random subset) or ``hard_batch``."""
    sampler_fraction: float = Field(1.0, gt=0, le=1)
    """Fraction of each epoch kept by ``rs2`` and ``hard_batch``."""
    max_steps: int | list[int] | None = None
    """Per-experience budget in optimizer steps: one number for every experience, or a list with one per
    experience (experiences of different sizes get budgets of their own, as the budget protocol of
    :mod:`lifelong.protocol.budget` gives them)."""
    max_samples: int | list[int] | None = None
    """Per-experience budget in training samples drawn (a number, or one per experience)."""
    max_seconds: float | list[float] | None = None
    """Per-experience budget in training wall time (a number, or one per experience)."""
    max_tokens: int | list[int] | None = None
    """A language model's per-experience budget in predicted tokens (a number, or one per experience), the
    unit continual pre-training is budgeted in (litgpt's and torchtitan's token budgets): each window of
    ``L + 1`` tokens predicts ``L``, so an experience draws at most ``max_tokens // L`` windows (with
    ``max_samples`` too, the smaller cap holds). Refused on a classification stream."""
    max_flops: float | list[float] | None = None
    """Per-experience budget in floating-point operations (forward and backward), a number or one per
    experience; implies ``count_flops``."""
    count_flops: bool = False
    """Count FLOPs on the first step of each experience and store them with the run's cost. Off by
    default: ``FlopCounterMode`` imports ``torch._dynamo`` (seconds, once) and slows its step ~30x."""
    precision: str = "fp32"
    """``fp32`` or ``bf16`` (autocast of the strategy's forward pass and loss)."""
    grad_clip: float | None = Field(None, gt=0)
    branch_decay: float | None = Field(None, gt=0, le=1)
    """Branch-off cooldown (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
    Training Durations"; :mod:`lifelong.optim.cooldown`): at the end of each experience a copy of the model
    trains this fraction of the experience's steps more, on the experience's data, at a learning rate
    falling linearly from the last one to 0, and is the one evaluated; the run itself continues from the
    undecayed weights at its own schedule (e.g. constant), its random states untouched. The branch's
    steps and samples are added to the experience's cost (on top of any budget, which bounds the main
    run). Not WSD-S, which continues from the decayed weights: that is ``wsd_s_decay``."""
    wsd_s_decay: float | None = Field(None, gt=0, le=1)
    """WSD-S (Wen et al. 2024, "Understanding Warmup-Stable-Decay Learning Rates: A River Valley Loss
    Landscape Perspective"; :class:`lifelong.optim.cooldown.WSDS`): the last this fraction of each
    experience's own steps decay the schedule's rate linearly to 0; the decayed weights are evaluated and
    the next experience continues from them at the full rate. No step is added (unlike ``branch_decay``,
    which it excludes)."""
    agvm: bool = False
    """AGVM (Xue et al. 2022, "Large-batch Optimization for Dense Visual Predictions"; :mod:`lifelong.optim.agvm`):
    each top-level module of the model (a classifier's ``backbone`` and ``head``) steps at the rate rescaled by
    ``sqrt`` of the reference module's gradient variance over its own, smoothed, whatever the optimizer; the
    factors are kept in the optimizer's state. Refused with ``run.shard='fsdp'``."""
    agvm_params: dict[str, Any] = Field(default_factory=dict)
    """AGVM's settings: ``alpha``, ``every_steps``, ``start_step``, ``min_ratio``, ``max_ratio``, ``reference``,
    ``eps`` (:class:`lifelong.optim.agvm.AGVM`)."""
    forecast_stop: float | None = Field(None, gt=0)
    """Learning-curve extrapolation (:mod:`lifelong.runner.forecast`): end an experience early once a power
    law ``a + b t^-c`` fitted to its running training loss forecasts less than this gain in loss over the
    rest of its planned steps; each experience's fit and stop are stored in ``metrics.forecast``. None:
    every experience trains its planned steps."""
    forecast_every: int = Field(25, ge=1)
    """Steps per point of the loss curve ``forecast_stop`` fits (their mean loss); the first forecast comes
    after 4 points."""
    reset_per_experience: bool = True
    """Build a fresh optimizer (no momentum or Adam moments carried over) at each experience."""
    stream_rate: float | Literal["naive"] | None = None
    """A real-time stream, which does not wait for the learner (Ghunaim et al., CVPR 2023, "Real-Time
    Evaluation in Online Continual Learning: A New Hope"; :mod:`lifelong.runner.realtime`): the cost, in
    ``stream_cost`` units, that passes between two batches of ``batch_size`` samples (a smaller batch comes
    after its share), or ``"naive"``: the cost of a naive step of each batch (forward and backward of the
    objective's loss of the batch alone, through the parameters trainable when the run began). A method whose
    step costs k times that trains on every k-th batch: the batches that arrive while it is busy (with a step or
    an experience's hooks) pass untrained, counted as ``skipped`` in the experience's cost, and every batch is
    first predicted, before any training on it (the online accuracy, ``online_metric``). None: the stream
    waits, every batch is trained on."""
    stream_cost: Literal["flops", "seconds"] = "flops"
    """What paces a real-time stream: counted FLOPs (over all ranks; deterministic, so a run skips the same
    batches on any machine) or measured wall time of the steps and hooks (one process only)."""

    @field_validator("stream_rate", mode="before")
    @classmethod
    def _stream_rate_or_naive(cls, value: Any) -> Any:
        if value is None or value == NAIVE or (isinstance(value, int | float) and not isinstance(value, bool)
                                               and math.isfinite(value) and value > 0):
            return value
        raise ValueError(f"must be a positive cost per batch, {NAIVE!r} (a naive step's) or None (no real-time "
                         "stream)")

    @field_validator("max_steps", "max_samples", "max_tokens", "max_seconds", "max_flops", mode="before")
    @classmethod
    def _per_experience_budget(cls, value: Any, info: pydantic.ValidationInfo) -> Any:
        """A budget is one number for every experience or a non-empty list of them, one per experience
        (checked against the run's experiences when it is planned): counts of steps and samples whole
        and >= 1, seconds and FLOPs > 0."""
        whole = info.field_name in ("max_steps", "max_samples", "max_tokens")
        kind = "an integer >= 1" if whole else "a number > 0"
        if value is None:
            return value
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) and
                                 (v >= 1 and float(v).is_integer() if whole else v > 0) for v in values):
            raise ValueError(f"must be {kind}, or a list of them with one per experience")
        return value

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size_or_probe(cls, value: Any) -> Any:
        if value == PROBE or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"must be an integer >= 1, or {PROBE!r} to measure it on the first experience")


Tracker = Literal["csv", "tensorboard", "mlflow", "wandb"]
"""The experiment trackers ``run.log`` can name (:mod:`lifelong.runner.tracking`)."""


class RunSettings(BaseModel):
    """Where and how a run executes and is recorded."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; the device used is
    recorded with the run."""
    db: str = "lifelong-runs.db"
    progress: bool = True
    eval_batch_size: int | None = Field(None, ge=1)
    """Samples per evaluation batch; None chooses by device: 128 on a CPU, where a batch that fits the
    caches evaluates fastest per sample, 1024 on a GPU."""
    channels_last: bool = False
    """Train and evaluate image models in the channels-last memory format (faster convolutions on
    recent CPUs and on GPUs with tensor cores)."""
    compile: bool | str = False
    """Compile the model with ``torch.compile`` (true: the default ``inductor`` backend; or a backend
    name); the compilation's warm-up is timed apart from training (``metrics.compile_seconds``)."""
    checkpoint: bool = True
    """Save checkpoints so that an interrupted run can continue with ``lifelong run --resume ID``."""
    checkpoint_dir: str | None = None
    """Folder of the checkpoints (one ``run-<id>`` folder per run); default: ``<db name>-checkpoints``
    next to the results database."""
    checkpoint_every_steps: int = Field(200, ge=0)
    """Also checkpoint every this many optimizer steps inside an experience (0: only between experiences)."""
    keep_checkpoints: int = Field(2, ge=1)
    """How many of a run's newest checkpoints to keep while it runs."""
    keep_finished_checkpoints: bool = False
    """Keep a run's checkpoints once it has finished (by default they are deleted then: a finished run
    cannot be resumed, and its result is in the results store)."""
    save_pretrained: str | None = None
    """A folder the run's trained model is written to as Hugging Face ``save_pretrained`` does, once the
    last experience is evaluated and before the run is stored as finished (``model.name = "hf"`` only;
    :func:`lifelong.models.hf.save_pretrained`): ``model.path`` reads it back. The model's own weights
    (the evaluated ones: an EMA's with ``[average] method = "ema"``; LoRA merged into them), not what a
    strategy keeps beside it (class means, projections, prompts). ``lifelong pretrain`` writes it too."""
    eval_every_steps: int | None = Field(None, ge=1)
    """Evaluate every test set every this many optimizer steps (a continual-evaluation curve, from
    which the stability gap is measured); None evaluates only at the end of each experience."""
    eval_every_samples: int | None = Field(None, ge=1)
    """Evaluate every test set every this many training samples: the online protocol's anytime accuracy
    (with ``optim.epochs = 1`` and a small batch); adds ``a_auc`` and ``last_accuracy`` to the metrics
    (:mod:`lifelong.runner.online`). Exclusive with ``eval_every_steps``."""
    log: list[Tracker] = Field(default_factory=list)
    """Experiment tracking (:mod:`lifelong.runner.tracking`), e.g. ``["csv", "tensorboard"]``: ``csv``
    needs nothing; ``tensorboard``, ``mlflow`` and ``wandb`` (Weights & Biases in offline mode: nothing is
    sent) need ``pip install 'lifelong[tensorboard]'``, ``'lifelong[mlflow]'`` and ``'lifelong[wandb]'``."""
    log_dir: str | None = None
    """Folder of the tracking logs; default: ``<db name>-logs`` next to the results database."""
    log_every_steps: int = Field(10, ge=1)
    """Log the loss, the learning rate and the batch size every this many optimizer steps."""
    overlap_grad_sync: bool = True
    """Data-parallel runs: average gradients with bucketed asynchronous all-reduces started during
    backward, as each bucket's gradients are ready (false: one all-reduce after backward; the same
    result). See ``lifelong.runner.gradsync``."""
    bucket_mb: float = Field(25.0, gt=0)
    """Megabytes of gradients per bucket of the overlapped all-reduce."""
    peak_flops: Annotated[float, Field(gt=0)] | Literal["measure"] | None = None
    """Peak FLOP/s of one device, for the model FLOPs utilization (MFU) shown in the progress bar, the
    costs and ``lifelong show`` (:mod:`lifelong.metrics.utilization`): a datasheet's figure for the run's
    dtype (``lifelong.metrics.utilization.PUBLISHED_PEAKS``: 989e12 for an H100 SXM in bf16, 312e12 for an
    A100), or ``"measure"``: a matrix product timed on the run's device before training (on a CPU, where no
    datasheet figure fits every machine, the peak its threads really give). Unset: MFU is n/a, never guessed."""
    shard: Literal["none", "fsdp"] = "none"
    """Data-parallel runs: ``fsdp`` shards the model's blocks over the ranks with FSDP2 (a model too
    large for one device; strategies that change only the data or the loss, no checkpoints yet)."""


class Component(BaseModel):
    """A named component with its keyword arguments, e.g. ``{name = "er", buffer_size = 200}``."""

    model_config = ConfigDict(extra="allow")

    name: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class AugmentConfig(BaseModel):
    """The ``[augment]`` table: image augmentation of the training batches (random crop with zero
    padding, horizontal flip) and per-channel normalisation, built by
    ``lifelong.data.augment.Augment.from_config``, which checks the values and the preset's name when
    the run is built, as component names are checked. The default augments nothing."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    preset: str = "none"
    """A dataset's standard settings: ``cifar10``, ``cifar100``, ``fashion_mnist``, ``mnist``, or ``none``."""
    crop_padding: int | None = None
    """Pixels of zero padding around each image before a crop of its size at a random offset (0: no
    crop); None: the preset's."""
    flip: bool | None = None
    """Mirror each image left to right with probability 1/2; None: the preset's."""
    mean: list[float] | None = None
    """Per-channel mean subtracted from every input, in training and evaluation alike (empty: no
    normalisation); None: the preset's."""
    std: list[float] | None = None
    """Per-channel standard deviation the centred inputs are divided by; None: the preset's."""
    replay: bool = True
    """Augment the samples a strategy replays from its memory too, as Mammoth and PyCIL do."""


class AverageConfig(BaseModel):
    """The ``[average]`` table: weight averaging or merging of the model, whatever the strategy
    (:class:`lifelong.runner.averaging.Averaging`). The default averages nothing."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    method: Literal["none", "ema", "interpolate", "merge"] = "none"
    """``ema``: evaluate an exponential moving average of the weights, updated after every optimizer step;
    ``interpolate``: after each experience continue from ``(1 - coefficient) * before + coefficient * after``;
    ``merge``: after each experience merge its update orthogonally to the earlier ones ("Merging Models on
    the Fly", Tang et al. 2025)."""
    decay: float = Field(0.999, gt=0, lt=1)
    """``ema``: the weight the average keeps at each step."""
    bias_correction: bool = True
    """``ema``: correct the average as Adam does its moments, so it starts at the first step's weights
    instead of leaning on the initial ones for about ``1 / (1 - decay)`` steps."""
    coefficient: float = Field(0.5, gt=0, le=1)
    """``interpolate``: the weight of the weights after the experience (1: no interpolation)."""
    alpha: float = Field(0.5, gt=0, le=1)
    """``merge``: the share of the merged update's singular values whose leading directions the new
    update is kept out of (the paper's alpha, 0.5 in its experiments)."""


class RunConfig(BaseModel):
    """A whole run: the default is class-incremental digits, 5 experiences of 2 classes, ER with a
    memory of 200, an MLP trained with SGD."""

    model_config = ConfigDict(extra="forbid")

    dataset: Component = Component(name="digits")
    scenario: Component = Component(name="class_incremental", n_experiences=5)
    model: Component = Component(name="mlp")
    strategy: Component = Component(name="er", buffer_size=200)
    augment: AugmentConfig = AugmentConfig()
    average: AverageConfig = AverageConfig()
    optim: OptimConfig = OptimConfig()
    run: RunSettings = RunSettings()


def describe_validation_error(error: pydantic.ValidationError, prefix: str = "",
                              model: type[BaseModel] | None = None) -> str:
    """One line naming the first bad field, its value and what was expected; for an unknown field of
    ``model`` (the validated class), the fields its section allows."""
    first = error.errors()[0]
    field = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    if first["type"] == "extra_forbidden":
        allowed = _fields_at(model, first["loc"]) if model is not None else None
        kind = "section" if model is RunConfig and len(first["loc"]) == 1 else "field"
        return f"{field}: unknown {kind}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    return f"{field}: {first['msg']} (got {first.get('input')!r})"


def _fields_at(model: type[BaseModel], location: Sequence[int | str]) -> list[str] | None:
    """The fields of the (nested) model that holds ``location``'s last part, or None when a part on the
    way is not a model of its own (a component's free parameters, a dict)."""
    for part in location[:-1]:
        info = model.model_fields.get(str(part))
        annotation = info.annotation if info is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return list(model.model_fields)


def validate_config(data: Mapping[str, Any]) -> RunConfig:
    """A :class:`RunConfig` from nested dicts (a parsed TOML file), or a :class:`ConfigError`."""
    try:
        return RunConfig.model_validate(data)
    except pydantic.ValidationError as error:
        raise ConfigError(describe_validation_error(error, model=RunConfig)) from None


def parse_value(text: str) -> Any:
    """A ``--set`` value read as a TOML value (numbers, booleans, lists, quoted strings), else as a string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``section.field=value`` to nested config dicts."""
    key, sep, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {assignment!r}: expected SECTION.FIELD=VALUE, e.g. --set strategy.name=ewc")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = parse_value(text.strip())


def load_config(path: str | None, overrides: Sequence[str]) -> RunConfig:
    """The run configuration: defaults, then the TOML file, then ``--set`` overrides.

    A component (dataset, scenario, model, strategy) whose name the file or an override changes starts
    from its new name alone: the parameters of the component it replaces, the defaults' or the file's,
    are dropped (``--set strategy.name=ewc`` on a file with ``buffer_size`` for ``er``), while
    overrides of the new component's own parameters apply wherever they stand on the command line.
    Numbers must be finite (``inf`` and ``nan`` are refused here, before anything is built).
    """
    data = _read_toml(path) if path is not None else {}
    merged = RunConfig().model_dump()
    for section, value in data.items():
        if isinstance(value, dict) and _renames(merged, section, value.get("name")):
            merged[section] = {"name": value["name"]}
    merged = _merge(merged, data)
    names: dict[str, Any] = {}
    for assignment in overrides:
        key, _, text = assignment.partition("=")
        parts = key.strip().split(".")
        if len(parts) == 2 and parts[1] == "name":
            names[parts[0]] = parse_value(text.strip())
    for section, name in names.items():
        if _renames(merged, section, name):
            merged[section] = {"name": name}
    for assignment in overrides:
        apply_override(merged, assignment)
    _check_finite(merged, "")
    return validate_config(merged)


def _read_toml(path: str) -> dict[str, Any]:
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"--config: {path!r} is a directory; give the path of a TOML file")
    if not file.is_file():
        raise MissingFileError(f"--config: no such file {path!r}")
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"--config {path!r}: not valid TOML: {error}") from None


def _renames(merged: dict[str, Any], section: str, name: Any) -> bool:
    """Whether ``name`` replaces the component of ``section`` by another one."""
    info = RunConfig.model_fields.get(section)
    current = merged.get(section)
    return info is not None and info.annotation is Component and name is not None \
        and isinstance(current, dict) and current.get("name") != name


def _check_finite(value: Any, where: str) -> None:
    """Refuse ``inf`` and ``nan`` anywhere in the nested settings, naming the field."""
    if isinstance(value, dict):
        for key, inner in value.items():
            _check_finite(inner, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _check_finite(inner, f"{where}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value} is not a finite number; give a finite value")


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parameters(factory: Callable[..., Any], extras: bool = False) -> dict[str, inspect.Parameter]:
    """The keyword arguments a component accepts (dataclass init fields or function parameters),
    with annotations resolved to types; ``extras`` keeps their declared bounds (:mod:`lifelong.bounds`),
    which validation leaves to the component itself, so that both paths give the same one-line error."""
    if dataclasses.is_dataclass(factory):
        hints = typing.get_type_hints(factory, include_extras=extras)
        result = {}
        for f in dataclasses.fields(factory):
            if not f.init:
                continue
            default: Any = inspect.Parameter.empty
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            result[f.name] = inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                               annotation=hints.get(f.name, Any))
        return result
    return dict(_keyword_parameters(factory))


@functools.lru_cache(maxsize=None)
def _keyword_parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """A function's keyword parameters, read once per function (a run builds its optimizer each experience)."""
    signature = inspect.signature(factory, eval_str=True)
    return {name: p for name, p in signature.parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def build(section: str, registry: Mapping[str, Callable[..., Any]], component: Component,
          *args: Any, skip: tuple[str, ...] = ()) -> Any:
    """Call ``registry[component.name](*args, **component.params)`` with its arguments validated.

    ``skip`` names leading parameters filled by ``args`` (e.g. the dataset of a scenario builder).
    Unknown names, unknown fields and values of the wrong type raise :class:`ConfigError` naming
    ``section.field``.
    """
    if component.name not in registry:
        raise ConfigError(f"{section}.name: unknown {section} {component.name!r}; "
                          f"allowed: {', '.join(sorted(registry))}")
    factory = registry[component.name]
    allowed = {k: v for k, v in parameters(factory).items() if k not in skip}
    for key in component.params:
        if key not in allowed:
            raise ConfigError(f"{section}.{key}: unknown field for {section} {component.name!r}; "
                              f"allowed: {', '.join(sorted(allowed)) or 'none'}")
    if not component.params and all(p.default is not inspect.Parameter.empty for p in allowed.values()):
        return factory(*args)  # nothing to validate; building a validator costs ~0.5 ms, per optimizer built
    fields = {k: (p.annotation if p.annotation is not inspect.Parameter.empty else Any,
                  p.default if p.default is not inspect.Parameter.empty else ...)
              for k, p in allowed.items()}
    model = pydantic.create_model(f"{section}_{component.name}", __config__=ConfigDict(extra="forbid"),
                                  **fields)  # type: ignore[call-overload]
    try:
        values = model.model_validate(component.params)
    except pydantic.ValidationError as error:
        raise ConfigError(describe_validation_error(error, section)) from None
    return factory(*args, **{k: getattr(values, k) for k in component.params})


def resolved(section: str, registry: Mapping[str, Callable[..., Any]], component: Component,
             skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The component's full settings: its name, every default, and the given values."""
    factory = registry[component.name]
    defaults = {k: p.default for k, p in parameters(factory).items()
                if k not in skip and p.default is not inspect.Parameter.empty}
    return {"name": component.name, **_plain(defaults), **component.params}


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
