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
