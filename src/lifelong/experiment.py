"""From a validated :class:`RunConfig` to a finished run: build the stream, model and strategy by
name, train, store. The CLI is a thin layer over :func:`run_config`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lifelong.config import Component, RunConfig, build, parameters, resolved, validate_config
from lifelong.data.augment import Augment, resolved_config
from lifelong.data.catalog import DATASETS
from lifelong.data.datasets import Dataset
from lifelong.data.scenarios import SCENARIOS
from lifelong.data.streams import Stream
from lifelong.data.text import TextCorpus
from lifelong.errors import ConfigError, ResumeError
from lifelong.metrics.objectives import LANGUAGE_MODEL
from lifelong.models.freeze import check_mode, freeze
from lifelong.models.gpt import mask_documents
from lifelong.models.hf import check_save_pretrained, model_folder, save_pretrained
from lifelong.models.nets import MODELS
from lifelong.models.weights import load_weights
from lifelong.optim.setup import resolve
from lifelong.runner.checkpoint import CheckpointSettings
from lifelong.runner.distributed import Parallelism
from lifelong.runner.loop import RunOptions, RunResult, resolve_device
from lifelong.runner.loop import prepare as prepare_training
from lifelong.runner.observers import Observer
from lifelong.runner.results import ResultsStore
from lifelong.runner.run import Run
from lifelong.runner.tracking import trackers
from lifelong.runner.validation import check_freeze, check_model
from lifelong.strategies import STRATEGIES, Strategy
from lifelong.strategies.parts.tuning import merged_weights

Parts = tuple[Stream, nn.Module, Strategy]
"""What a run trains: its stream, model and strategy (:func:`prepare`)."""

MODEL_SKIP = ("input_shape", "n_classes", "seed", "vocab_size")
"""Model-builder arguments a configuration does not set: the stream gives the shape, classes and (to a
builder that takes one, a language model) the vocabulary size, and the run seed the initial weights
(:func:`build_model` seeds before building)."""

MODEL_OWN = ("weights", "freeze")
"""Model settings of every model, applied to the built network rather than passed to its builder:
``model.weights`` (a local weights file, loaded strictly) and ``model.freeze`` (``none``, ``backbone``,
``norm-only``)."""


def _scenario_component(config: RunConfig) -> Any:
    """The scenario section, with its seed defaulting to the run's seed."""
    params = config.scenario.params
    if "seed" not in params:
        params["seed"] = config.run.seed
    return type(config.scenario)(name=config.scenario.name, **params)


def _dataset_component(config: RunConfig) -> Component:
    """The dataset section; a text dataset (``text``, or ``hf`` with a ``text_column``) read by a Hugging
    Face language model (``model.name = "hf"``) takes the tokenizer saved beside the model (``model.path``),
    and another tokenizer is refused: the model's embeddings are its tokenizer's ids."""
    params = config.dataset.params
    texts = config.dataset.name == "text" or (config.dataset.name == "hf" and bool(params.get("text_column")))
    if config.model.name == "hf" and texts:
        path = str(config.model.params.get("path", ""))
        model_folder(path)
        given = params.setdefault("tokenizer", path)
        if not isinstance(given, str) or Path(given).absolute() != Path(path).absolute():
            raise ConfigError(f"dataset.tokenizer: model.name='hf' reads text with the tokenizer saved beside the model "
                              f"(model.path {path!r}), got {given!r}; drop dataset.tokenizer")
    return Component(name=config.dataset.name, **params)


def build_stream(config: RunConfig, dataset: Dataset | None = None) -> Stream:
    """The dataset (the configured one unless ``dataset`` is given, e.g. a validation split for
    tuning), split into a stream by the configured scenario."""
    dataset = dataset or build("dataset", DATASETS, _dataset_component(config))
    if isinstance(dataset, TextCorpus) and config.scenario.name != "text_domains":
        raise ConfigError(f"scenario.name: the text dataset is cut into token windows by scenario.name='text_domains', "
                          f"not {config.scenario.name!r}")
    return build("scenario", SCENARIOS, _scenario_component(config), dataset, skip=("dataset",))


def model_settings(config: RunConfig) -> tuple[str, str]:
    """The checked ``model.weights`` (a path, or empty) and ``model.freeze`` of :data:`MODEL_OWN`."""
    weights, mode = config.model.params.get("weights", ""), config.model.params.get("freeze", "none")
    if not isinstance(weights, str):
        raise ConfigError(f"model.weights must be the path of a weights file (a string), got {weights!r}")
    return weights, check_mode(mode)


