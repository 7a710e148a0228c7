"""Default hyperparameter search spaces, one per strategy, for the tune-then-evaluate protocol.

Every strategy is tuned on the learning rate plus its own loss weights, the hyperparameters whose
tuned values Cha and Cho (2024, "Hyperparameters in Continual Learning: a Reality Check") show do not
carry over from one stream to another. Memory sizes (``buffer_size``)
are budgets fixed by the scenario, not hyperparameters, so they are never searched. A strategy
without an entry here is tuned on the learning rate alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna


@dataclass(frozen=True)
class FloatRange:
    """A float in [low, high], log-uniform when ``log``."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of a few values."""

    values: tuple[Any, ...]


Parameter = FloatRange | Choice

#: Searched for every strategy: the runner's base learning rate.
OPTIM_SPACE: dict[str, Parameter] = {"optim.lr": FloatRange(1e-3, 0.3, log=True)}

#: Each strategy's own hyperparameters, keyed by registry name, as ``"strategy.field" -> range``.
SEARCH_SPACES: dict[str, dict[str, Parameter]] = {
    "naive": {},
    "joint": {},
    "cumulative": {},
    "er": {},
    "replay": {"strategy.replay_fraction": FloatRange(0.01, 0.5, log=True)},  # Ibrahim et al. 2024
    "er_ace": {},
    "agem": {},
    "gdumb": {},
    "icarl": {},
    "ewc": {"strategy.lam": FloatRange(1.0, 1e4, log=True)},  # Kirkpatrick et al. 2017
    "lwf": {"strategy.alpha": FloatRange(0.1, 10.0, log=True),  # Li & Hoiem 2016
            "strategy.temperature": FloatRange(1.0, 4.0)},
    "der": {"strategy.alpha": FloatRange(0.05, 1.0, log=True)},  # Buzzega et al. 2020
    "derpp": {"strategy.alpha": FloatRange(0.05, 1.0, log=True), "strategy.beta": FloatRange(0.1, 2.0, log=True)},
    "si": {"strategy.lam": FloatRange(0.01, 100.0, log=True),  # Zenke et al. 2017 (xi: 1e-3 there, 1 in Mammoth)
           "strategy.damping": FloatRange(1e-3, 1.0, log=True)},
    "mas": {"strategy.lam": FloatRange(0.01, 100.0, log=True)},  # Aljundi et al. 2018
    "l2": {"strategy.lam": FloatRange(1e-3, 10.0, log=True)},
    "uer": {"strategy.cosine_scale": FloatRange(4.0, 32.0, log=True)},
    "pcr": {"strategy.temperature": FloatRange(0.03, 0.3, log=True)},  # Lin et al. 2023
    "hpcr": {"strategy.temperature": FloatRange(0.03, 0.3, log=True),  # Lin et al. 2024
             "strategy.logit_distillation": FloatRange(1e-3, 1.0, log=True),
             "strategy.similarity_distillation": FloatRange(0.05, 2.0, log=True)},
    "onpro": {"strategy.prototype_temperature": FloatRange(0.1, 1.0, log=True)},  # Wei et al. 2023
    "psrd": {"strategy.distillation_weight": FloatRange(0.1, 10.0, log=True),  # Asadi et al. 2023
             "strategy.prototype_lr_scale": FloatRange(0.01, 1.0, log=True)},
    "tame": {"strategy.threshold": FloatRange(2.0, 5.0)},  # Zhu et al. 2022
    "kv_bottleneck": {"strategy.top": Choice((1, 2, 4))},  # Träuble et al. 2023: keys read per head
    "view_batch": {"strategy.views": Choice((1, 2, 4))},  # Kang et al. 2025: views per replayed sample
    "ncm": {},
    "fetril": {"strategy.weight_decay": FloatRange(1e-6, 1e-2, log=True)},  # Petit et al. 2023
    "slca": {"strategy.backbone_lr_scale": FloatRange(1e-3, 0.1, log=True)},  # Zhang et al. 2023
    "gpm": {"strategy.threshold": FloatRange(0.9, 0.99)}, "cuber": {"strategy.threshold": FloatRange(0.9, 0.99)},
    "dst": {"strategy.sparsity": FloatRange(0.5, 0.95), "strategy.init": Choice(("erk", "uniform"))},  # Yildirim 2024
    "clr": {}, "bn_only": {},
    "hypernetwork": {"strategy.beta": FloatRange(1e-3, 1.0, log=True)},  # von Oswald et al. 2020
    "l2p": {"strategy.pull_weight": FloatRange(0.01, 1.0, log=True)},  # Wang et al. 2022
    "dualprompt": {"strategy.pull_weight": FloatRange(0.1, 10.0, log=True)},  # Wang et al. 2022
    "coda_prompt": {"strategy.orthogonality": Choice((0.0, 1e-4, 1e-2))},  # Smith et al. 2023
    "lora": {}, "adapter": {}, "ranpac": {}, "lae": {"strategy.ema_decay": Choice((0.9, 0.99, 0.999))},  # Gao 2023
}


def search_space(strategy: str) -> dict[str, Parameter]:
    """The learning rate plus ``strategy``'s own hyperparameters."""
    return {**OPTIM_SPACE, **SEARCH_SPACES.get(strategy, {})}


def suggest(trial: optuna.Trial, space: dict[str, Parameter]) -> dict[str, Any]:
    """One value per parameter of ``space``, drawn by the trial's sampler."""
    values: dict[str, Any] = {}
    for key, parameter in space.items():
        if isinstance(parameter, FloatRange):
            values[key] = trial.suggest_float(key, parameter.low, parameter.high, log=parameter.log)
        else:
            values[key] = trial.suggest_categorical(key, list(parameter.values))
    return values
