"""Continual learning with a hypernetwork that generates the model's weights from a task embedding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lifelong.bounds import Annotated, Ge, Interval
from lifelong.data.loader import derive_seed
from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.models.classifier import Classifier
from lifelong.strategies.base import (
    OWN_TENSORS_FREEZE,
    Capabilities,
    ExperiencePlan,
    Strategy,
    StrategyContext,
)

EMBEDDINGS = ("point", "interval")
KAPPA_DECAY = 5e-5
"""How fast HyperInterval's weight of the center's cross-entropy falls per step during the warm-up, from 1 to
``kappa`` (the authors' code: ``max(1 - 0.00005 * iteration, kappa)``)."""
INTERVAL_LAYERS = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
"""The layers the interval target network propagates boxes through."""


class WeightGenerator(nn.Module):
    """An MLP hypernetwork ``h(e, Θ)``: task embeddings (N, E) to flat target weights (N, P).

    Chunked (``chunk_size > 0``, von Oswald et al. 2020, Sec. 3): one MLP, shared by all chunks, maps
    ``[e, c_j]`` (the task embedding beside the learned embedding ``c_j`` of chunk j) to ``chunk_size``
    weights; the chunks are concatenated and cut to P, so the hypernetwork can be far smaller than the
    model it generates. Unchunked (0): one output layer of all P weights."""

    def __init__(self, n_outputs: int, embedding_dim: int, hidden: tuple[int, ...], chunk_size: int,
                 chunk_embedding_dim: int, zero_output: bool) -> None:
        super().__init__()
        self.n_outputs = n_outputs
        n_chunks = math.ceil(n_outputs / chunk_size) if chunk_size else 1
        self.chunk_embeddings = nn.Parameter(torch.randn(n_chunks, chunk_embedding_dim)) if chunk_size else None
        widths = (embedding_dim + (chunk_embedding_dim if chunk_size else 0), *hidden)
        layers: list[nn.Module] = []
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        output = nn.Linear(widths[-1], chunk_size or n_outputs)
        if zero_output:
            nn.init.zeros_(output.weight)
            nn.init.zeros_(output.bias)
        self.mlp = nn.Sequential(*layers, output)

    def inputs(self, embeddings: torch.Tensor, chunks: bool = True) -> torch.Tensor:
        """The MLP's inputs: the embeddings (N, E), or beside each chunk's embedding (N, n_chunks, E + C);
        ``chunks=False`` puts zeros in place of the chunk embeddings (the radius of a point)."""
        if self.chunk_embeddings is None:
            return embeddings
        n = len(embeddings)
        own = self.chunk_embeddings if chunks else torch.zeros_like(self.chunk_embeddings)
        return torch.cat([embeddings[:, None].expand(n, len(own), -1), own.expand(n, -1, -1)], dim=2)

    def flat(self, outputs: torch.Tensor) -> torch.Tensor:
        """The MLP's outputs as flat target weights (N, P): the chunks concatenated and cut to P."""
        return outputs if self.chunk_embeddings is None else outputs.flatten(1)[:, :self.n_outputs]

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.flat(self.mlp(self.inputs(embeddings)))

    def interval(self, embeddings: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Interval bound propagation (Gowal et al. 2018, as in HyperInterval, Krukowski et al. 2024) of the
        boxes ``[e - radius, e + radius]`` around the embeddings (N, E): the centers and radii (N, P) of boxes
        that hold ``h(x, Θ)`` for every ``x`` in them. A linear layer maps a center to ``W c + b`` and a radius
        to ``|W| r``; ReLU, monotone, is applied to both bounds. The chunk embeddings are points (radius 0).
        With ``radius = 0`` the centers are the point outputs bit for bit (``(x + x) / 2 == x``)."""
        center, spread = self.inputs(embeddings), self.inputs(torch.full_like(embeddings, radius), chunks=False)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                center, spread = layer(center), F.linear(spread, layer.weight.abs())
            else:
                lower, upper = layer(center - spread), layer(center + spread)
                center, spread = (upper + lower) / 2, (upper - lower) / 2
        return self.flat(center), self.flat(spread)


def interval_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers in the order they run, by qualified name, for the interval target network: an
    ``nn.Sequential`` or a :class:`~lifelong.models.classifier.Classifier` (``head(backbone(x))``) of the
    layers in :data:`INTERVAL_LAYERS`; anything else is refused in one line."""
    if not isinstance(model, nn.Sequential | Classifier):
        raise ConfigError(f"strategy.embedding='interval' propagates weight intervals through an nn.Sequential or a "
                          f"built-in mlp/cnn, got {type(model).__name__}; use embedding='point'")
    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    unsupported = sorted({type(m).__name__ for _, m in leaves if not isinstance(m, INTERVAL_LAYERS)})
    if unsupported:
        raise ConfigError(f"strategy.embedding='interval' has no interval version of {', '.join(unsupported)}; "
                          "build the model without normalization (model.norm='none') or use embedding='point'")
    return leaves


def interval_forward(layers: list[tuple[str, nn.Module]], center: dict[str, torch.Tensor],
                     radius: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds (B, C) of the outputs of the network ``layers`` over every weight in the box
    ``center +- radius`` (tensors by qualified parameter name) for the inputs ``x``: interval arithmetic in
    center-radius form. A linear map of an input box ``c +- r`` by weights ``W +- R`` (bias ``b +- s``) has
    center ``W c + b`` and radius ``|W| r + R |c| + R r + s``, which holds every product of an input and a
    weight in their boxes; ReLU and max pooling, monotone, map the bounds; average pooling and flattening,
    linear with non-negative weights, map center and radius."""
    c, r = x, torch.zeros_like(x)
    for name, layer in layers:
        if isinstance(layer, nn.Linear | nn.Conv2d):
            weight, spread = center[f"{name}.weight"], radius[f"{name}.weight"]
            bias = center.get(f"{name}.bias")
            if isinstance(layer, nn.Linear):
                def apply(v: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
                    return F.linear(v, w, b)
            else:
                def apply(v: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None,
                          conv: nn.Conv2d = layer) -> torch.Tensor:
                    return F.conv2d(v, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
            c, r = apply(c, weight, bias), apply(r, weight.abs()) + apply(c.abs(), spread) + apply(r, spread)
            if bias is not None:
                r = r + _broadcast(radius[f"{name}.bias"], r)
        elif isinstance(layer, nn.ReLU | nn.MaxPool2d):
            lower, upper = layer(c - r), layer(c + r)
            c, r = (upper + lower) / 2, (upper - lower) / 2
        else:  # flatten, average pooling
            c, r = layer(c), layer(r)
    return c - r, c + r


def _broadcast(bias: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """A bias (C,) shaped to add to a layer's output (B, C) or (B, C, H, W)."""
    return bias.view(1, -1, *([1] * (out.dim() - 2)))


@dataclass
class Hypernetwork(Strategy):
    """Continual learning with hypernetworks (von Oswald, Henning, Grewe & Sacramento, ICLR 2020): a
    hypernetwork ``h(e_t, Θ)`` generates every parameter of the user's model (the model serves as the
    architecture: it is called through ``torch.func.functional_call`` with the generated weights) from a
    learned embedding ``e_t`` of each task. Only Θ and the current task's embedding are trained; the
    loss is the task's cross-entropy plus the output regularizer
    ``beta / T_old * sum_{t old} ||h(e_t, Θ) - h(e_t, Θ*)||²``, Θ* being the hypernetwork before the
    current task (its outputs for the old tasks are computed once, at the start of the task, as in the
    paper's code). The old embeddings stay fixed: the regularizer reads them detached and the optimizer
    holds only Θ and the current embedding, rebuilt at each experience (the paper's code makes its
    optimizers per task). At test time each sample gets its task's weights, so the method needs task ids
    (task-incremental and task-aware domain-incremental streams).

    The hypernetwork and the embeddings live in the strategy, not in the model: they are not the
    model's weights but what makes them, the model's own parameters are never trained, and the model's
    state dict (checkpoints, evaluation, FLOP counting) keeps its shape. :meth:`parameter_groups` hands
    them to the runner's optimizer instead of the model's parameters. The embeddings of every task of
    the stream are made at the start, from the run's seed.

    Departures from the paper: the simple regularizer, without the look-ahead ``ΔΘ`` of Eq. 2 and
    without sampling a subset of the old tasks. ``residual`` (on by default) generates the *change*
    of the model's own initial weights, ``W_t = W_0 + h(e_t, Θ)`` with the output layer started at zero,
    so that every task starts from a well-initialised network: the additive output of Magnitude
    Invariant Parametrizations (Ortiz, Guttag & Dalca, ICLR 2024), with the base ``W_0`` frozen, as a
    learned base shared by all tasks would escape the output regularizer. MIP's other half, encoding
    the hypernetwork's input to a constant norm, is meant for bounded scalar inputs (hyperparameters)
    and is not applied to learned embeddings. ``residual=False`` is the paper's direct generation.
    Buffers (normalisation statistics) are not generated: each task keeps its own copy, started from
    the model's, updated while the task trains and used for its samples at test time, so a model with
    BatchNorm serves every task with its own statistics.

    ``embedding="interval"`` is HyperInterval (Krukowski, Bielawska, Książek, Wawrzyński, Batorski & Spurek,
    "HyperInterval: Hypernetwork approach to training weight interval regions in continual learning", 2024,
    arXiv:2405.15444; authors' code ``pkrukowski1/HyperInterval``): each task's embedding is a box
    ``[e_t - ε, e_t + ε]``, and interval bound propagation through the hypernetwork
    (:meth:`WeightGenerator.interval`) maps it to a box of target weights ``[θ_t_lower, θ_t_upper]``. The
    interval target network (:func:`interval_forward`) propagates the inputs through the model with every
    weight in that box, giving lower and upper logits; the task's loss is
    ``κ CE(z_center, y) + (1 - κ) CE(z_worst, y)``, ``z_center`` the logits of the box's center weights (the
    "middle" weights of the authors' code, also used at test time) and ``z_worst`` the worst case over the
    box, the true class's lower logit beside the other classes' upper ones. As in the authors' code, during
    a warm-up (the first half of a task's iterations there) ε grows linearly from 0 and κ falls from 1 by
    0.00005 per step, then both stay (``kappa``, ``interval_radius``). The regularizer keeps the old tasks'
    lower bounds, centers and upper bounds, so a whole region of weights stays fixed for each old task. The
    interval target network covers an ``nn.Sequential`` or a built-in ``mlp``/``cnn`` of linear,
    convolution, ReLU, flatten and pooling layers; a model with normalization layers is refused (the
    authors' interval BatchNorm is not implemented).

    HyperInterval's departures: the warm-up lasts ``interval_warmup_epochs`` passes over the experience's
    training set (the strategy does not see the runner's steps; half of ``optim.epochs`` is the code's
    half of the iterations); ``ε`` is one fixed half-width for every coordinate (the code spreads a total ε
    over the coordinates by learned softmax proportions); the three squared distances are averaged, not
    summed, so that ``beta`` means the same as for points and radius 0 keeps the point version's
    regularizer; the universal embedding in the intersection of the tasks' boxes and the loss that pulls a
    new embedding toward the old boxes for it (``rho``) are not implemented: each task keeps its own center.
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(task_ids=True, freeze=False, freeze_refusal=OWN_TENSORS_FREEZE)

    beta: Annotated[float, Ge(0)] = 0.01
    """Weight of the output regularizer (0.01 in the paper)."""
    embedding_dim: Annotated[int, Ge(1)] = 32
    """Size of each task embedding."""
    hidden: tuple[int, ...] = (100, 100)
    """Hidden widths of the hypernetwork's MLP."""
    chunk_size: Annotated[int, Ge(0)] = 2000
    """Weights generated per chunk; 0 generates all of them from one output layer."""
    chunk_embedding_dim: Annotated[int, Ge(1)] = 32
    """Size of each chunk's learned embedding (chunked hypernetwork only)."""
    residual: bool = True
    """Generate the change of the model's initial weights rather than the weights themselves."""
    embedding: str = "point"
    """``"point"``: one embedding per task (von Oswald et al.); ``"interval"``: a box per task (HyperInterval)."""
    interval_radius: Annotated[float, Ge(0)] = 0.1
    """Half-width ε of every coordinate of a task's embedding box (``embedding="interval"`` only)."""
    kappa: Annotated[float, Interval(ge=0, le=1)] = 0.5
    """Weight of the center's cross-entropy after the warm-up, the worst case's being ``1 - kappa``
    (HyperInterval; 0.5 in the authors' loss)."""
    interval_warmup_epochs: Annotated[float, Ge(0)] = 2.5
    """Passes over an experience's training set during which ε grows from 0 and κ falls from 1 (the authors'
    first half of a task: half of ``optim.epochs``, whose default is 5)."""
    generator_net: WeightGenerator | None = field(default=None, init=False, repr=False)
    embeddings: nn.ParameterDict | None = field(default=None, init=False, repr=False)
    tasks: list[int] = field(default_factory=list, init=False, repr=False)
    """The tasks begun, in order: their embeddings are the trained ones."""
    targets: torch.Tensor | None = field(default=None, init=False, repr=False)
    """:meth:`kept_outputs` of the old tasks ``target_tasks`` under Θ*, taken at the start of the task."""
    target_tasks: list[int] = field(default_factory=list, init=False, repr=False)
    init_seed: int = field(default=0, init=False, repr=False)
    """Seeds the hypernetwork and the embeddings (from the run's seed)."""
    stream_tasks: list[int] = field(default_factory=list, init=False, repr=False)
    names: list[str] = field(default_factory=list, init=False, repr=False)
    """The model's parameters, in the order of the generated vector, and their shapes."""
    shapes: list[torch.Size] = field(default_factory=list, init=False, repr=False)
    task_buffers: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict, init=False, repr=False)
    """Each begun task's copy of the model's buffers."""
    current: int = field(default=-1, init=False, repr=False)
    """The task being trained (its embedding is the one trained)."""
    steps: int = field(default=0, init=False, repr=False)
    """Training steps of the current experience (HyperInterval's warm-up)."""
    samples: int = field(default=0, init=False, repr=False)
    """Training samples drawn in the current experience (HyperInterval's warm-up)."""
    train_size: int = field(default=0, init=False, repr=False)
    """The current experience's training samples."""
    layers: list[tuple[str, nn.Module]] = field(default_factory=list, init=False, repr=False)
    """The model's layers for the interval target network (``embedding="interval"``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hidden = tuple(self.hidden)
        if any(width < 1 for width in self.hidden):
            raise ConfigError(f"strategy.hidden must be widths >= 1, got {list(self.hidden)}")
        if self.embedding not in EMBEDDINGS:
            raise ConfigError(f"strategy.embedding must be one of {list(EMBEDDINGS)}, got {self.embedding!r}")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.init_seed = derive_seed(context.seed, 0x4E7)
        self.stream_tasks = sorted({experience.task_id for experience in context.stream})
        self.generator_net, self.embeddings, self.targets = None, None, None
        self.tasks, self.target_tasks, self.task_buffers = [], [], {}
        self.current, self.steps, self.samples, self.train_size, self.layers = -1, 0, 0, 0, []

    def build(self, model: nn.Module) -> None:
        """Make the hypernetwork and the embeddings of every task of the stream for ``model``, on its
        device, from the run's seed alone (neither the global random state nor the strategy's generators
        are drawn from, so that a resumed run builds them alike)."""
        device = next(model.parameters()).device
        self.names = [name for name, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed)
            self.generator_net = WeightGenerator(sum(shape.numel() for shape in self.shapes), self.embedding_dim,
                                                 self.hidden, self.chunk_size, self.chunk_embedding_dim,
                                                 zero_output=self.residual).to(device)
            self.embeddings = nn.ParameterDict(
                {str(task): nn.Parameter(torch.randn(self.embedding_dim)) for task in self.stream_tasks}).to(device)

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """Train on the experience with a new optimizer over Θ and the experience's embedding."""
        return ExperiencePlan(train_size=len(experiences[index].train), reset_optimizer=True)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        if self.generator_net is None:
            self.build(model)
        if self.embedding == "interval":
            self.layers = interval_layers(model)
        task = self.current = experience.task_id
        self.steps, self.samples, self.train_size = 0, 0, len(experience.train)
        if task not in self.tasks:
            self.tasks.append(task)
            self.task_buffers[task] = {name: b.detach().clone() for name, b in model.named_buffers()}
        self.target_tasks = [t for t in self.tasks if t != task]
        self.targets = self.kept_outputs(self.target_tasks).detach() if self.target_tasks else None

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Θ and the current task's embedding: the old embeddings stay out of the optimizer."""
        if self.generator_net is None:
            self.build(model)
        assert self.generator_net is not None and self.embeddings is not None
        own = [self.embeddings[str(self.current)]] if str(self.current) in self.embeddings else []
        return [{"params": [*self.generator_net.parameters(), *own]}]

    def task_embeddings(self, tasks: list[int]) -> torch.Tensor:
        """The embeddings of ``tasks`` (len(tasks), E): the centers of their boxes with interval embeddings.
        Every task's but the one in training is detached: an old embedding stays fixed."""
        assert self.embeddings is not None
        return torch.stack([self.embeddings[str(t)] if t == self.current else self.embeddings[str(t)].detach()
                            for t in tasks])

    def generate(self, tasks: list[int]) -> torch.Tensor:
        """The flat weights' part made by the hypernetwork (len(tasks), P): ``h(e_t, Θ)``, or with interval
        embeddings the center of the box of generated weights."""
        assert self.generator_net is not None
        if self.embedding == "point":
            return self.generator_net(self.task_embeddings(tasks))
        return self.generator_net.interval(self.task_embeddings(tasks), self.interval_radius)[0]

    def kept_outputs(self, tasks: list[int]) -> torch.Tensor:
        """What the output regularizer keeps fixed for ``tasks``: the generated weights (len(tasks), P), or
        with interval embeddings the lower bounds, centers and upper bounds of their boxes side by side
        (len(tasks), 3P)."""
        if self.embedding == "point":
            return self.generate(tasks)
        assert self.generator_net is not None
        center, radius = self.generator_net.interval(self.task_embeddings(tasks), self.interval_radius)
        return torch.cat([center - radius, center, center + radius], dim=1)

    def warmup(self) -> tuple[float, float]:
        """HyperInterval's ``(ε, κ)`` now: during the first ``interval_warmup_epochs`` passes ε grows linearly
        from 0 and κ falls from 1 by :data:`KAPPA_DECAY` per step (not below ``kappa``), then ``(interval_radius,
        kappa)``."""
        progress = self.samples / (self.interval_warmup_epochs * max(self.train_size, 1)) \
            if self.interval_warmup_epochs > 0 else 1.0
        if progress >= 1:
            return self.interval_radius, self.kappa
        return self.interval_radius * progress, max(1 - KAPPA_DECAY * self.steps, self.kappa)

    def interval_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """HyperInterval's ``κ CE(z_center) + (1 - κ) CE(z_worst)`` of the current task on ``batch``."""
        assert self.generator_net is not None
        radius, kappa = self.warmup()
        center, spread = self.generator_net.interval(self.task_embeddings([self.current]), radius)
        center_logits = self.task_model(model, self.current, center[0], batch.x)
        lower, upper = interval_forward(self.layers, self.weights(model, center[0]),
                                        self.weights(model, spread[0], offset=False), batch.x)
        worst = torch.where(F.one_hot(batch.y, upper.shape[1]).bool(), lower, upper)  # (B, C)
        return kappa * F.cross_entropy(self.mask_logits(center_logits, batch.task), batch.y) + \
            (1 - kappa) * F.cross_entropy(self.mask_logits(worst, batch.task), batch.y)

    def weights(self, model: nn.Module, flat: torch.Tensor, offset: bool = True) -> dict[str, torch.Tensor]:
        """The model's parameters by name from one task's generated vector (P,) (with ``residual``, plus the
        model's own weights unless ``offset`` is False: a radius is not offset)."""
        parts = flat.split([shape.numel() for shape in self.shapes])
        own = dict(model.named_parameters())
        return {name: part.view(shape) + own[name].detach() if self.residual and offset else part.view(shape)
                for name, part, shape in zip(self.names, parts, self.shapes, strict=True)}

    def task_model(self, model: nn.Module, task: int, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``model(x)`` with ``task``'s generated weights (``flat``) and its own buffers (updated in place
        by a normalisation layer in training mode)."""
        return functional_call(model, {**self.weights(model, flat), **self.task_buffers[task]}, (x,))

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Each sample through the model with its task's generated weights, masked to the task's
        classes; a task not begun yet (the evaluation before it) goes through the model's own weights."""
        tasks = task.unique().tolist()
        known = [t for t in tasks if t in self.tasks]
        if not known:
            return super().logits(model, x, task)
        generated = dict(zip(known, self.generate(known), strict=True))
        rows, outs = [], []
        for t in tasks:
            index = (task == t).nonzero().squeeze(1) if len(tasks) > 1 else None
            part = x if index is None else x[index]
            outs.append(self.task_model(model, t, generated[t], part) if t in generated else model(part))
            rows.append(index)
        if len(tasks) == 1:
            return self.mask_logits(outs[0], task)
        out = torch.cat([o.to(outs[0].dtype) for o in outs])[torch.cat(rows).argsort()]
        return self.mask_logits(out, task)

    def regularizer(self) -> torch.Tensor | None:
        """``beta / T_old * sum_t ||h(e_t, Θ) - h(e_t, Θ*)||²`` over the old tasks (None without any); with
        interval embeddings the mean of this over the lower bounds, the centers and the upper bounds."""
        if self.targets is None:
            return None
        assert self.generator_net is not None
        difference = self.kept_outputs(self.target_tasks).float() - self.targets.float()
        parts = difference.shape[1] // self.generator_net.n_outputs
        return self.beta * difference.pow(2).sum() / (len(self.target_tasks) * parts)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        self.steps, self.samples = self.steps + 1, self.samples + len(batch.y)
        if self.embedding == "interval":
            loss = self.interval_loss(model, batch)
        else:
            loss = F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)
        penalty = self.regularizer() if self.beta > 0 else None
        return loss if penalty is None else loss + penalty

    def state_dict(self) -> dict[str, Any]:
        built = self.generator_net is not None and self.embeddings is not None
        return {**super().state_dict(), "tasks": list(self.tasks), "target_tasks": list(self.target_tasks),
                "generator_net": self.generator_net.state_dict() if built else None,  # type: ignore[union-attr]
                "embeddings": self.embeddings.state_dict() if built else None,  # type: ignore[union-attr]
                "targets": self.targets, "task_buffers": self.task_buffers, "current": self.current,
                "steps": self.steps, "samples": self.samples, "train_size": self.train_size}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore in place: the optimizer the runner built from :meth:`parameter_groups` keeps stepping
        the same parameter objects."""
        super().load_state_dict(state, model)
        self.tasks, self.target_tasks = list(state["tasks"]), list(state["target_tasks"])
        self.current, self.steps = int(state["current"]), int(state["steps"])
        self.samples, self.train_size = int(state["samples"]), int(state["train_size"])
        if state["generator_net"] is not None:
            if self.generator_net is None:
                self.build(model)
            assert self.generator_net is not None and self.embeddings is not None
            self.generator_net.load_state_dict(state["generator_net"])
            self.embeddings.load_state_dict(state["embeddings"])
        device = next(model.parameters()).device
        self.targets = None if state["targets"] is None else state["targets"].to(device)
        self.task_buffers = {int(task): {name: b.to(device, copy=True) for name, b in kept.items()}
                             for task, kept in state["task_buffers"].items()}