def build_model(config: RunConfig, stream: Stream) -> nn.Module:
    """The configured model for the stream's input shape and classes (and vocabulary size, where the
    builder takes one), initialised from the run seed, then loaded from ``model.weights``
    (:mod:`lifelong.models.weights`) and frozen as ``model.freeze`` says (:mod:`lifelong.models.freeze`)."""
    weights, mode = model_settings(config)
    builder = Component(name=config.model.name,
                        **{k: v for k, v in config.model.params.items() if k not in MODEL_OWN})
    torch.manual_seed(config.run.seed)
    factory = MODELS.get(config.model.name)
    language_models = [name for name, builder in MODELS.items() if "vocab_size" in parameters(builder)]
    if factory is not None and stream.objective == LANGUAGE_MODEL and config.model.name not in language_models:
        raise ConfigError(f"model.name={config.model.name!r} is not a language model, and a text stream's samples are "
                          f"windows of token ids; use model.name={language_models[0]!r}")
    vocabulary = (stream.vocab_size,) if config.model.name in language_models else ()
    model = build("model", MODELS, builder, stream.input_shape, stream.n_classes, *vocabulary, skip=MODEL_SKIP)
    mask_documents(model, stream.document_end)  # dataset.pack_across_documents = false
    if weights:
        load_weights(model, weights)
    freeze(model, mode)
    return model


def build_strategy(config: RunConfig) -> Strategy:
    """The configured strategy, refused with ``model.freeze`` where freezing contradicts it: methods that
    train tensors of their own (per-task copies, generated weights) whatever ``requires_grad`` says, and
    frozen-feature methods told to adapt their backbone. ``model.weights`` is the way to start from a
    pretrained backbone; ``strategy.backbone_path`` (the prompt and frozen-feature methods) is its alias from
    before ``model.weights`` existed, kept for the Python API: both at once are refused."""
    strategy: Strategy = build("strategy", STRATEGIES, config.strategy)
    weights, mode = model_settings(config)
    check_freeze(strategy, config.strategy.name, mode)
    if weights and config.strategy.params.get("backbone_path"):
        raise ConfigError(f"model.weights and strategy.backbone_path both name a pretrained backbone; keep "
                          f"model.weights={weights!r}, which every strategy takes, and drop strategy.backbone_path")
    return strategy


PATH_FIELDS = {"dataset": ("path", "factory", "tokenizer", "save_tokenizer", "domains"), "model": ("weights", "path"),
               "strategy": ("backbone_path",), "run": ("db", "checkpoint_dir", "log_dir", "save_pretrained")}
"""The settings that name files or folders, stored as absolute paths (:func:`absolute_paths`)."""


def resolve_config(config: RunConfig) -> dict[str, Any]:
    """The full configuration with every default filled in, as stored with the run: its paths absolute
    (:func:`absolute_paths`), so that ``lifelong run --resume`` finds the same files from any folder."""
    return absolute_paths({
        "dataset": resolved("dataset", DATASETS, _dataset_component(config)),
        "scenario": resolved("scenario", SCENARIOS, _scenario_component(config), skip=("dataset",)),
        "model": resolved("model", MODELS, config.model, skip=MODEL_SKIP),
        "strategy": resolved("strategy", STRATEGIES, config.strategy),
        "augment": resolved_config(config.augment).model_dump(),
        "average": config.average.model_dump(),
        "optim": config.optim.model_dump(),
        "run": config.run.model_dump(),
    })


