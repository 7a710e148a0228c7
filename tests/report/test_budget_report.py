"""The report of a compute-matched comparison: its points (means over seeds of what each strategy spent
and reached at each budget level), their Pareto front, the figures and the HTML table."""

from __future__ import annotations

import base64
import re

import pytest

from lifelong.errors import ConfigError
from lifelong.report.budget import budget_points, on_front, pareto_front
from lifelong.report.html import budget_rows, write_report
from lifelong.report.plots import BUDGET_FIGURES, FIGURES
from lifelong.runner.results import RunRecord


def record(run_id: int, label: str, level: float, seed: int, spent: float, accuracy: float, memory: int,
           unit: str = "flops") -> RunRecord:
    """A finished budgeted run of two experiences, as the protocol stores it."""
    budget = {"unit": unit, "level": level, "absolute": False, "label": label, "reference": "naive",
              "reference_run": 1, "limit": 100.0 * level, "spent": spent, "spent_fraction": spent / (100.0 * level)}
    cost = {"seconds": 0.1, "samples": 10, "steps": 2, "flops": spent / 2, "memory_bytes": memory, "buffer_size": 0}
    return RunRecord(id=run_id, created="", finished="", status="finished", name="s", strategy=label, seed=seed,
                     config={}, environment={}, initial=[0.1, 0.1], matrix=[[accuracy, 0.0], [accuracy, accuracy]],
                     metrics={"final_accuracy": accuracy, "budget": budget}, error=None,
                     experiences=[{"index": i, "accuracies": [accuracy, accuracy], "cost": cost} for i in range(2)])


RECORDS = [record(2, "naive", 1.0, 0, 100.0, 0.20, 0), record(3, "naive", 1.0, 1, 100.0, 0.30, 0),
           record(4, "er", 1.0, 0, 90.0, 0.70, 5000), record(5, "er", 1.0, 1, 110.0, 0.80, 5000),
           record(6, "ewc", 1.0, 0, 250.0, 0.25, 800), record(7, "ewc", 1.0, 1, 250.0, 0.35, 800),
           record(8, "er", 2.0, 0, 200.0, 0.90, 5000)]


def test_pareto_front_is_the_best_accuracy_for_at_most_its_cost() -> None:
    # cheapest first; a point is on the front when nothing as cheap or cheaper reaches as much
    assert pareto_front([1, 2, 3, 4], [0.5, 0.4, 0.7, 0.7]) == [True, False, True, False]
    assert pareto_front([2, 1, 1], [0.9, 0.3, 0.6]) == [True, False, True]  # at equal cost the better one
    assert pareto_front([5, 5], [0.5, 0.5]) == [True, False]  # of two equal points, the first
    assert pareto_front([], []) == []


def test_points_are_means_over_seeds_per_strategy_and_level() -> None:
    points = budget_points(RECORDS)
    assert [(p.label, p.level, p.runs) for p in points] == [("naive", 1.0, (2, 3)), ("er", 1.0, (4, 5)),
                                                            ("ewc", 1.0, (6, 7)), ("er", 2.0, (8,))]
    naive, er, ewc, er2 = points
    assert er.spent == 100.0 and er.accuracy == pytest.approx(0.75) and er.accuracy_std == pytest.approx(0.0707, 1e-3)
    assert er.spent_fraction == pytest.approx((0.9 + 1.1) / 2) and er.memory_bytes == 5000 and er.budget == "1x"
    assert ewc.spent_fraction == 2.5 and er2.accuracy_std is None
    # naive and er spent the same on average, er reached more; ewc spent more for less
    assert on_front(points) == [False, True, False, True]
    unfinished = record(9, "er", 1.0, 2, 1.0, 1.0, 0)
    unfinished.status = "interrupted"
    assert budget_points([*RECORDS, unfinished])[1].runs == (4, 5)


def test_points_of_different_units_have_fronts_of_their_own() -> None:
    mixed = [record(2, "er", 1.0, 0, 100.0, 0.5, 0), record(3, "er", 1.0, 0, 5.0, 0.4, 0, unit="seconds")]
    assert on_front(budget_points(mixed)) == [True, True]


def test_report_of_budgeted_runs_has_the_comparison_and_its_figures(tmp_path) -> None:
    written = write_report(RECORDS, tmp_path / "report.html", tmp_path / "png")
    page = (tmp_path / "report.html").read_text()
    names = re.findall(r'<img id="(\w+)"[^>]* src="data:image/png;base64,([^"]+)"', page)
    assert [name for name, _ in names] == [*FIGURES, *BUDGET_FIGURES]
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for _, data in names)
    assert "Compute-matched comparison" in page and len(written) == 1 + len(FIGURES) + len(BUDGET_FIGURES)
    assert budget_rows(RECORDS)[1] == ["er", "1x", "FLOPs", 2, "100", 1.0, pytest.approx(0.75),
                                       pytest.approx(0.0707, 1e-3), "5000", "yes"]

    only = write_report(RECORDS, None, tmp_path / "only", budget_only=True)
    assert sorted(p.name for p in only) == sorted(f"{name}.png" for name in BUDGET_FIGURES)


def test_budget_only_report_needs_budgeted_runs(tmp_path) -> None:
    plain = record(2, "naive", 1.0, 0, 100.0, 0.2, 0)
    plain.metrics = {"final_accuracy": 0.2}
    with pytest.raises(ConfigError, match="none of these runs was run by the budget protocol"):
        write_report([plain], None, tmp_path / "png", budget_only=True)
    page_figures = write_report([plain], None, tmp_path / "plain")
    assert sorted(p.name for p in page_figures) == sorted(f"{name}.png" for name in FIGURES)
