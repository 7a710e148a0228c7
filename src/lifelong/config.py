"""Validated settings: the run configuration as pydantic models.

Everything a run needs is one :class:`RunConfig`: which dataset, scenario, model and strategy (each a
``name`` plus that component's own keyword arguments), how to optimize, and how to run. It is
validated once, at the edge (the CLI or the Python API), and stored whole with every run. Errors name
the field, the bad value and what is allowed. :func:`load_config` reads one the way every command does:
the defaults, then a TOML file, then ``--set SECTION.FIELD=VALUE`` overrides.
"""

from __future__ import annotations

import dataclasses
import inspect
import tomllib
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from lifelong.errors import ConfigError, MissingFileError


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
    batch_size: int = Field(16, ge=1)
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
    max_steps: int | None = Field(None, ge=1)
    """Per-experience budget in optimizer steps."""
    max_samples: int | None = Field(None, ge=1)
    """Per-experience budget in training samples drawn."""
    max_seconds: float | None = Field(None, gt=0)
    """Per-experience budget in training wall time."""
    max_flops: float | None = Field(None, gt=0)
    """Per-experience budget in floating-point operations (forward and backward); implies ``count_flops``."""
    count_flops: bool = False
    """Count FLOPs on the first step of each experience and store them with the run's cost. Off by
    default: ``FlopCounterMode`` imports ``torch._dynamo`` (seconds, once) and slows its step ~30x."""
    precision: str = "fp32"
    """``fp32`` or ``bf16`` (autocast of the strategy's forward pass and loss)."""
    grad_clip: float | None = Field(None, gt=0)
    reset_per_experience: bool = True
    """Build a fresh optimizer (no momentum or Adam moments carried over) at each experience."""


Tracker = Literal["csv", "tensorboard", "mlflow"]
"""The experiment trackers ``run.log`` can name (:mod:`lifelong.runner.tracking`)."""


class RunSettings(BaseModel):
    """Where and how a run executes and is recorded."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seed: int = 0
    device: str = "cpu"
    db: str = "lifelong-runs.db"
    progress: bool = True
    eval_batch_size: int = Field(1024, ge=1)
    checkpoint: bool = True
    """Save checkpoints so that an interrupted run can continue with ``lifelong run --resume ID``."""
    checkpoint_dir: str | None = None
    """Folder of the checkpoints (one ``run-<id>`` folder per run); default: ``<db name>-checkpoints``
    next to the results database."""
    checkpoint_every_steps: int = Field(200, ge=0)
    """Also checkpoint every this many optimizer steps inside an experience (0: only between experiences)."""
    keep_checkpoints: int = Field(2, ge=1)
    """How many of a run's newest checkpoints to keep."""
    eval_every_steps: int | None = Field(None, ge=1)
    """Evaluate every test set every this many optimizer steps (a continual-evaluation curve, from
    which the stability gap is measured); None evaluates only at the end of each experience."""
    eval_every_samples: int | None = Field(None, ge=1)
    """Evaluate every test set every this many training samples: the online protocol's anytime accuracy
    (with ``optim.epochs = 1`` and a small batch); adds ``a_auc`` and ``last_accuracy`` to the metrics
    (:mod:`lifelong.runner.online`). Exclusive with ``eval_every_steps``."""
    log: list[Tracker] = Field(default_factory=list)
    """Experiment tracking (:mod:`lifelong.runner.tracking`), e.g. ``["csv", "tensorboard"]``: ``csv``
    needs nothing; ``tensorboard`` and ``mlflow`` need ``pip install 'lifelong[tensorboard]'`` and
    ``'lifelong[mlflow]'``."""
    log_dir: str | None = None
    """Folder of the tracking logs; default: ``<db name>-logs`` next to the results database."""
    log_every_steps: int = Field(10, ge=1)
    """Log the loss, the learning rate and the batch size every this many optimizer steps."""


class Component(BaseModel):
    """A named component with its keyword arguments, e.g. ``{name = "er", buffer_size = 200}``."""

    model_config = ConfigDict(extra="allow")

    name: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RunConfig(BaseModel):
    """A whole run: the default is class-incremental digits, 5 experiences of 2 classes, ER with a
    memory of 200, an MLP trained with SGD."""

    model_config = ConfigDict(extra="forbid")

    dataset: Component = Component(name="digits")
    scenario: Component = Component(name="class_incremental", n_experiences=5)
    model: Component = Component(name="mlp")
    strategy: Component = Component(name="er", buffer_size=200)
    optim: OptimConfig = OptimConfig()
    run: RunSettings = RunSettings()


def describe_validation_error(error: pydantic.ValidationError, prefix: str = "") -> str:
    """One line naming the first bad field, its value and what was expected."""
    first = error.errors()[0]
    field = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    if first["type"] == "extra_forbidden":
        return f"{field}: unknown field"
    return f"{field}: {first['msg']} (got {first.get('input')!r})"


def validate_config(data: Mapping[str, Any]) -> RunConfig:
    """A :class:`RunConfig` from nested dicts (a parsed TOML file), or a :class:`ConfigError`."""
    try:
        return RunConfig.model_validate(data)
    except pydantic.ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None


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
    """The run configuration: defaults, then the TOML file, then ``--set`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise MissingFileError(f"--config: no such file {path!r}")
        try:
            data = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"--config {path!r}: not valid TOML: {error}") from None
    defaults = RunConfig().model_dump()
    for section, value in data.items():
        if isinstance(value, dict) and isinstance(defaults.get(section), dict) and "name" in defaults[section] \
                and "name" in value and value["name"] != defaults[section]["name"]:
            defaults[section] = {"name": value["name"]}  # a new component: drop the default's parameters
    merged = _merge(defaults, data)
    for assignment in overrides:
        if assignment.split("=", 1)[0].strip().endswith(".name"):
            section = assignment.split(".", 1)[0].strip()
            if isinstance(merged.get(section), dict) and "name" in merged[section]:
                merged[section] = {k: v for k, v in merged[section].items() if k in data.get(section, {})}
        apply_override(merged, assignment)
    return validate_config(merged)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword arguments a component accepts (dataclass init fields or function parameters),
    with annotations resolved to types."""
    if dataclasses.is_dataclass(factory):
        hints = typing.get_type_hints(factory)
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
