"""Channel-wise lightweight reprogramming: a frozen anchor network adapted to each task by tiny
channel-wise maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge
from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.models.nets import split_model
from lifelong.strategies.base import OWN_TENSORS_FREEZE, Capabilities, ExperiencePlan, Strategy, StrategyContext
from lifelong.strategies.parts.task_tables import TaskTable, TaskTensors, by_task, head_names, norm_names, prefix_of


def mapped_layers(model: nn.Module) -> dict[str, nn.Conv2d | nn.Linear]:
    """The backbone's convolutions and linear layers, by qualified name: each gets a map per task."""
    backbone = split_model(model)[0]
    prefix = prefix_of(model, backbone)
    return {f"{prefix}{name}": module for name, module in backbone.named_modules()
            if isinstance(module, nn.Conv2d | nn.Linear)}


def identity_maps(layers: dict[str, nn.Conv2d | nn.Linear], kernel_size: int) -> dict[str, torch.Tensor]:
    """One task's maps, each the identity: per convolution a depthwise kernel (C, 1, k, k) that is a
    Dirac delta; per linear layer a scale (F,) of ones and a shift (F,) of zeros."""
    maps: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        device = layer.weight.device
        if isinstance(layer, nn.Conv2d):
            kernel = torch.zeros(layer.out_channels, 1, kernel_size, kernel_size, device=device)
            kernel[:, 0, kernel_size // 2, kernel_size // 2] = 1.0
            maps[f"{name}.kernel"] = kernel
        else:
            maps[f"{name}.scale"] = torch.ones(layer.out_features, device=device)
            maps[f"{name}.shift"] = torch.zeros(layer.out_features, device=device)
    return maps


def reprogram(out: torch.Tensor, maps: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """Layer ``name``'s output (B, C, H, W) or (B, ..., F) through its map of ``maps``."""
    kernel = maps.get(f"{name}.kernel")
    if kernel is not None:
        return F.conv2d(out, kernel.to(out.dtype), padding=kernel.shape[-1] // 2, groups=kernel.shape[0])
    return out * maps[f"{name}.scale"].to(out.dtype) + maps[f"{name}.shift"].to(out.dtype)


@dataclass
class CLR(Strategy):
    """Channel-wise Lightweight Reprogramming (Ge, Li, Ni, Zhao, Yang & Itti, ICCV 2023, "CLR: Channel-wise
    Lightweight Reprogramming for Continual Learning"): a task-agnostic anchor network stays frozen and
    each task "reprograms" it with a channel-wise linear map after every convolution, a depthwise
    ``kernel_size`` x ``kernel_size`` convolution initialised to the identity (a Dirac kernel), plus its own
    head. Here the maps are applied by forward hooks on the backbone's layers, registered for one task's
    forward pass, so the user's model class is unchanged; a batch mixing tasks runs per task.

    The anchor: with ``train_first`` (default) the first experience trains the whole backbone (its maps
    too), which then stays frozen; off, the backbone stays at the values the model came with (the paper
    uses an ImageNet-pretrained backbone the user would load). Like the reference code
    (``gyhandy/Channel-wise-Lightweight-Reprogramming``, ``train_BN``), each task also keeps its own
    normalization layers (affine parameters and running statistics): shared BatchNorm statistics would
    drift with every task. A new task's maps start at the identity, its normalization layers and head as
    copies of the first task's.

    Departures: linear layers of the backbone (an MLP) get a per-feature affine map (scale and shift,
    identity at start) instead of a depthwise convolution; the head is one linear layer over all classes
    per task, masked to the task's classes; there is no task-inference module (the paper's optional task
    oracle replacement), so the stream must give task ids.

    Size: :meth:`map_fraction` is one task's map entries over the backbone's parameters (the paper
    reports under 0.6% for ResNets; here 1.2% for ``resnet18`` and 2.2% for ``resnet32`` on 32x32 inputs,
    4.4% for ``cnn`` with channels (32, 64): thin layers pay relatively more). Kept per task: its maps
    (:attr:`maps`), normalization tensors and head (:attr:`own`)."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(task_ids=True, freeze=False, freeze_refusal=OWN_TENSORS_FREEZE)

    train_first: bool = True
    """Train the whole backbone (and the first task's maps) in the first experience, then freeze it (the
    anchor); off, the backbone stays at the values the model came with."""
    kernel_size: Annotated[int, Ge(1)] = 3
    """Side of the depthwise kernel of the maps after convolutions (3 in the paper); odd."""
    own: TaskTable = field(init=False, repr=False)
    """Each task's normalization layers and head (made at :meth:`setup`)."""
    maps: TaskTensors = field(default_factory=TaskTensors, init=False, repr=False)
    """Each task's channel-wise maps, by layer name and ``kernel``, ``scale`` or ``shift``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"strategy.kernel_size must be an odd number >= 1, got {self.kernel_size}")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.own, self.maps = TaskTable(self.train_first), TaskTensors()

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """Train on the experience with a new optimizer (:mod:`~lifelong.strategies.parts.task_tables`)."""
        return ExperiencePlan(train_size=len(experiences[index].train), reset_optimizer=True)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Give a new task its own normalization layers and head (copies of the first task's) and identity maps."""
        self.own.begin(model, experience.task_id, norm_names(model) + head_names(model))
        if self.own.current not in self.maps:
            self.maps.create(self.own.current, identity_maps(mapped_layers(model), self.kernel_size), lambda _: True)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return self.own.parameter_groups(model, extra=self.maps.trainable(self.own.current))

    def reprogrammed(self, model: nn.Module, x: torch.Tensor, task: int) -> torch.Tensor:
        """``model(x)`` with ``task``'s maps after its layers (hooks registered for this call) and its own
        normalization layers and head."""
        maps = self.maps.of(task)
        handles = [layer.register_forward_hook(lambda _, __, out, name=name: reprogram(out, maps, name))
                   for name, layer in mapped_layers(model).items()] if maps else []
        try:
            return self.own.run(model, x, task, self.own.shared(model))
        finally:
            for handle in handles:
                handle.remove()

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Each sample through the model reprogrammed for its task, masked to its task's classes."""
        return self.mask_logits(by_task(x, task, lambda part, t: self.reprogrammed(model, part, t)), task)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.loss(model, batch.x, batch.y, batch.task)

    def map_fraction(self, model: nn.Module) -> float:
        """One task's map entries over the backbone's parameter count."""
        layers = mapped_layers(model)
        per_task = sum(t.numel() for t in identity_maps(layers, self.kernel_size).values())
        return per_task / sum(p.numel() for p in split_model(model)[0].parameters())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.own.state(), "maps": self.maps.state()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.own.load(state, model)
        self.maps.load(state["maps"], lambda _: True)
