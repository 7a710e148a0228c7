"""Learning-curve extrapolation (``optim.forecast_stop``): stop an experience once its forecast gain is small.

The training loss of an experience is fitted with a power law ``L(t) = a + b t^-c`` (Hestness et al. 2017,
"Deep Learning Scaling is Predictable, Empirically"; the power-law family of Domhan et al. 2015, "Speeding up
Automatic Hyperparameter Optimization of Deep Neural Networks by Extrapolation of Learning Curves"), ``t`` the
experience's optimizer step. Every ``every`` steps the mean loss of those steps becomes one point of the curve
(at its mean step); from ``MIN_POINTS`` points on, the law fitted to them forecasts the loss at the
experience's planned last step, and when the forecast gain ``L(now) - L(end)`` is below the threshold the
experience ends there: the steps left would buy less than the threshold in training loss. Each experience's
last fit and where it stopped are reported (``metrics.forecast``).

The fit: for each exponent ``c`` of a log-spaced grid, ``a`` and ``b >= 0`` by linear least squares; the
exponent with the smallest squared error wins. A closed form per exponent, so the fit is deterministic and
never fails to converge (a run that resumes refits the same points to the same law).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lifelong.runner.observers import Observer, TrainState

MIN_POINTS = 4
"""Points of the curve (blocks of ``every`` steps) before the first forecast."""
EXPONENTS = np.logspace(-2, 1, 61)
"""The grid of exponents ``c`` the fit tries, 0.01 to 10."""


@dataclass(frozen=True)
class PowerLaw:
    """``L(t) = a + b t^-c``."""

    a: float
    b: float
    c: float

    def __call__(self, t: float) -> float:
        return float(self.a + self.b * t ** -self.c)


def fit_power_law(steps: np.ndarray, losses: np.ndarray) -> PowerLaw:
    """The power law ``a + b t^-c`` (``b >= 0``: a falling curve, or a flat one) closest to ``losses`` at
    ``steps`` in squared error, ``c`` on :data:`EXPONENTS` and ``a``, ``b`` in closed form."""
    t, y = np.asarray(steps, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    best: tuple[float, PowerLaw] | None = None
    for c in EXPONENTS:
        x = t ** -c
        spread = x - x.mean()
        b = max(float(spread @ (y - y.mean()) / (spread @ spread)), 0.0) if spread @ spread > 0 else 0.0
        a = float(y.mean() - b * x.mean())
        error = float(((a + b * x - y) ** 2).sum())
        if best is None or error < best[0]:
            best = (error, PowerLaw(a, b, float(c)))
    assert best is not None
    return best[1]


class ForecastStop(Observer):
    """Ends an experience when the power law of its loss forecasts less than ``threshold`` of gain over
    the rest of its planned steps (module docstring); ``records`` holds each experience's outcome."""

    def __init__(self, threshold: float, every: int) -> None:
        self.threshold, self.every = threshold, every
        self.points: list[tuple[float, float]] = []
        self.block: list[float] = []
        self.records: list[dict[str, Any]] = []

    def on_experience_start(self, state: TrainState) -> None:
        if not self.records or self.records[-1]["experience"] != state.experience:  # not a resumed experience
            self.points, self.block = [], []
            self.records.append({"experience": state.experience, "planned_steps": state.experience_steps,
                                 "stopped_at": None, "forecast_gain": None, "law": None})

    def on_step(self, state: TrainState) -> bool:
        self.block.append(state.loss)
        if len(self.block) < self.every:
            return False
        start = state.experience_step - len(self.block) + 1
        self.points.append(((start + state.experience_step) / 2, float(np.mean(self.block))))
        self.block = []
        if len(self.points) < MIN_POINTS or state.experience_step >= state.experience_steps:
            return False
        steps, losses = np.array(self.points).T
        law = fit_power_law(steps, losses)
        gain = law(state.experience_step) - law(state.experience_steps)
        record = self.records[-1]
        record.update(planned_steps=state.experience_steps, forecast_gain=gain, law=asdict(law))
        if gain < self.threshold:
            record["stopped_at"] = state.experience_step
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"points": [list(p) for p in self.points], "block": list(self.block),
                "records": [dict(r) for r in self.records]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.points = [(float(t), float(loss)) for t, loss in state["points"]]
        self.block, self.records = list(state["block"]), [dict(r) for r in state["records"]]
