"""What the report shows (issue 18): the FLOPs panel only when FLOPs were counted, tick labels readable at
any scale, counts printed as integers, and every run's configuration in the page."""

from __future__ import annotations

import re

from lifelong.report.html import build_report, comparison_rows, configuration_rows
from lifelong.report.plots import FIGURES, accuracy_vs_compute
from lifelong.runner.results import RunRecord


def record(run_id: int, flops: float, lr: float = 0.03) -> RunRecord:
    """A finished run of two experiences of 1,000 samples and 10 steps each, stored without a curve:
    accuracies [0.5, 0.0] after experience 0 and [0.9, 0.9] after experience 1."""
    cost = {"seconds": 2.0, "samples": 1000, "steps": 10, "memory_increase_mb": 1.0, "buffer_size": 0, "flops": flops}
    return RunRecord(id=run_id, created="2026-01-01", finished="2026-01-01", status="finished", name="stream",
                     strategy="naive", seed=0, config={"optim": {"lr": lr, "epochs": 1}, "run": {"seed": 0}},
                     environment={}, initial=[0.1, 0.1], matrix=[[0.5, 0.0], [0.9, 0.9]], metrics={},
                     error=None, experiences=[{"index": 0, "accuracies": [0.5, 0.0], "cost": cost},
                                              {"index": 1, "accuracies": [0.9, 0.9], "cost": cost}])


def panels(figure) -> list:
    return [axis for axis in figure.axes if axis.get_visible()]


def tick_labels(axis) -> list[str]:
    axis.figure.canvas.draw()
    return [label.get_text() for label in axis.get_xticklabels() if label.get_text()]


def test_the_flops_panel_appears_only_when_flops_were_counted() -> None:
    # a run that did not count FLOPs stores 0.0 per experience: no panel of zeros
    uncounted = accuracy_vs_compute([record(1, 0.0)])
    assert [axis.get_xlabel() for axis in panels(uncounted)] == ["samples seen", "optimizer steps", "training time"]
    counted = accuracy_vs_compute([record(1, 3e12)])
    assert [axis.get_xlabel() for axis in panels(counted)][-1] == "FLOPs"


def test_tick_labels_are_readable_at_any_scale() -> None:
    # 3e12 FLOPs per experience: the axis runs to 6e12; engineering labels say "6 TFLOP" on the tick
    # instead of "6" with a "1e12" offset drawn in a corner
    figure = accuracy_vs_compute([record(1, 3e12)])
    samples, steps, seconds, flops = panels(figure)
    assert "6 TFLOP" in tick_labels(flops) and all(label.endswith("FLOP") for label in tick_labels(flops))
    assert not flops.xaxis.get_offset_text().get_text()
    assert "500 ms" in tick_labels(seconds) and all(label.endswith("s") for label in tick_labels(seconds))
    assert "1k" in tick_labels(samples) and "2k" in tick_labels(samples)  # 0 .. 2,000 samples
    assert all(float(label.replace("\N{MINUS SIGN}", "-")).is_integer() for label in tick_labels(steps))  # 0 .. 20


def test_counts_are_integers_and_configurations_are_in_the_page() -> None:
    # mean accuracy over both experiences: 0.1 at the start, 0.25 after experience 0 (1,000 samples),
    # 0.9 after experience 1 (2,000 samples): a target of 0.8 is first reached at 2,000 samples
    first, second = record(1, 0.0), record(2, 0.0, lr=0.1)
    row = comparison_rows([first], 0.8)[0]
    assert row[-2] == 2000 and isinstance(row[-2], int)
    page = build_report([first, second], dict.fromkeys(FIGURES, b"png"), 0.8)
    assert "<td>2000</td>" in page and "2000.000" not in page
    # the configurations, the field that differs between the runs first
    assert configuration_rows([first, second])[0] == ["optim.lr", 0.03, 0.1]
    table = page[page.index("<h2>Configurations</h2>"):]
    assert re.search(r"<td>optim\.lr</td><td>0\.030</td><td>0\.100</td>", table)
    assert "<td>run.seed</td><td>0</td><td>0</td>" in table
