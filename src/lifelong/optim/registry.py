"""Optimizers by name, each a small factory with plain, typed keyword options.

``optim.name`` picks the factory; ``optim.lr``, ``optim.weight_decay`` and (where the optimizer has one)
``optim.momentum`` are passed by the runner, and ``optim.optimizer_params`` (a TOML table) gives the
rest, validated field by field.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from lifelong.errors import ConfigError
from lifelong.optim.adagradnorm import AdaGradNorm
from lifelong.optim.agvm import AGVM
from lifelong.optim.decay import split_weight_decay
from lifelong.optim.lamb import LAMB
from lifelong.optim.hypergradient import HypergradientSGD
from lifelong.optim.lars import LARS
from lifelong.optim.probe import stable_step
from lifelong.optim.projected import SGDP, AdamP

Params = Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]]


def sgd(params: Params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
        nesterov: bool = False) -> torch.optim.Optimizer:
    """Stochastic gradient descent with (optionally Nesterov) momentum."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov and momentum > 0)


def adam(params: Params, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
         eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015) with L2 weight decay added to the gradient."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


def adamw(params: Params, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
          eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


OPTIMIZERS = {"sgd": sgd, "adam": adam, "adamw": adamw, "lars": LARS, "lamb": LAMB, "adagradnorm": AdaGradNorm,
              "sgdp": SGDP, "adamp": AdamP, "sgd_hd": HypergradientSGD}

SCALING_RULES = {"sgd": "linear", "lars": "linear", "sgdp": "linear", "sgd_hd": "linear", "adam": "sqrt", "adamw": "sqrt", "lamb": "sqrt",
                 "adagradnorm": "sqrt", "adamp": "sqrt"}
"""The batch-size scaling rule that suits each optimizer (``optim.lr_scaling = "auto"``): linear for
SGD-type updates (Goyal et al. 2017; You et al. 2017), square root for adaptive ones (Granziol et al.
2022, "Learning Rates as a Function of Batch Size"; You et al. 2020 for LAMB)."""


GRADIENT_STEPS = ("sgd", "sgdp")
"""The optimizers whose step is the learning rate times the (momentum-averaged) gradient, so that a stiff
quadratic term makes them diverge: the adaptive ones (Adam, AdamW, LAMB, LARS, AdaGradNorm, AdamP) divide
the step by the gradient's size and the hypergradient SGD lowers its rate when steps oscillate."""


def stable_curvature(name: str, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                     options: Mapping[str, Any] | None = None) -> float | None:
    """The largest curvature ``h`` of a quadratic term ``h / 2 * x^2`` added to the loss (a weight-anchoring
    penalty) that optimizer ``name`` steps stably at learning rate ``lr``:
    :func:`~lifelong.optim.probe.stable_step` over ``lr``, less the curvature that weight decay already adds.
    None for the optimizers outside :data:`GRADIENT_STEPS`, whose step stays bounded on a stiff term."""
    if name not in GRADIENT_STEPS or lr <= 0:
        return None
    nesterov = bool((options or {}).get("nesterov", False)) and momentum > 0
    return stable_step(momentum, nesterov) / lr - weight_decay


def check_optimizer_name(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ConfigError(f"optim.name must be one of {sorted(OPTIMIZERS)}, got {name!r}")


def build_optimizer(name: str, params: Params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                    options: Mapping[str, Any] | None = None, model: torch.nn.Module | None = None,
                    agvm: AGVM | None = None) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params`` (parameters or groups as torch takes them; extra group keys
    such as ``lr_scale`` are kept). ``momentum`` is used by the optimizers that have one (SGD, LARS);
    ``options`` are the optimizer's own settings, e.g. ``{"trust_coefficient": 0.02}`` for LARS. With
    ``model`` (whose parameters ``params`` holds), the parameters it exempts from weight decay get a
    group of their own without it (:func:`~lifelong.optim.decay.split_weight_decay`); with ``agvm`` too
    (``optim.agvm``), each group is split by the model's top-level modules, whose rates AGVM rescales at
    every step (:mod:`lifelong.optim.agvm`)."""
    from lifelong.config import Component, build

    check_optimizer_name(name)
    if agvm is not None and model is None:
        raise ValueError("AGVM groups the parameters by the model's modules: pass the model")
    if model is not None:
        given: list[Any] = list(params)
        params = split_weight_decay(given if given and isinstance(given[0], dict) else [{"params": given}], model)
        if agvm is not None:
            params = agvm.split(params, model)
    factory = OPTIMIZERS[name]
    common: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
    if "momentum" in inspect.signature(factory).parameters:
        common["momentum"] = momentum
    bound = functools.partial(factory, **common)
    optimizer = build("optim.optimizer_params", {name: bound}, Component(name=name, **dict(options or {})), params,
                      skip=("params", *common))
    if agvm is not None:
        agvm.attach(optimizer)
    return optimizer
