import re

import torch

from lifelong import OptimConfig, class_incremental, mlp, train
from lifelong.runner.observers import PeriodicEvaluation
from lifelong.strategies import Naive


def test_periodic_evaluation_curve(small_data) -> None:
    stream = class_incremental(small_data, 2)
    curve = PeriodicEvaluation(every_steps=4)
    torch.manual_seed(0)
    result = train(stream, mlp((8,), 6, hidden=(16,)), Naive(), OptimConfig(epochs=2, batch_size=16),
                   observers=[curve])
    steps = [p.step for p in curve.points]
    per_exp = [c.steps for c in result.costs]  # 2 epochs of ceil(~90/16) batches
    assert steps[0] == 0 and steps == sorted(set(steps))
    assert all(s % 4 == 0 for s in steps[1:-1] if s not in (per_exp[0],))
    assert steps[-1] == sum(per_exp)
    # the last point is the end-of-stream evaluation: the last row of the matrix
    assert curve.points[-1].accuracies == result.matrix[-1].tolist()
    # time is monotone and excludes evaluation; samples grow with steps
    assert all(a.seconds <= b.seconds and a.samples <= b.samples for a, b in zip(curve.points, curve.points[1:]))
    assert curve.points[-1].seconds <= sum(c.seconds for c in result.costs) + 1e-6
    # the end of experience 0 is a point: there, experience 1's classes are never predicted
    end_of_first = next(p for p in curve.points if p.step == per_exp[0])
    assert end_of_first.accuracies == result.matrix[0].tolist() and end_of_first.accuracies[1] == 0.0


def test_progress_bar_shows_run_and_experiences_with_eta_on_a_terminal_only(small_data) -> None:
    import io

    from rich.console import Console

    from lifelong.runner.observers import ProgressBar

    stream = class_incremental(small_data, 2)
    shown = {}
    for terminal in (True, False):
        output = io.StringIO()
        bar = ProgressBar(2, console=Console(file=output, force_terminal=terminal, width=120), every=2)
        torch.manual_seed(0)
        train(stream, mlp((8,), 6, hidden=(16,)), Naive(), OptimConfig(epochs=1, batch_size=16), observers=[bar])
        shown[terminal] = output.getvalue()
    assert shown[False] == ""  # a log file or CI gets nothing
    final = shown[True]
    # 6 steps per experience (90 samples in batches of 16), 12 in the run, each bar full at the end
    for label in ("run", "experience 1/2", "experience 2/2"):
        assert label in final
    assert "12/12" in final and final.count("6/6") >= 2 and "eta" in final and "0:00:00" in final
    rates = [int(rate) for rate in re.findall(r"(\d+) samples/s", final)]  # the throughput, shown once trained
    assert rates and max(rates) > 0
