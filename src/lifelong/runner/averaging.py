"""Weight averaging and merging for any strategy (the ``[average]`` table): an EMA copy of the model that
evaluation uses, checkpoint interpolation after each experience, or continual model merging.

One :class:`Averaging` per run. It changes the model, so it is not an observer: the runner calls it at
fixed points, before any observer sees the step or the experience:

* :meth:`start_experience` keeps the weights the experience starts from (``before``);
* :meth:`after_step` (``ema``) updates the moving average right after every optimizer step;
* :meth:`end_training`, after the experience's last step and before the strategy's ``after_experience``
  (so a strategy that keeps an anchor or a teacher keeps the model the run continues from),
  ``interpolate`` or ``merge`` replace the model's weights;
* :meth:`evaluation_weights` puts the EMA weights into the model while the runner evaluates (the rows of
  the accuracy matrix and every point of the evaluation curve), then restores the training weights.

Its state (the average, the weights before the experience, the merge's origin and scale) is in every
checkpoint, so a resumed run is the same bit for bit. A data-parallel run needs nothing more: every rank
holds the same parameters after each step (averaged gradients, broadcast normalisation statistics), so
every rank computes the same average and the same merge.

Cost: ``ema`` and ``interpolate`` keep one more copy of the model's state, ``merge`` two (the initial
parameters and the experience's start); the EMA update and the merge's SVDs run inside the experience's
training time, and are not in its FLOP count nor in the strategy's ``memory_bytes``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from lifelong.config import AverageConfig, OptimConfig
from lifelong.errors import ConfigError
from lifelong.models.averaging import ema_step, ema_weight, interpolate, project_out
from lifelong.runner.observers import TrainState

METHOD_OF_FIELD = {"decay": "ema", "bias_correction": "ema", "coefficient": "interpolate", "alpha": "merge"}
"""The ``[average]`` fields each method alone reads."""


class Averaging:
    """The ``[average]`` method of a run (``ema``, ``interpolate`` or ``merge``; see :class:`AverageConfig`).

    ``ema``: ``average += w * (theta - average)`` after every optimizer step with ``w`` from
    :func:`~lifelong.models.averaging.ema_weight` (``decay``, ``bias_correction``); floating-point buffers
    (BatchNorm statistics) are averaged the same way, as timm's ``ModelEmaV2`` does, integer buffers
    (batch counters) copied. The training model is never changed; evaluation sees the average.

    ``interpolate``: after each experience ``theta = (1 - coefficient) * before + coefficient * after``,
    floating-point buffers included; training continues from it (WiSE-FT, Wortsman et al. 2022, between
    consecutive experiences; Dynamic Y-KD's checkpoint averaging).

    ``merge``: "Merging Models on the Fly" (OPCM, Tang et al. 2025, arXiv:2501.09522) with the run's initial
    weights ``theta_0`` as the pretrained model and each experience's update ``tau_t = after - before``
    as its task vector: with ``M`` the merged task vector (``before - theta_0``), every weight of two or
    more dimensions has the directions of ``M`` projected out of ``tau_t``
    (:func:`~lifelong.models.averaging.project_out`, ``alpha``), vectors are added as they are, and the
    sum is rescaled: ``S_t = lambda_{t-1} M + P(tau_t)``, ``lambda_t = ||S_t|| / mean_i ||tau_i||``,
    ``theta = theta_0 + S_t / lambda_t`` (norms over all parameters), so the merged update keeps the
    average length of the task vectors. Buffers are the trained model's. Departures: the paper merges
    models fine-tuned independently from one pretrained model, here each experience trains from the
    merged model; it projects linear layers only, here also convolutions (flattened to ``(out, rest)``);
    an experience that changes no parameter is not merged (it would divide by a zero norm).
    """

    def __init__(self, config: AverageConfig, model: nn.Module) -> None:
        """Start averaging ``model`` from its weights now (the run's initial weights)."""
        self.config = config
        self.model = model
        weights = model.state_dict()
        self.average: dict[str, torch.Tensor] = \
            {name: value.clone() for name, value in weights.items()} if config.method == "ema" else {}
        """The EMA of every state-dict tensor (``ema``)."""
        self.steps = 0
        """Optimizer steps averaged so far (``ema``'s bias correction)."""
        self.before: dict[str, torch.Tensor] = {}
        """The state dict at the start of the current experience (``interpolate``, ``merge``)."""
        self.origin: dict[str, torch.Tensor] = \
            {name: p.detach().clone() for name, p in model.named_parameters()} if config.method == "merge" else {}
        """The parameters at the start of the run: the merge's pretrained model ``theta_0``."""
        self.scale = 1.0
        """``lambda_{t-1}``: the merged update is the sum of the projected task vectors over it."""
        self.norms: list[float] = []
        """The norm of every merged task vector."""

    @staticmethod
    def check(config: AverageConfig | None, optim: OptimConfig) -> None:
        """Refuse EMA beside the branch-off's decayed branch (each would be the weights evaluated), and a
        method's setting without any method (``decay`` with ``method = "none"``: the user meant to average);
        warn about a setting of another method than the one chosen (unused, as in a configuration shared by
        several methods). A strategy that cannot be averaged is refused by its capabilities
        (:func:`lifelong.runner.validation.check_capabilities`)."""
        for name, method in METHOD_OF_FIELD.items():
            value = getattr(config, name, None)
            if config is None or config.method == method or value == AverageConfig.model_fields[name].default:
                continue
            unused = (f"average.{name}={value!r} is a setting of average.method='{method}' and has no effect with "
                      f"average.method={config.method!r}")
            if config.method == "none":
                raise ConfigError(f"{unused}; set average.method='{method}' or drop average.{name}")
            warnings.warn(f"{unused}; it is ignored", UserWarning, stacklevel=3)
        if config is not None and config.method == "ema" and optim.branch_decay is not None:
            raise ConfigError("average.method='ema' evaluates the moving average, optim.branch_decay a decayed "
                              "branch of the model; set one of them (average.method='none' or "
                              "optim.branch_decay=None)")

    def start_experience(self, state: TrainState) -> None:
        """Keep the weights the experience starts from (a run resumed inside it loaded them)."""
        if self.config.method != "ema" and state.experience_step == 0:
            self.before = {name: value.clone() for name, value in self.model.state_dict().items()}

    def after_step(self) -> None:
        """Update the moving average with the weights of the step just taken (``ema``)."""
        if self.config.method != "ema":
            return
        self.steps += 1
        weights = self.model.state_dict()
        floating = [name for name, value in self.average.items() if value.is_floating_point()]
        ema_step([self.average[n] for n in floating], [weights[n] for n in floating],
                 ema_weight(self.config.decay, self.steps, self.config.bias_correction))
        for name, value in self.average.items():
            if not value.is_floating_point():
                value.copy_(weights[name])

    @torch.no_grad()
    def end_training(self) -> None:
        """After the experience's last step: ``interpolate`` or ``merge`` the model's weights."""
        if self.config.method == "interpolate":
            for name, value in self.model.state_dict().items():
                if value.is_floating_point():
                    value.copy_(interpolate(self.before[name], value, self.config.coefficient))
        elif self.config.method == "merge":
            self._merge()

    def _merge(self) -> None:
        """One OPCM step (see the class docstring) on the model's parameters."""
        parameters = dict(self.model.named_parameters())
        updates = {name: p.detach() - self.before[name] for name, p in parameters.items()}
        norm = _norm(updates.values())
        if norm == 0.0:
            return
        self.norms.append(norm)
        merged = {name: self.before[name] - self.origin[name] for name in parameters}
        summed = {name: self.scale * merged[name] + project_out(updates[name], merged[name], self.config.alpha)
                  for name in parameters}
        self.scale = _norm(summed.values()) / (sum(self.norms) / len(self.norms))
        for name, p in parameters.items():
            p.detach().copy_(self.origin[name] + summed[name] / self.scale)

    @contextlib.contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """The model holds the EMA weights inside the block (``ema``; the training weights otherwise)."""
        if not self.average:
            yield
            return
        weights = self.model.state_dict()
        training = {name: value.clone() for name, value in weights.items()}
        with torch.no_grad():
            for name, value in weights.items():
                value.copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in weights.items():
                    value.copy_(training[name])

    def summary(self) -> dict[str, Any]:
        """What the run's metrics record of the method: its settings and, for ``merge``, every task
        vector's norm and the last scale ``lambda``."""
        extra = {"task_vector_norms": list(self.norms), "scale": self.scale} if self.config.method == "merge" else {}
        return {**self.config.model_dump(), **extra}

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average, "steps": self.steps, "before": self.before, "origin": self.origin,
                "scale": self.scale, "norms": list(self.norms)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(self.model.parameters()).device
        self.average = {name: value.to(device) for name, value in state["average"].items()}
        self.before = {name: value.to(device) for name, value in state["before"].items()}
        self.origin = {name: value.to(device) for name, value in state["origin"].items()}
        self.steps, self.scale, self.norms = int(state["steps"]), float(state["scale"]), list(state["norms"])


def _norm(tensors: Iterable[torch.Tensor]) -> float:
    """The Euclidean norm of all ``tensors`` flattened into one vector (summed in double precision)."""
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors))