def absolute_paths(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the relative paths of :data:`PATH_FIELDS` made absolute from the current folder: a
    file or folder (``dataset.path``, ``model.weights``, ``run.db`` ...), the file of ``dataset.factory =
    "file.py:function"`` (not a module name), a tokenizer's ``.json`` file or folder (not ``byte`` or
    ``bpe``), and every text domain that is not a preset (nested lists of files too)."""
    from lifelong.data.corpora import TEXT_DOMAINS

    def absolute(field: str, value: Any) -> Any:
        if isinstance(value, list):
            return [absolute(field, item) for item in value]
        if not isinstance(value, str) or not value:
            return value
        if field == "factory":
            module, colon, function = value.partition(":")
            return str(Path(module).absolute()) + colon + function if module.endswith(".py") else value
        if (field == "tokenizer" and value in ("byte", "bpe")) or (field == "domains" and value in TEXT_DOMAINS):
            return value
        return str(Path(value).absolute())

    return {section: {k: absolute(k, v) if k in PATH_FIELDS.get(section, ()) else v for k, v in values.items()}
            if isinstance(values, dict) else values for section, values in config.items()}


def prepare(config: RunConfig) -> Parts:
    """Build (and so validate) the stream, model and strategy a config names, and check every setting
    that training would refuse (optimizer, schedule, device, the model against the stream), so that a
    mistake stops before anything is printed, stored or trained."""
    check_settings(config)
    stream = build_stream(config)
    strategy = build_strategy(config)
    model = build_model(config, stream)
    check_model(model, stream, torch.device("cpu"))
    return stream, model, strategy


def check_settings(config: RunConfig) -> None:
    """The checks of the optimization and run settings that :func:`~lifelong.runner.loop.train` makes,
    made from the configuration alone."""
    resolve(config.optim)
    resolve_device(config.run.device)
    if config.run.eval_every_steps and config.run.eval_every_samples:
        raise ConfigError("run.eval_every_samples: set either run.eval_every_steps or run.eval_every_samples, "
                          f"not both (got {config.run.eval_every_steps} and {config.run.eval_every_samples})")


def check_save_settings(config: RunConfig, model: nn.Module) -> None:
    """Refuse, before anything trains, a ``run.save_pretrained`` that could not be written: a model other
    than a Hugging Face one, a folder that cannot hold it, adapters (which no weight can hold; LoRA merges
    into the weights), a model sharded over the ranks."""
    folder = config.run.save_pretrained
    if not folder:
        return
    check_save_pretrained(model, folder)
    module = resolved("strategy", STRATEGIES, config.strategy).get("module")
    if module == "adapter":
        raise ConfigError(f"run.save_pretrained writes the model's weights, and strategy {config.strategy.name!r} tunes "
                          "bottleneck adapters, which no weight can hold; set strategy.module='lora' (merged into the "
                          "weights) or drop run.save_pretrained")
    if config.run.shard != "none":
        raise ConfigError("run.save_pretrained writes the whole model from rank 0, and run.shard='fsdp' splits it over "
                          "the ranks; drop one of them")


def refuse_save_pretrained(config: RunConfig, protocol: str) -> None:
    """Refuse ``run.save_pretrained`` in a protocol that trains several runs, all of which would write the folder."""
    if config.run.save_pretrained:
        raise ConfigError(f"run.save_pretrained writes one run's model, and {protocol} trains several runs; drop it "
                          "(and save the run you keep with lifelong run)")


def pretrained_export(config: RunConfig) -> Callable[[nn.Module], None] | None:
    """What writes the trained model to ``run.save_pretrained`` (LoRA merged into the weights it tunes), or
    None without it."""
    folder = config.run.save_pretrained
    if not folder:
        return None

    def export(model: nn.Module) -> None:
        save_pretrained(model, folder, merged_weights(model))

    return export


def checkpoint_settings(config: RunConfig, store: ResultsStore | None) -> CheckpointSettings | None:
    """The run's checkpoint settings; None when ``run.checkpoint`` is off, or when there is neither a
    results store nor a ``run.checkpoint_dir`` (a run that is not stored cannot be resumed by id)."""
    run = config.run
    if not run.checkpoint or (store is None and not run.checkpoint_dir):
        return None
    directory = Path(run.checkpoint_dir) if run.checkpoint_dir else None
    return CheckpointSettings(directory, every_steps=run.checkpoint_every_steps, keep=run.keep_checkpoints,
                              keep_finished=run.keep_finished_checkpoints)


def tracking_observers(config: RunConfig) -> list[Observer]:
    """The experiment trackers ``run.log`` names, logging under ``run.log_dir`` (default: ``<db name>-logs``
    next to the results database) as ``<strategy>-seed<seed>-<date>-<time>``."""
    run = config.run
    if not run.log:
        return []
    database = Path(run.db)
    folder = Path(run.log_dir) if run.log_dir else database.parent / f"{database.stem}-logs"
    name = f"{config.strategy.name}-seed{run.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    return list(trackers(run.log, folder, name, run.log_every_steps))


def resume(store: ResultsStore, run_id: int, progress: bool = False) -> RunResult:
    """Continue stored run ``run_id`` from its newest checkpoint, rebuilding the stream, model and
    strategy from the configuration stored with it."""
    stored = store.get(run_id).config
    if not set(RunConfig.model_fields) <= set(stored):  # describe() records a stream and a model class instead
        raise ResumeError(f"run {run_id} was started from Python objects, not a configuration; resume it with "
                          f"train(..., store=..., resume_run={run_id})")
    extra = sorted(set(stored) - set(RunConfig.model_fields))
    if extra:  # e.g. a tuning trial, trained on a validation split its configuration alone does not rebuild
        raise ResumeError(f"run {run_id} was started by a protocol (stored sections {extra}), not by "
                          "`lifelong run`; rerun that command (e.g. `lifelong tune` with the same --study) to "
                          "continue it")
    try:
        config = validate_config(stored)
    except ConfigError as error:
        raise ResumeError(f"run {run_id}'s stored configuration is no longer valid ({error}); start the run "
                          "again with a corrected configuration") from None
    return run_config(config, store, progress, resume_run=run_id)


def prepare_run(config: RunConfig, store: ResultsStore | None = None, progress: bool = False,
                prepared: Parts | None = None,
                extra_config: dict[str, Any] | None = None, resume_run: int | None = None) -> Run:
    """Build everything the config names (unless ``prepared``) and prepare the run
    (:func:`lifelong.runner.loop.prepare`): every setting checked, the first experience's preparation
    rehearsed, the untrained model evaluated and, with a ``store``, the run recorded. Nothing has trained
    yet: :meth:`~lifelong.runner.run.Run.execute` trains it. The arguments are :func:`run_config`'s."""
    if prepared is None:
        prepared = prepare(config)
    else:
        check_settings(config)
    stream, model, strategy = prepared
    check_save_settings(config, model)
    options = RunOptions(seed=config.run.seed, device=config.run.device, store=store,
                         config={**resolve_config(config), **(extra_config or {})}, progress=progress,
                         eval_batch_size=config.run.eval_batch_size, eval_every_steps=config.run.eval_every_steps,
                         eval_every_samples=config.run.eval_every_samples,
                         checkpoint=checkpoint_settings(config, store), resume_run=resume_run,
                         channels_last=config.run.channels_last, compile=config.run.compile,
                         augment=Augment.from_config(config.augment), augment_replay=config.augment.replay,
                         observers=tracking_observers(config), average=config.average,
                         parallel=Parallelism(config.run.overlap_grad_sync, config.run.bucket_mb, config.run.shard),
                         export=pretrained_export(config), peak_flops=config.run.peak_flops)
    return prepare_training(stream, model, strategy, config.optim, options)


