"""Tuning modules of a frozen backbone (parameter-efficient tuning, PET): LoRA and bottleneck adapters on
its linear layers, and :class:`TuningModules`, the part a method holds to inject and train them.

A small native implementation rather than Hugging Face ``peft``. ``peft.inject_adapter_in_model`` does take
any ``nn.Module`` and ``target_modules`` patterns, but it replaces each target by a wrapper whose own weight
moves to ``<name>.base_layer.weight`` and it freezes every other parameter of the model, head included. A
fresh model (a resumed run's, one given a ``backbone_path``) then no longer matches the state dict, and
the head, which must train, needs unfreezing behind its back. Here each target ``nn.Linear`` (any
subclass: weight-standardized layers keep their forward) stays where it is; the tuning module becomes its
child ``tuning`` and a forward hook adds the tuning module's term to the layer's output:

* LoRA (Hu et al., ICLR 2022, "LoRA: Low-Rank Adaptation of Large Language Models"): ``W x + b + (alpha /
  r) B A x``, ``A`` (r, in) Kaiming-uniform as in the reference code, ``B`` (out, r) zeros, so the model's
  outputs are unchanged at injection. No dropout on LoRA's input (the reference ``loralib``'s default).
* Adapter (Houlsby et al., ICML 2019, "Parameter-Efficient Transfer Learning for NLP"): a sequential
  bottleneck on the layer's output with a residual, ``h + (alpha / r) up(ReLU(down(h)))``, ``h = W x + b``,
  ``down`` (r, out) Kaiming-uniform, ``up`` (out, r) zeros (identity at injection). Sequential, on the
  output, because a parallel adapter on one linear layer (AdaptFormer's, Chen et al. 2022, sits beside a
  whole MLP block) would be LoRA with a ReLU inside; ``alpha / r`` plays AdaptFormer's scale ``s``.

The tuning tensors are the model's parameters (device moves, ``model.parameters()``, evaluation and
copies of the model see them) but stay out of ``model.state_dict()``: the runner restores a checkpoint
into a freshly built model, before any strategy hook could inject them, and a strict load would refuse
their keys. The strategy's own state dict carries them instead, and its ``load_state_dict`` injects them
into the model first (:meth:`TuningModules.load_state_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.loader import derive_seed
from lifelong.errors import ConfigError
from lifelong.models.nets import split_model

KINDS = ("lora", "adapter")


class Tuning(nn.Module):
    """A tuning module of one linear layer: ``down`` (rank, d) and ``up`` (out, rank) with ``scale``;
    ``kind`` ``lora`` adds ``scale * up(down(x))`` to the output, ``adapter`` adds ``scale *
    up(ReLU(down(h)))`` for the output ``h``. Its tensors are left out of the model's state dict (see the
    module's docstring)."""

    def __init__(self, kind: str, layer: nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.kind, self.scale = kind, alpha / rank
        width = layer.in_features if kind == "lora" else layer.out_features
        down = torch.empty(rank, width)
        nn.init.kaiming_uniform_(down, a=math.sqrt(5), generator=generator)  # nn.Linear's default
        options = {"device": layer.weight.device, "dtype": layer.weight.dtype}
        self.down = nn.Parameter(down.to(**options))  # (rank, in) or (rank, out)
        self.up = nn.Parameter(torch.zeros(layer.out_features, rank, **options))  # (out, rank)

    def forward(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        if self.kind == "lora":
            return outputs + self.scale * F.linear(F.linear(inputs, self.down), self.up)
        return outputs + self.scale * F.linear(F.relu(F.linear(outputs, self.down)), self.up)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        """Nothing: the strategy's state dict holds these tensors."""

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Nothing: the strategy's ``load_state_dict`` restores these tensors."""


def _add_tuning(layer: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    """Forward hook of a tuned layer (a module-level function, so that a deep copy of the model calls
    the copy's ``tuning``)."""
    return layer.tuning(args[0], output)


def inject(model: nn.Module, kind: str, rank: int, alpha: float, targets: Sequence[str], seed: int) -> None:
    """Give every ``nn.Linear`` of the model's backbone whose name (inside the backbone) matches one of
    the glob ``targets`` a tuning module, drawn from ``seed`` alone; a layer that has one of this kind and
    rank keeps it (a resumed run injects before its first hook), one of another is refused."""
    backbone = split_model(model)[0]
    layers = [(name, module) for name, module in backbone.named_modules()
              if isinstance(module, nn.Linear) and any(fnmatchcase(name, pattern) for pattern in targets)]
    if not layers:
        raise ConfigError(f"strategy.targets {list(targets)} match no nn.Linear layer of the model's backbone "
                          "(a ResNet's only linear layer is its head); use a model with linear layers (mlp, vit)")
    generator = torch.Generator().manual_seed(seed)
    for name, layer in layers:
        existing = getattr(layer, "tuning", None)
        if not isinstance(existing, Tuning):
            layer.tuning = Tuning(kind, layer, rank, alpha, generator)
            layer.register_forward_hook(_add_tuning)
        elif (existing.kind, len(existing.down)) != (kind, rank):
            raise ConfigError(f"strategy: the backbone's layer {name!r} already carries a rank-{len(existing.down)} "
                              f"{existing.kind} module, not a rank-{rank} {kind} one; start from a model without one")


def tuning_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The tuning modules' parameters by qualified name, in the model's order."""
    return {f"{prefix}.{name}": p for prefix, module in model.named_modules() if isinstance(module, Tuning)
            for name, p in module.named_parameters()}


def merged_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight of every LoRA-tuned linear layer of ``model`` with its low-rank term merged in,
    ``W + (alpha / r) B A``, by the parameter's qualified name: what a saved copy of the model holds so that
    it computes what the tuned model does (merging is exact, Hu et al. 2022, Sec. 4.1). An adapter, a ReLU
    between its projections, merges into no weight: refused in one line."""
    merged = {}
    for name, layer in model.named_modules():
        tuning = getattr(layer, "tuning", None)
        if not isinstance(tuning, Tuning):
            continue
        if tuning.kind != "lora":
            raise ConfigError(f"the model's layer {name!r} carries a bottleneck adapter, which no weight of the model "
                              "can hold (a ReLU lies between its projections); tune with strategy.module='lora', "
                              "which merges into the weights")
        assert isinstance(layer, nn.Linear)
        merged[f"{name}.weight"] = (layer.weight + tuning.scale * tuning.up @ tuning.down).detach()
    return merged


@contextmanager
def substituted(parameters: dict[str, nn.Parameter], values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Run with ``values`` in place of the ``parameters`` of the same names (another copy of the tuning
    modules: LAE's offline ones), put back afterwards."""
    saved = {name: p.data for name, p in parameters.items()}
    try:
        for name, p in parameters.items():
            p.data = values[name]
        yield
    finally:
        for name, p in parameters.items():
            p.data = saved[name]


MODEL_OWNED = ("generator", "local_generator", "tuning")
"""State-dict entries a method's memory leaves out: the generators, and the tuning modules, which are the model's."""


def check_tuning(module: str, targets: Sequence[str]) -> None:
    """Refuse, in one line, a tuning module other than LoRA or an adapter, or targets that are not a
    non-empty list of glob patterns."""
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ConfigError(f"strategy.targets must be a non-empty list of glob patterns, got {targets!r}")
    if module not in KINDS:
        raise ConfigError(f"strategy.module must be one of {', '.join(KINDS)}, got {module!r}")


class TuningModules:
    """The LoRA or adapter modules of a model's backbone, and the frozen rest of it.

    The modules are injected before the first experience (and when a checkpoint is loaded), drawn from
    the run's seed alone; every other parameter of the backbone stops training (``requires_grad`` off, left so
    after the run; normalization statistics, which are buffers, still follow the data in training mode).
    :meth:`parameter_groups` gives two groups, the tuning parameters then the head's, and nothing else,
    so the parameters that train are exactly those of the groups."""

    def __init__(self, kind: str, rank: int, alpha: float, targets: Sequence[str], run_seed: int) -> None:
        self.kind, self.rank, self.alpha, self.targets = kind, rank, alpha, tuple(targets)
        self.seed = derive_seed(run_seed, 0x7E7)
        self.parameters: dict[str, nn.Parameter] = {}
        """The model's tuning parameters by name, once injected (the state dict saves them)."""

    def prepare(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Inject the tuning modules (once) and freeze the rest of the backbone; the tuning parameters."""
        inject(model, self.kind, self.rank, self.alpha, self.targets, self.seed)
        self.parameters = tuning_parameters(model)
        tuned_ids = {id(p) for p in self.parameters.values()}
        for p in split_model(model)[0].parameters():
            p.requires_grad_(id(p) in tuned_ids)
        return self.parameters

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The tuning parameters, then the head's trainable ones."""
        return [{"params": list(tuning_parameters(model).values())},
                {"params": [p for p in split_model(model)[1].parameters() if p.requires_grad]}]

    def state_dict(self) -> dict[str, Any]:
        return {"tuning": {name: p.detach() for name, p in self.parameters.items()}}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Inject the modules into ``model`` (a freshly built one, on resume) and restore their tensors."""
        with torch.no_grad():
            for name, p in self.prepare(model).items():
                p.copy_(state["tuning"][name])