def run_config(config: RunConfig, store: ResultsStore | None = None, progress: bool = False,
               prepared: Parts | None = None,
               extra_config: dict[str, Any] | None = None, resume_run: int | None = None) -> RunResult:
    """Build everything the config names (unless ``prepared``) and train; with a ``store`` the run is
    recorded. ``extra_config`` adds sections to the stored configuration (e.g. a tuning run's
    validation split). With ``run.eval_every_steps`` (or ``eval_every_samples``) the continual-evaluation
    curve and its stability gaps (and anytime accuracy) are kept and stored too; ``run.log`` adds the
    experiment trackers it names (:func:`tracking_observers`). :func:`prepare_run`, then
    :meth:`~lifelong.runner.run.Run.execute`."""
    return prepare_run(config, store, progress, prepared, extra_config, resume_run).execute()


def stored_run(config: RunConfig, store: ResultsStore,
               prepared: Parts | Callable[[], Parts] | None = None,
               extra_config: dict[str, Any] | None = None) -> tuple[int, bool]:
    """The stored run of ``config`` (with ``extra_config``'s sections): found finished in ``store``, resumed
    from the checkpoint of an interrupted one, or trained; and whether it trained now. What a protocol's
    cells (a sweep's, a budget's, a job a cluster requeued) use, so that a cell is never trained twice.
    ``prepared``: the parts to train (default: built from ``config``), or a function that builds them, which
    is called again when a resume finds no usable checkpoint (a tuning trial's validation split is not in
    its config, so the fresh parts must come from the same function)."""
    resolved_config = {**resolve_config(config), **(extra_config or {})}
    finished = store.find_finished(resolved_config)
    if finished is not None:
        return finished, False
    build = prepared if callable(prepared) else None
    interrupted = store.find_interrupted(resolved_config) if config.run.checkpoint else None
    parts = build() if build is not None else prepared
    assert parts is None or isinstance(parts, tuple)
    if interrupted is not None:
        try:
            result = run_config(config, store=store, prepared=parts, extra_config=extra_config,
                                resume_run=interrupted)
        except ResumeError:  # it saved no usable checkpoint: train it afresh, from newly built parts
            result = run_config(config, store=store, prepared=build() if build is not None else None,
                                extra_config=extra_config)
    else:
        result = run_config(config, store=store, prepared=parts, extra_config=extra_config)
    assert result.run_id is not None
    return result.run_id, True

